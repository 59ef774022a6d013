//! Slide-level learning from patch features: bags read from `.h5` files, ABMIL (gated
//! attention) and CLAM-SB, k-fold cross-validation by case, and attention heat maps.

pub mod bags;
pub mod cv;
pub mod heatmap;
pub mod model;

pub use bags::{load, Bag, Bags};
pub use cv::{cross_validate, CrossValidation, FoldResult, MilOptions};
pub use model::{Abmil, AbmilConfig, BagOutput, InstanceLoss, MilArch};

/// Writes a fold's model parameters (safetensors, CLAM's names), atomically.
pub fn save(vs: &tch::nn::VarStore, path: &std::path::Path) -> Result<(), crate::LearnError> {
    let tensors: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    patchtcga_atomic::write_with(
        path,
        |tmp| Ok(tch::Tensor::write_safetensors(&tensors, tmp)?),
        |e| crate::LearnError::io(path, e),
    )
}
