//! MAE: a ViT encoder over a random share of patches, a light decoder predicting the hidden ones.

use patchtcga_engine::data::images;
use patchtcga_engine::{Config, LearnError, Method, RunContext, StepOutput};
use patchtcga_loader::{Batch, Loader};
use patchtcga_model::vit::sincos_pos_embed;
use patchtcga_model::{Backbone, Spec};
use tch::nn::{self};
use tch::{Kind, Tensor};

use crate::heads::{collapse_std, patchify, MaeDecoder, MaeDecoderSpec};
use crate::loss::masked_mse;
use crate::ssl::Base;

/// MAE: the encoder (a ViT, fixed sine-cosine position embedding) sees a random
/// `1 − mask_ratio` of each image's patches; a light decoder predicts the pixels of the hidden
/// ones from the encoded visible tokens and mask tokens; the loss is the pixel MSE on hidden
/// patches (normalised per patch with `norm_pix_loss`).
pub struct Mae {
    base: Base,
    decoder: MaeDecoder,
    mask_ratio: f64,
    norm_pix: bool,
    patch: i64,
}

impl Mae {
    pub fn new(config: &Config, context: &RunContext) -> Result<Self, LearnError> {
        let base = Base::new(config, context)?;
        let Spec::Vit(vit) = base.backbone.spec() else {
            return Err(LearnError::Config(format!("MAE needs a ViT backbone, not {}", config.model_name)));
        };
        let grid = vit.grid();
        if grid * vit.patch != config.image_size {
            return Err(LearnError::Config(format!(
                "MAE: image_size {} is not a whole number of {} px patches",
                config.image_size, vit.patch
            )));
        }
        if config.pretrained.is_none() {
            // MAE's encoder position embedding is fixed; loaded weights keep theirs.
            let mut pos = base.vs.variables()["pos_embed"].shallow_clone();
            tch::no_grad(|| pos.copy_(&sincos_pos_embed(vit.dim, grid)));
            let _ = pos.set_requires_grad(false);
        }
        let spec = MaeDecoderSpec {
            encoder_dim: vit.dim,
            dim: config.decoder_embed_dim,
            depth: config.decoder_depth,
            heads: config.decoder_num_heads,
            grid,
            patch: vit.patch,
        };
        let decoder = MaeDecoder::new(&base.vs.root(), spec);
        if config.pretrained.is_none() {
            mae_init(&base.vs);
        }
        Ok(Self { base, decoder, mask_ratio: config.mask_ratio, norm_pix: config.norm_pix_loss, patch: vit.patch })
    }
}

/// MAE's `initialize_weights` over encoder and decoder: Linear weights (and the patch embedding,
/// as a matrix) Xavier-uniform with zero biases, class and mask tokens N(0, 0.02); layer norms
/// stay 1 and 0, the patch embedding's bias and the fixed position embeddings as they are.
fn mae_init(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (name, t) in vs.variables() {
            if !t.requires_grad() {
                continue;
            }
            let mut t = t.shallow_clone();
            let size = t.size();
            if name.ends_with("cls_token") || name.ends_with("mask_token") {
                let _ = t.normal_(0.0, 0.02);
            } else if name.ends_with(".weight") && (size.len() == 2 || name == "patch_embed.proj.weight") {
                let (fan_out, fan_in) = (size[0], size[1..].iter().product::<i64>());
                let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
                let _ = t.uniform_(-a, a);
            } else if name.ends_with(".bias") && !name.contains("norm") && !name.starts_with("patch_embed") {
                let _ = t.zero_();
            }
        }
    });
}

/// MAE's per-image random masking of `tokens` (N, L, D): keeps `keep` tokens in a random order;
/// returns them (N, keep, D), the mask (N, L; 1 = hidden) in grid order, and the permutation that
/// restores grid order from the shuffled one (N, L).
pub fn random_masking(tokens: &Tensor, keep: i64) -> (Tensor, Tensor, Tensor) {
    let (n, l, d) = tokens.size3().expect("tokens are (N, L, D)");
    let noise = Tensor::rand([n, l], (Kind::Float, tokens.device()));
    let shuffle = noise.argsort(1, false);
    let restore = shuffle.argsort(1, false);
    let kept = shuffle.narrow(1, 0, keep);
    let visible = tokens.gather(1, &kept.unsqueeze(-1).expand([n, keep, d], true), false);
    let mask = Tensor::ones([n, l], (Kind::Float, tokens.device()));
    let _ = mask.narrow(1, 0, keep).fill_(0.0);
    (visible, mask.gather(1, &restore, false), restore)
}

impl Method for Mae {
    fn var_store(&self) -> &nn::VarStore {
        &self.base.vs
    }
    fn step(&mut self, batch: &Batch) -> Result<StepOutput, LearnError> {
        let x = images(batch, 0, self.base.device);
        let Backbone::Vit(vit) = &self.base.backbone else { unreachable!("checked in Mae::new") };
        let tokens = vit.patch_tokens(&x);
        let (n, l, d) = tokens.size3().expect("tokens");
        let keep = (l as f64 * (1.0 - self.mask_ratio)) as i64;
        let (visible, mask, restore) = random_masking(&tokens, keep);
        let cls = vit.class_token().expand([n, 1, d], true);
        let latent = vit.encode(&Tensor::cat(&[cls, visible], 1), true);
        let pred = self.decoder.forward(&latent, &restore, true);
        let loss = masked_mse(&pred, &patchify(&x, self.patch), &mask, self.norm_pix);
        let tokens = latent.narrow(1, 1, keep).reshape([-1, d]);
        Ok(StepOutput { loss, metrics: vec![("collapse_std".into(), collapse_std(&tokens))] })
    }
    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        self.base.evaluate(loader)
    }
    fn notes(&self) -> &[String] {
        &self.base.notes
    }
}
