//! `patchtcga infer`: a fine-tuned network's map of a whole slide over its thumbnail, or a
//! slide-level run's prediction of a slide and its attention.

use anyhow::Result;
use patchtcga_cli::commands::{bar, say};
use patchtcga_mil::infer::InferArgs;

/// Maps the slide (or, with `--mil`, predicts it) and prints what was written.
pub fn infer(a: InferArgs) -> Result<()> {
    let Some(run) = &a.mil else { return say(a.map(&bar("tiles"))?) };
    let mil = a.open_mil(run)?;
    let (_vs, backbone) = crate::backbone::loaded(mil.weights.load(mil.geometry.size as i64, a.device)?, &a.weights);
    say(mil.infer(&a, &backbone, &bar("patches"))?)
}
