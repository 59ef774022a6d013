//! The backbone of the commands that embed, export or infer, its import reported.

use std::path::Path;

use patchtcga_model::{Backbone, ImportReport};
use tch::nn;

/// The loaded backbone (and the store holding its weights), its import report printed.
pub fn loaded(
    (vs, backbone, report): (nn::VarStore, Backbone, ImportReport),
    weights: &Path,
) -> (nn::VarStore, Backbone) {
    eprintln!("{}: {report}", weights.display());
    (vs, backbone)
}
