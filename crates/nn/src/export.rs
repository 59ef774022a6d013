//! `patchtcga export`: a backbone's weights for PyTorch.

use anyhow::Result;
use patchtcga_cli::commands::say;
use patchtcga_model::ExportArgs;

/// Loads the backbone of `--weights` and writes it with its reference names.
pub fn export(a: ExportArgs) -> Result<()> {
    let (vs, backbone) = crate::backbone::loaded(a.backbone.load(a.image_size, tch::Device::Cpu)?, &a.backbone.weights);
    say(a.write(&vs, &backbone)?)
}
