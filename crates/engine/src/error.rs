//! The error of every learning stage, each naming its file or setting, and the atomic write
//! that names its file.

use std::path::{Path, PathBuf};

/// Errors of training, each naming its file or setting.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Model(#[from] patchtcga_model::ModelError),
    #[error(transparent)]
    Loader(#[from] patchtcga_loader::LoaderError),
    #[error(transparent)]
    Dataset(#[from] patchtcga_dataset::DatasetError),
    #[error(transparent)]
    Slide(#[from] patchtcga_slide::SlideError),
    #[error(transparent)]
    Augment(#[from] patchtcga_augment::AugmentError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Collective(#[from] patchtcga_collective::CollectiveError),
    #[error(transparent)]
    Launch(#[from] patchtcga_launch::LaunchError),
    /// A run stopped on a non-finite loss or gradient.
    #[error("{0}")]
    Diverged(String),
}

impl LearnError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

/// Writes `bytes` to `path` through a hidden temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LearnError> {
    patchtcga_atomic::write(path, bytes).map_err(|e| LearnError::io(path, e))
}
