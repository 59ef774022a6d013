//! Download helpers: checking files against an MD5 list, and joining the release's split
//! archive (`PTCGA200_p_*` → `PTCGA200.tar.gz`) and unpacking it safely.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use indicatif::ProgressBar;
use md5::{Digest, Md5};
use rayon::prelude::*;

use crate::{DatasetError, Result};

/// One line of an MD5 list: expected hash and the file's path as written in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// Lower-case hex MD5.
    pub md5: String,
    /// Path as listed (relative to the list's folder unless absolute).
    pub file: String,
}

/// Reads an MD5 list in `md5sum`'s format (`<hash>  <path>` or `<hash> *<path>`); blank lines
/// and `#` comments are skipped.
pub fn read_md5_list(path: &Path) -> Result<Vec<Checksum>> {
    let text = std::fs::read_to_string(path).map_err(DatasetError::io(path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (hash, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let file = rest.trim_start().trim_start_matches('*');
        if hash.len() != 32 || !hash.chars().all(|c| c.is_ascii_hexdigit()) || file.is_empty() {
            return Err(DatasetError::invalid(path, format!("line {}: not `<md5>  <file>`: {line:?}", i + 1)));
        }
        out.push(Checksum { md5: hash.to_ascii_lowercase(), file: file.to_string() });
    }
    Ok(out)
}

/// MD5 of a file, streamed; `progress` advances by the bytes read.
pub fn md5_file(path: &Path, progress: &ProgressBar) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(DatasetError::io(path))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(DatasetError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        progress.inc(n as u64);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyReport {
    /// Files whose hash matched.
    pub ok: usize,
    /// Files whose hash differs.
    pub mismatched: Vec<PathBuf>,
    /// Listed files that are absent.
    pub missing: Vec<PathBuf>,
}

impl VerifyReport {
    /// Whether every listed file is present and intact.
    pub fn passed(&self) -> bool {
        self.mismatched.is_empty() && self.missing.is_empty()
    }

    /// A line per file that failed: `MISMATCH <path>` or `MISSING  <path>`.
    pub fn problems(&self) -> String {
        let mismatched = self.mismatched.iter().map(|p| format!("MISMATCH {}\n", p.display()));
        mismatched.chain(self.missing.iter().map(|p| format!("MISSING  {}\n", p.display()))).collect()
    }
}

/// `120 ok, 0 mismatched, 1 missing`.
impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} ok, {} mismatched, {} missing", self.ok, self.mismatched.len(), self.missing.len())
    }
}

/// Options of `patchtcga verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The MD5 list, e.g. MD5SUMS.
    pub list: PathBuf,
    /// Folder the listed paths are relative to (default: the list's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// Options of `patchtcga extract`.
#[derive(clap::Args)]
pub struct ExtractArgs {
    /// Path prefix of the parts, e.g. downloads/PTCGA200_p_ (every file starting with it, in name order).
    pub prefix: PathBuf,
    /// Folder to unpack into.
    #[arg(long)]
    pub out: PathBuf,
    /// MD5 list of the parts and/or the joined archive; checked before unpacking.
    #[arg(long)]
    pub md5: Option<PathBuf>,
    /// Name of the joined archive in the MD5 list.
    #[arg(long, default_value = "PTCGA200.tar.gz")]
    pub joined_name: String,
}

impl ExtractArgs {
    /// Joins the parts in name order, checks their MD5s first if given, and unpacks; `parts`
    /// hears of the parts found before the work starts.
    pub fn run(&self, progress: &ProgressBar, parts: impl FnOnce(&[PathBuf])) -> Result<ExtractReport> {
        let found = find_parts(&self.prefix)?;
        parts(&found);
        let md5 = self.md5.as_deref().map(|m| (m, self.joined_name.as_str()));
        extract(&found, &self.out, md5, progress)
    }
}

/// Checks every file of an MD5 list; paths are relative to `root` (default: the list's folder).
pub fn verify(list: &Path, root: Option<&Path>, progress: &ProgressBar) -> Result<VerifyReport> {
    let entries = read_md5_list(list)?;
    let root = root.map(Path::to_path_buf).unwrap_or_else(|| list.parent().unwrap_or(Path::new(".")).to_path_buf());
    let paths: Vec<PathBuf> = entries.iter().map(|c| root.join(&c.file)).collect();
    progress.set_length(paths.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum());
    let results: Vec<Result<Option<bool>>> = entries
        .par_iter()
        .zip(&paths)
        .map(|(c, p)| {
            if !p.is_file() {
                return Ok(None);
            }
            Ok(Some(md5_file(p, progress)? == c.md5))
        })
        .collect();
    let mut report = VerifyReport::default();
    for (r, p) in results.into_iter().zip(paths) {
        match r? {
            Some(true) => report.ok += 1,
            Some(false) => report.mismatched.push(p),
            None => report.missing.push(p),
        }
    }
    Ok(report)
}

/// The outcome of [`extract`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtractReport {
    /// Regular files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Reads the parts one after the other, as `cat` joins them; `progress` counts bytes read.
struct Joined<'a> {
    parts: std::slice::Iter<'a, PathBuf>,
    current: Option<std::fs::File>,
    progress: &'a ProgressBar,
}

impl Read for Joined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.current.is_none() {
                match self.parts.next() {
                    Some(p) => {
                        let f = std::fs::File::open(p)
                            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                        self.current = Some(f);
                    }
                    None => return Ok(0),
                }
            }
            let f = self.current.as_mut().expect("opened above");
            let n = f.read(buf)?;
            if n > 0 {
                self.progress.inc(n as u64);
                return Ok(n);
            }
            self.current = None;
        }
    }
}

/// The parts of a split archive matching `prefix*` in its folder, in `cat`'s (byte) order.
pub fn find_parts(prefix: &Path) -> Result<Vec<PathBuf>> {
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = prefix.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(DatasetError::io(&dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&stem) && e.path().is_file())
        .map(|e| e.path())
        .collect();
    parts.sort();
    if parts.is_empty() {
        return Err(DatasetError::invalid(prefix, "no files start with this prefix"));
    }
    Ok(parts)
}

/// Joins `parts` in order and unpacks the gzip-compressed tar stream into `out`.
///
/// With `checksums`, each part listed there (by file name), and the joined archive when the
/// list names it (`joined_name`), is checked first, and a mismatch stops before anything is
/// written. Entries with absolute paths or `..`, links pointing outside `out`, and special
/// files are refused; each file is written under a temporary name and renamed when complete.
pub fn extract(
    parts: &[PathBuf],
    out: &Path,
    checksums: Option<(&Path, &str)>,
    progress: &ProgressBar,
) -> Result<ExtractReport> {
    let total: u64 =
        parts.iter().map(|p| p.metadata().map(|m| m.len()).map_err(DatasetError::io(p))).sum::<Result<u64>>()?;
    if let Some((list, joined_name)) = checksums {
        check_parts(parts, list, joined_name, total, progress)?;
    }

    progress.set_length(total);
    progress.set_position(0);
    std::fs::create_dir_all(out).map_err(DatasetError::io(out))?;
    let joined = Joined { parts: parts.iter(), current: None, progress };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(joined));
    let archive_name = &parts[0];
    let bad = |what: String| DatasetError::invalid(archive_name, what);
    let mut report = ExtractReport::default();
    for entry in archive.entries().map_err(|e| bad(format!("not a tar.gz archive: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        let name = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let rel = safe_relative(&name)
            .ok_or_else(|| bad(format!("refusing entry {}: absolute or `..` path", name.display())))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = out.join(&rel);
        no_symlink_on_the_way(out, &rel).map_err(|why| bad(format!("refusing entry {}: {why}", name.display())))?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => std::fs::create_dir_all(&dest).map_err(DatasetError::io(&dest))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut n = 0;
                let copy = |tmp: &Path| {
                    let mut f = std::fs::File::create(tmp).map_err(DatasetError::io(tmp))?;
                    n = std::io::copy(&mut entry, &mut f)
                        .map_err(|e| bad(format!("reading {}: {e}", name.display())))?;
                    f.flush().map_err(DatasetError::io(tmp))
                };
                patchtcga_atomic::write_with(&dest, copy, DatasetError::io(&dest))?;
                report.files += 1;
                report.bytes += n;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(e.to_string()))?
                    .ok_or_else(|| bad(format!("{}: link without a target", name.display())))?;
                make_link(out, &rel, &target, kind == tar::EntryType::Symlink).map_err(|e| match e {
                    LinkError::Outside => bad(format!(
                        "refusing link {} -> {}: it points outside the target folder",
                        name.display(),
                        target.display()
                    )),
                    LinkError::Io(e) => e,
                })?;
            }
            other => return Err(bad(format!("refusing entry {}: unsupported type {other:?}", name.display()))),
        }
    }
    Ok(report)
}

/// Checks each part that `list` names (by file name), and the joined parts when it names
/// `joined_name`; a mismatch, or a list naming none of them, is an error.
fn check_parts(parts: &[PathBuf], list: &Path, joined_name: &str, total: u64, progress: &ProgressBar) -> Result<()> {
    let sums: HashMap<String, String> = read_md5_list(list)?
        .into_iter()
        .map(|c| (Path::new(&c.file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(c.file), c.md5))
        .collect();
    let mut checked = 0;
    for p in parts {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(want) = sums.get(&name) {
            progress.set_length(p.metadata().map(|m| m.len()).unwrap_or(0));
            progress.set_position(0);
            let got = md5_file(p, progress)?;
            if got != *want {
                return Err(DatasetError::invalid(
                    p,
                    format!("MD5 {got} but {} lists {want}: download it again", list.display()),
                ));
            }
            checked += 1;
        }
    }
    if let Some(want) = sums.get(joined_name) {
        progress.set_length(total);
        progress.set_position(0);
        let mut h = Md5::new();
        let mut r = Joined { parts: parts.iter(), current: None, progress };
        std::io::copy(&mut r, &mut HashWriter(&mut h)).map_err(DatasetError::io(&parts[0]))?;
        let got = format!("{:x}", h.finalize());
        if got != *want {
            return Err(DatasetError::invalid(
                &parts[0],
                format!("the joined parts have MD5 {got} but {} lists {want} for {joined_name}", list.display()),
            ));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(DatasetError::invalid(list, format!("lists none of the parts nor {joined_name}")));
    }
    Ok(())
}

/// Why a link entry is refused.
enum LinkError {
    /// It points outside the target folder.
    Outside,
    Io(DatasetError),
}

/// Makes the link entry `rel` of the archive unpacked in `out`: a symbolic link to `target`
/// (resolved from the link's folder), or a hard link to the archive path `target`; either must
/// stay inside `out`.
fn make_link(out: &Path, rel: &Path, target: &Path, symbolic: bool) -> std::result::Result<(), LinkError> {
    let base = if symbolic { rel.parent().unwrap_or(Path::new("")).to_path_buf() } else { PathBuf::new() };
    let resolved = safe_relative(&base.join(target)).ok_or(LinkError::Outside)?;
    let dest = out.join(rel);
    let parent = dest.parent().unwrap_or(out);
    std::fs::create_dir_all(parent).map_err(|e| LinkError::Io(DatasetError::io(parent)(e)))?;
    let _ = std::fs::remove_file(&dest);
    let made = if symbolic {
        std::os::unix::fs::symlink(target, &dest)
    } else {
        std::fs::hard_link(out.join(resolved), &dest)
    };
    made.map_err(|e| LinkError::Io(DatasetError::io(&dest)(e)))
}

struct HashWriter<'a>(&'a mut Md5);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `p` normalised to a path inside its root, or `None` if it is absolute or climbs out.
fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Refuses to write through a symbolic link made by an earlier entry (which could lead out).
fn no_symlink_on_the_way(root: &Path, rel: &Path) -> std::result::Result<(), String> {
    let mut p = root.to_path_buf();
    let mut comps = rel.components().peekable();
    while let Some(c) = comps.next() {
        p.push(c);
        if comps.peek().is_none() {
            break;
        }
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!("{} is a symbolic link", p.display()));
        }
    }
    Ok(())
}
