//! `patchtcga export`: a backbone's weights for PyTorch.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use patchtcga_model::{reference_names, with_bn_counters, write_pth};
use tch::Tensor;

use patchtcga_model::BackboneWeights;

/// Options of `patchtcga export`.
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    backbone: BackboneWeights,
    /// ViT input side the exported position embedding is made for.
    #[arg(long, default_value_t = 224)]
    image_size: i64,
    /// Output: `.pth` (torch.save format) or `.safetensors`.
    #[arg(long)]
    out: PathBuf,
}

/// Writes the backbone of `--weights` with its reference names (torchvision / timm; Hugging Face for
/// phikon, DINOv2's for dinov2-*), for PyTorch.
pub fn export(a: ExportArgs) -> Result<()> {
    let (vs, backbone) = crate::backbone::load(&a.backbone, a.image_size, tch::Device::Cpu)?;
    let tensors = reference_names(a.backbone.arch, with_bn_counters(vs.variables().into_iter().collect()));
    match a.out.extension().and_then(|e| e.to_str()) {
        Some("pth") | Some("pt") => write_pth(&a.out, &tensors)?,
        Some("safetensors") => {
            patchtcga_cli::commands::write_file(&a.out, |tmp| Ok(Tensor::write_safetensors(&tensors, tmp)?))?;
        }
        _ => bail!("{}: the output must end in .pth, .pt or .safetensors", a.out.display()),
    }
    println!(
        "{} tensors of {} → {}; in PyTorch, set model.{} = nn.Identity() and load_state_dict",
        tensors.len(),
        a.backbone.arch,
        a.out.display(),
        backbone.spec().head_name()
    );
    Ok(())
}
