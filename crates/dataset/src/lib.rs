//! The PatchTCGA release's datasets on disk: builders that tile slides into its exact layouts
//! (PTCGA200, PCam200, segPANDA200), the index that reads them back, manifests and checksums,
//! slide-level splits (JSON and the original pickle), download helpers and statistics.

mod atomic;
mod build;
mod build_args;
mod error;
mod kind;
mod layout;
mod manifest;
pub mod names;
mod slides_csv;

pub mod archive;
pub mod slide_tasks;
pub mod split;
pub mod stats;

pub use build::{build, BuildOptions, BuildReport, ImageFormat, Task};
pub use build_args::{BuildArgs, BuildDataset, FormatName};
pub use error::DatasetError;
pub use kind::{DatasetKind, Split, IMAGE_EXTENSIONS};
pub use layout::{
    images_under, organ_class, Entry, Index, LayoutCheck, Problem, UnknownFolders, VerifyLayoutArgs, ORGANS,
    POSITION_MAP_DIR,
};
pub use manifest::{md5_hex, read_manifest, ManifestRow, SlideQc};
pub use patchtcga_launch::Share;
pub use slides_csv::{read_slides_csv, SlideRow};

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, DatasetError>;
