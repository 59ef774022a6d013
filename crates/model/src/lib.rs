//! Networks of patchtcga on LibTorch (`tch`): torchvision ResNets, timm ViTs and the foundation-model
//! presets with the reference parameter names, the release's classifier, and import and export of
//! PyTorch checkpoints.

pub mod backbone;
pub mod checkpoint;
pub mod efficientnet;
pub mod export;
pub mod foundation;
pub mod inception;
pub mod naming;
pub mod norm;
mod pickle;
pub mod resnet;
pub mod segmentation;
pub mod source;
pub mod vit;

use std::path::PathBuf;

pub use backbone::{Arch, Backbone, Classifier, Spec};
pub use checkpoint::{load, BackboneWeights, ImportOptions, ImportReport};
pub use export::{reference_names, with_bn_counters, write_pth, write_safetensors, ExportArgs, Exported};
pub use foundation::Foundation;
pub use segmentation::{load_head, HeadImport, SegHead, SegNet};
pub use source::{read_tensors, Checkpoint};

/// Errors of model construction and checkpoint import.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Arch(String),
    #[error("{path}: {cause}")]
    Checkpoint { path: PathBuf, cause: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}
