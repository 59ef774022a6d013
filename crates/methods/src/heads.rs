//! Heads the self-supervised methods put on a backbone, named as their PyTorch modules are:
//! MLPs as an `nn.Sequential` (`<name>.0` Linear, `<name>.1` BatchNorm1d, `<name>.3` Linear, …),
//! DINO's head (`mlp.*`, `last_layer.weight_g`, `last_layer.weight_v`) and MAE's decoder
//! (`decoder_embed`, `mask_token`, `decoder_pos_embed`, `decoder_blocks.N`, `decoder_norm`,
//! `decoder_pred`).

use patchtcga_model::norm::batch_norm;
use patchtcga_model::vit::{layer_norm, linear, sincos_pos_embed, Block};
use tch::nn::{self, Init, ModuleT};
use tch::{Kind, Tensor};

use crate::loss::l2_normalize;

/// An MLP: Linear → [BatchNorm1d] → ReLU (or GELU), repeated, then a last Linear (→ [BatchNorm1d
/// without affine]). SimCLR's projector (BN, last BN), BYOL's projector and predictor (BN), MoCo
/// v2's head (no BN), DINO's MLP (GELU).
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<(nn::Linear, Option<nn::BatchNorm>)>,
    gelu: bool,
}

/// Shape of an [`Mlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct MlpSpec {
    /// Input, hidden…, output widths.
    pub dims: Vec<i64>,
    /// Batch norm after each hidden Linear.
    pub batch_norm: bool,
    /// Batch norm (no affine) after the last Linear.
    pub last_batch_norm: bool,
    /// GELU instead of ReLU between layers.
    pub gelu: bool,
}

impl Mlp {
    pub fn new(p: &nn::Path, spec: &MlpSpec) -> Self {
        let n = spec.dims.len() - 1;
        let mut index = 0;
        let mut layers = Vec::with_capacity(n);
        for (i, w) in spec.dims.windows(2).enumerate() {
            let last = i + 1 == n;
            let linear = nn::linear(p / index, w[0], w[1], Default::default());
            index += 1;
            let bn = if (!last && spec.batch_norm) || (last && spec.last_batch_norm) {
                let affine = !last;
                let cfg = nn::BatchNormConfig { affine, ..Default::default() };
                let b = nn::batch_norm1d(p / index, w[1], cfg);
                index += 1;
                Some(b)
            } else {
                None
            };
            if !last {
                index += 1; // the ReLU's slot
            }
            layers.push((linear, bn));
        }
        Self { layers, gelu: spec.gelu }
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let n = self.layers.len();
        let mut y = xs.shallow_clone();
        for (i, (linear, bn)) in self.layers.iter().enumerate() {
            y = y.apply(linear);
            if let Some(bn) = bn {
                y = batch_norm(&y, bn, train);
            }
            if i + 1 < n {
                y = if self.gelu { y.gelu("none") } else { y.relu() };
            }
        }
        y
    }
}

/// DINO's head: a GELU MLP to a bottleneck, l2 normalisation, then a weight-normalised Linear
/// without bias whose norms (`weight_g`) stay fixed at 1 (upstream `norm_last_layer=True`);
/// initialised as upstream (MLP weights N(0, 0.02²), zero biases; the last layer as nn.Linear).
#[derive(Debug)]
pub struct DinoHead {
    mlp: Mlp,
    weight_v: Tensor,
    weight_g: Tensor,
}

impl DinoHead {
    /// `in_dim` → `hidden` → `hidden` → `bottleneck` → `out_dim`, under `p`.
    pub fn new(p: &nn::Path, in_dim: i64, hidden: i64, bottleneck: i64, out_dim: i64) -> Self {
        let spec = MlpSpec {
            dims: vec![in_dim, hidden, hidden, bottleneck],
            batch_norm: false,
            last_batch_norm: false,
            gelu: true,
        };
        let mlp = Mlp::new(&(p / "mlp"), &spec);
        // DINO's init: trunc_normal(std 0.02) cut at ±2 (absolute, so in effect N(0, 0.02²)), zero biases.
        tch::no_grad(|| {
            for (linear, _) in &mlp.layers {
                let _ = linear.ws.shallow_clone().normal_(0.0, 0.02);
                if let Some(b) = &linear.bs {
                    let _ = b.shallow_clone().zero_();
                }
            }
        });
        let last = p / "last_layer";
        let bound = 1.0 / (bottleneck as f64).sqrt();
        let weight_v = last.var("weight_v", &[out_dim, bottleneck], Init::Uniform { lo: -bound, up: bound });
        let weight_g = last.ones_no_train("weight_g", &[out_dim, 1]);
        Self { mlp, weight_v, weight_g }
    }

    /// The last layer's direction parameters, which DINO keeps still in the first epochs.
    pub fn last_layer(&self) -> &Tensor {
        &self.weight_v
    }
}

impl ModuleT for DinoHead {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = l2_normalize(&self.mlp.forward_t(xs, train));
        x.matmul(&Tensor::internal_weight_norm(&self.weight_v, &self.weight_g, 0).tr())
    }
}

/// MAE's decoder: visible-token latents and mask tokens, put back in grid order, through
/// transformer blocks to pixel predictions per patch.
pub struct MaeDecoder {
    embed: nn::Linear,
    mask_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    pred: nn::Linear,
}

/// Shape of an [`MaeDecoder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaeDecoderSpec {
    /// Encoder width.
    pub encoder_dim: i64,
    pub dim: i64,
    pub depth: i64,
    pub heads: i64,
    /// Patches per side.
    pub grid: i64,
    /// Pixels per side of a patch.
    pub patch: i64,
}

impl MaeDecoder {
    /// The decoder's layers at the root of `p` with MAE's names; its position embedding is the
    /// fixed sine-cosine one.
    pub fn new(p: &nn::Path, s: MaeDecoderSpec) -> Self {
        let embed = linear(p / "decoder_embed", s.encoder_dim, s.dim);
        let mask_token = p.var("mask_token", &[1, 1, s.dim], Init::Randn { mean: 0.0, stdev: 0.02 });
        let mut pos_embed = p.zeros_no_train("decoder_pos_embed", &[1, 1 + s.grid * s.grid, s.dim]);
        tch::no_grad(|| pos_embed.copy_(&sincos_pos_embed(s.dim, s.grid)));
        let blocks = (0..s.depth).map(|i| Block::new(&(p / "decoder_blocks" / i), s.dim, s.heads, 4.0, 0.0)).collect();
        let norm = layer_norm(p / "decoder_norm", s.dim);
        let pred = linear(p / "decoder_pred", s.dim, s.patch * s.patch * 3);
        Self { embed, mask_token, pos_embed, blocks, norm, pred }
    }

    /// Encoder output (N, 1+visible, D) with the class token first, and `restore` (N, L) (the
    /// grid position → shuffled position permutation) → predictions (N, L, patch²·3).
    pub fn forward(&self, latent: &Tensor, restore: &Tensor, train: bool) -> Tensor {
        let x = latent.apply(&self.embed);
        let (n, t, d) = x.size3().expect("tokens");
        let l = restore.size()[1];
        let masked = self.mask_token.to_kind(x.kind()).expand([n, l + 1 - t, d], true);
        let shuffled = Tensor::cat(&[x.narrow(1, 1, t - 1), masked], 1);
        let grid = shuffled.gather(1, &restore.unsqueeze(-1).expand([n, l, d], true), false);
        let mut y = Tensor::cat(&[x.narrow(1, 0, 1), grid], 1) + &self.pos_embed;
        for b in &self.blocks {
            y = b.forward(&y, train);
        }
        y.apply(&self.norm).apply(&self.pred).narrow(1, 1, l)
    }
}

/// Images (N, 3, H, W) → patches (N, L, patch²·3), pixels of a patch in (row, column, channel)
/// order (MAE's `patchify`).
pub fn patchify(images: &Tensor, patch: i64) -> Tensor {
    let (n, c, h, w) = images.size4().expect("images are (N, 3, H, W)");
    let (gh, gw) = (h / patch, w / patch);
    images
        .reshape([n, c, gh, patch, gw, patch])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([n, gh * gw, patch * patch * c])
        .to_kind(Kind::Float)
}

/// Mean over dimensions of the standard deviation of l2-normalised embeddings across the
/// batch: about 1/√D when they spread over the sphere, 0 when they collapse to one point.
pub fn collapse_std(z: &Tensor) -> f64 {
    let n = crate::loss::l2_normalize(&z.detach().to_kind(tch::Kind::Float));
    n.std_dim([0].as_slice(), true, false).mean(tch::Kind::Float).double_value(&[])
}
