//! The errors of dataset work, each naming the file and the cause.

use std::path::PathBuf;

/// Dataset errors, each naming the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A file's content is not what it should be.
    #[error("{path}: {cause}")]
    Invalid { path: PathBuf, cause: String },
    /// A slide failed.
    #[error(transparent)]
    Slide(#[from] patchtcga_slide::SlideError),
    /// A parameter or combination of parameters is unusable.
    #[error("{0}")]
    Usage(String),
}

impl DatasetError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// A content error on `path`.
    pub fn invalid(path: impl Into<PathBuf>, cause: impl Into<String>) -> Self {
        Self::Invalid { path: path.into(), cause: cause.into() }
    }
}
