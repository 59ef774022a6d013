//! Atomic file writes (`patchtcga_atomic`) with this crate's errors.

use std::path::Path;

use crate::{DatasetError, Result};

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    patchtcga_atomic::write(path, bytes).map_err(DatasetError::io(path))
}
