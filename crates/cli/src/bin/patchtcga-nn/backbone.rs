//! The backbone of the commands that embed, export or infer, loaded with its import reported.

use anyhow::Result;
use patchtcga_model::{Backbone, BackboneWeights};
use tch::nn;

/// The backbone for `image_size` inputs on `device`, its weights loaded and the import reported.
pub fn load(weights: &BackboneWeights, image_size: i64, device: tch::Device) -> Result<(nn::VarStore, Backbone)> {
    let (vs, backbone, report) = weights.load(image_size, device)?;
    eprintln!("{}: {report}", weights.weights.display());
    Ok((vs, backbone))
}
