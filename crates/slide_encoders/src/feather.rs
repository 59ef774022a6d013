//! FEATHER (MahmoodLab's `abmil.base` slide encoders, built by MIL-Lab): gated-attention MIL whose
//! pooled embedding is the slide's — `patch_embed` (Linear + ReLU), gated attention
//! (`global_attn.attention_a` tanh × `attention_b` sigmoid → `attention_c`), softmax over the
//! patches, the attention-weighted mean of the embedded patches. The checkpoint's `classifier` is
//! not part of the encoder.

use std::path::Path;

use patchtcga_model::{Checkpoint, ImportOptions, ImportReport};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use patchtcga_engine::LearnError;

/// FEATHER's widths, read from its weight file's shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatherWidths {
    /// Patch feature width (768 for CONCH v1.5, 1536 for UNI2-h).
    pub input: i64,
    /// Embedded patch and slide width (512 in the published models).
    pub embed: i64,
    /// Attention hidden width (384 in the published models).
    pub attention: i64,
}

/// The network, its weights on a device.
pub struct Feather {
    vs: nn::VarStore,
    patch_embed: nn::Linear,
    attention_a: nn::Linear,
    attention_b: nn::Linear,
    attention_c: nn::Linear,
    widths: FeatherWidths,
}

impl Feather {
    /// FEATHER with the weights of `path` (MIL-Lab names, under any wrapper prefix such as the
    /// Hugging Face model's `model.`), its widths taken from the file.
    pub fn load(path: &Path, device: Device) -> Result<(Self, ImportReport), LearnError> {
        let widths = widths_of(path)?;
        let vs = nn::VarStore::new(device);
        let p = vs.root();
        let linear = |p: nn::Path, i, o| nn::linear(p, i, o, Default::default());
        let net = Self {
            patch_embed: linear(&p / "patch_embed" / "0", widths.input, widths.embed),
            attention_a: linear(&p / "global_attn" / "attention_a" / "0", widths.embed, widths.attention),
            attention_b: linear(&p / "global_attn" / "attention_b" / "0", widths.embed, widths.attention),
            attention_c: linear(&p / "global_attn" / "attention_c", widths.attention, 1),
            widths,
            vs,
        };
        let report = patchtcga_model::load(&net.vs, path, "classifier", &ImportOptions::default())?;
        Ok((net, report))
    }

    /// The widths the weights have.
    pub fn widths(&self) -> FeatherWidths {
        self.widths
    }

    /// The slide embedding (`embed`) of a slide's patch features (N, input), and the attention
    /// logits (N) before the softmax.
    pub fn forward(&self, features: &Tensor) -> (Tensor, Tensor) {
        let x = features.to_device(self.vs.device()).to_kind(Kind::Float);
        let h = self.patch_embed.forward(&x).relu();
        let gated = self.attention_a.forward(&h).tanh() * self.attention_b.forward(&h).sigmoid();
        let logits = self.attention_c.forward(&gated).squeeze_dim(-1);
        let weights = logits.softmax(0, Kind::Float);
        (weights.matmul(&h), logits)
    }
}

/// FEATHER's widths from the shapes of `patch_embed.0.weight` and `attention_a.0.weight`.
fn widths_of(path: &Path) -> Result<FeatherWidths, LearnError> {
    let ckpt = Checkpoint::open(path)?;
    let shape = |suffix: &str| {
        ckpt.tensors().iter().find(|t| t.name.ends_with(suffix) && t.shape.len() == 2).map(|t| [t.shape[0], t.shape[1]])
    };
    match (shape("patch_embed.0.weight"), shape("global_attn.attention_a.0.weight")) {
        (Some([embed, input]), Some([attention, _])) => Ok(FeatherWidths { input, embed, attention }),
        _ => Err(LearnError::Config(format!(
            "{}: not FEATHER weights (no `patch_embed.0.weight` and `global_attn.attention_a.0.weight`; the \
             published files are model.safetensors of MahmoodLab/abmil.base.conch_v15.pc108-24k or \
             abmil.base.uni_v2.pc108-24k)",
            path.display()
        ))),
    }
}
