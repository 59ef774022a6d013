//! The errors of slide work, each naming the file and the cause.

use std::path::PathBuf;

/// Everything that can go wrong with a slide, each naming the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum SlideError {
    /// The file does not exist.
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    /// OpenSlide does not recognise the format, or the file is truncated/corrupt.
    #[error("{path}: cannot be read as a slide: {cause}")]
    Unreadable { path: PathBuf, cause: String },
    /// The slide carries no usable resolution.
    #[error(
        "{path}: no µm/px in the slide (no openslide.mpp-x/y, no usable tiff.XResolution with \
         tiff.ResolutionUnit); give it with --mpp-override, or in an `mpp` column of the slide list"
    )]
    NoMpp { path: PathBuf },
    /// A region could not be read or resampled.
    #[error("{path}: reading region at level {level} ({x}, {y}) failed: {cause}")]
    Region { path: PathBuf, level: u32, x: i64, y: i64, cause: String },
    /// An annotation file is malformed.
    #[error("{path}: bad annotation file: {cause}")]
    Annotation { path: PathBuf, cause: String },
    /// A label mask does not fit its slide or holds values outside its scheme.
    #[error("{path}: bad label mask: {cause}")]
    Mask { path: PathBuf, cause: String },
    /// An output file could not be written.
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// A parameter is out of range.
    #[error("invalid parameter: {0}")]
    Parameter(String),
}
