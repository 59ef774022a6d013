//! Atomic file writes, the one way patchtcga writes a file others may read: the content goes to a
//! hidden temporary file beside the target (`.<name>.<pid>.partial.<ext>`: no loader lists it, and
//! writers that pick a format by extension still see the target's), which is then renamed over it.
//! Readers see the old file or the whole new one; a crash leaves at most a hidden `.partial`.

use std::io;
use std::path::{Path, PathBuf};

/// The temporary path a write of `path` goes through.
fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.partial{ext}", std::process::id()))
}

/// Has `write` make the file at a temporary path beside `path` (creating the folder), then
/// renames it over `path`; `io` turns a failure of the folder or the rename into the caller's
/// error. On failure the temporary file is removed and `path` is untouched.
pub fn write_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
    io: impl FnOnce(io::Error) -> E,
) -> Result<(), E> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Err(e) = dir.map_or(Ok(()), std::fs::create_dir_all) {
        return Err(io(e));
    }
    let tmp = temporary(path);
    let done = match write(&tmp) {
        Ok(()) => std::fs::rename(&tmp, path).map_err(io),
        Err(e) => Err(e),
    };
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |tmp| std::fs::write(tmp, bytes), |e| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.json");
        write(&p, b"old").unwrap();
        let e = write_with(
            &p,
            |tmp| {
                std::fs::write(tmp, b"half")?;
                Err(io::Error::other("disk full"))
            },
            |e| e,
        );
        assert_eq!(e.unwrap_err().to_string(), "disk full");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1, "the temporary is gone");
        let tmp = temporary(&dir.path().join("heatmap.png"));
        assert!(
            tmp.to_string_lossy().ends_with(".partial.png")
                && tmp.file_name().unwrap().to_string_lossy().starts_with(".heatmap.png.")
        );
    }
}
