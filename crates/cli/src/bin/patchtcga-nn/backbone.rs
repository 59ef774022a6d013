//! `patchtcga backbone`: the backbone options of the commands that embed, export or probe.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use patchtcga_model::{load, Arch, Backbone, ImportOptions};
use tch::nn::{self};

/// A backbone and the weights to put in it (`embed`, `export`).
#[derive(Args)]
pub struct BackboneArgs {
    /// Backbone: resnet18, resnet50, vit-s16, vit-b16, vit-b32, vit-l16, or a foundation-model
    /// preset: uni, uni2-h, virchow, virchow2, h-optimus-0, gigapath, phikon, dinov2-s14, dinov2-b14,
    /// dinov2-l14, dinov2-g14.
    #[arg(long)]
    pub arch: Arch,
    /// Weights: a .pth/.pt/.bin (torch.save) or .safetensors file in any upstream wrapper and in
    /// timm's, DINOv2's or Hugging Face's names, a sharded `*.safetensors.index.json`, a Hugging Face
    /// snapshot folder, or a run's model.safetensors.
    #[arg(long)]
    pub weights: PathBuf,
    /// Take the tensors under this prefix (default: found automatically).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Load what matches and warn about the rest (PyTorch's strict=False).
    #[arg(long)]
    pub allow_partial: bool,
}

impl BackboneArgs {
    /// The backbone for `image_size` inputs on `device`, its weights loaded and the import reported.
    pub fn load(&self, image_size: i64, device: tch::Device) -> Result<(nn::VarStore, Backbone)> {
        let spec = self.arch.spec(image_size);
        let vs = nn::VarStore::new(device);
        let backbone = Backbone::new(&vs.root(), spec);
        let opts = ImportOptions { prefix: self.prefix.clone(), allow_partial: self.allow_partial, with_head: false };
        let r = load(&vs, &self.weights, spec.head_name(), &opts).map_err(|e| match self.arch {
            Arch::Foundation(f) => anyhow::anyhow!("{e}\n{f} takes the weights published at {}", f.source()),
            _ => e.into(),
        })?;
        eprintln!(
            "{}: {} tensors loaded (prefix {:?}){}{}",
            self.weights.display(),
            r.loaded,
            r.prefix,
            if r.skipped_heads.is_empty() {
                String::new()
            } else {
                format!(", {} head tensors left out", r.skipped_heads.len())
            },
            if r.outside_prefix == 0 {
                String::new()
            } else {
                format!(", {} tensors outside the prefix ignored", r.outside_prefix)
            }
        );
        for w in
            r.warnings.iter().map(|w| format!("warning: {w}")).chain(r.resized.iter().map(|w| format!("resized {w}")))
        {
            eprintln!("{w}");
        }
        Ok((vs, backbone))
    }
}
