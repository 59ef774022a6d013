//! Image operations for pathology patches, defined as torchvision defines them on PIL images,
//! so training recipes carry over: geometric operations (applied identically to label masks,
//! which are never interpolated), colour operations, blur, stain normalisation (Reinhard,
//! Macenko), and normalisation to `f32` CHW.
//!
//! Each operation is a plain function of an image and its parameters. [`ViewSpec`] draws the
//! random parameters (as torchvision's random transforms do) and composes operations into a
//! view; a [`Recipe`] is the list of views a training method makes from each patch.

mod colour;
mod geometric;
mod normalizer;
mod recipe;
mod stain;
mod vahadane;

pub use colour::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, gaussian_blur, hed_jitter, normalize, solarize,
    to_grayscale, IMAGENET_MEAN, IMAGENET_STD, PTCGA200_MEAN, PTCGA200_STD,
};
pub use geometric::{center_crop, crop, hflip, resize, resize_mask, resized_crop, rot90, vflip};
pub use normalizer::{StainBench, StainFlags, StainMethod, StainNormalizer, StainTiming};
pub use recipe::{random_resized_crop_params, Cut, Jitter, Preset, Recipe, StainJitter, View, ViewSpec};
pub use stain::{Macenko, Normalized, Reinhard, MIN_STAINED};
pub use vahadane::Vahadane;

/// Errors of the operations: parameters that make no image.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AugmentError {
    /// A crop or size outside what the image allows.
    #[error("{0}")]
    Geometry(String),
    /// A parameter out of its range.
    #[error("{0}")]
    Parameter(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, AugmentError>;
