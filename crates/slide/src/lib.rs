//! Whole-slide image access for patch datasets.
//!
//! A [`Slide`] opens anything OpenSlide reads (tiled TIFF and Aperio SVS through patchtcga's
//! own reader, `patchtcga-tiff`, unless told otherwise), knows its µm/px, and reads patches at a target
//! resolution ([`PatchGeometry`]) with antialiased resampling. Around it: tissue detection on a
//! low-resolution view ([`TissueMask`]), candidate patch positions ([`Sampler`]), patch quality
//! checks ([`QualityCheck`]), Camelyon/ASAP polygon annotations ([`Annotations`]) and PANDA label
//! masks ([`LabelScheme`]).

mod annotation;
mod error;
mod geometry;
mod labelmask;
mod quality;
mod sampling;
mod tissue;
mod wsi;

pub use annotation::{AnnotationGroups, Annotations};
pub use error::SlideError;
pub use geometry::{PatchGeometry, DEFAULT_MPP, DEFAULT_PATCH_SIZE};
pub use labelmask::{LabelScheme, SEGPANDA_CLASSES};
pub use quality::{background_fraction, sharpness, QualityCheck, QualityVerdict};
pub use sampling::{Candidate, Sampler, Sampling, TissueGrid};
pub use tissue::{TissueMask, TissueParams};
pub use wsi::{Mpp, MppSource, Reader, ServedBy, Slide, SlideOptions, DEFAULT_TILE_CACHE_MB};

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, SlideError>;
