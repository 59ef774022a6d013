//! Atomic file writes: a hidden temporary file beside the target, renamed over it.

use std::io::Write;
use std::path::Path;

use crate::{DatasetError, Result};

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one: the
/// bytes go to a hidden temporary file beside it (no image extension, so loaders skip it),
/// which is then renamed over `path`.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(DatasetError::io(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.flush()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DatasetError::Io { path: path.to_path_buf(), source: e }
    })
}
