//! The release's three dataset layouts, its organ table, and the index that lists a dataset's
//! images exactly as the release's loaders do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::kind::{DatasetKind, Split, IMAGE_EXTENSIONS};
use crate::{manifest::read_manifest, names, DatasetError, Result};

/// PTCGA200 organ folders and their class ids (several folders share a class).
pub const ORGANS: [(&str, u32); 24] = [
    ("adrenal_gland", 0),
    ("bile_liver", 1),
    ("liver", 1),
    ("bladder", 2),
    ("brain", 3),
    ("breast", 4),
    ("cervix_uteri", 5),
    ("colon", 6),
    ("rectosigmoid", 6),
    ("rectum", 6),
    ("small_intestine", 6),
    ("corpus_uteri", 7),
    ("esophagus", 8),
    ("kidney", 9),
    ("lung", 10),
    ("lymphnode", 11),
    ("ovary", 12),
    ("pancreas", 13),
    ("prostate", 14),
    ("skin", 15),
    ("stomach", 16),
    ("testis", 17),
    ("thymus", 18),
    ("thyroid", 19),
];

/// The class id of a PTCGA200 organ folder.
pub fn organ_class(folder: &str) -> Option<u32> {
    ORGANS.iter().find(|(name, _)| *name == folder).map(|&(_, c)| c)
}

/// The PTCGA200 folder of slide thumbnails that loaders skip.
pub const POSITION_MAP_DIR: &str = "thumbnail_position_map";

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Path relative to the dataset root.
    pub path: PathBuf,
    /// Class id: organ class (PTCGA200), 0 normal / 1 tumour (PCam200), ISUP grade folder
    /// (segPANDA200; pixel classes are in the mask).
    pub label: u32,
    /// The folder the label came from (organ, `normal`/`tumor`, grade).
    pub label_name: String,
    /// Slide id.
    pub slide: String,
    /// Case id (equal to the slide where the layout has no case level).
    pub case: String,
    /// The set of the split layouts' folder it is in; none for PTCGA200.
    pub split: Option<Split>,
    /// Label mask beside the image (segPANDA200).
    pub mask: Option<PathBuf>,
}

/// The images of a dataset in the order of the release's loaders (folders sorted, files sorted by
/// code point, a file kept only when the release's rule lists it: see [`crate::names`]), so that
/// the release's split indices select the same files here as there.
#[derive(Debug, Clone)]
pub struct Index {
    /// Dataset root.
    pub root: PathBuf,
    /// Layout found or given.
    pub kind: DatasetKind,
    /// Images in order.
    pub entries: Vec<Entry>,
    /// Class folders left out because the layout does not know them ([`UnknownFolders::Skip`]).
    pub skipped_folders: Vec<PathBuf>,
    /// Files the release's loaders would skip or misread: image-like names they leave out, and
    /// (with [`UnknownFolders::Skip`]) segPANDA200 images without the mask they look for.
    pub problems: Vec<Problem>,
}

/// A file of a dataset that the release's loaders would skip or misread.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Path relative to the dataset root.
    pub path: PathBuf,
    /// What the release's loaders do with it.
    pub cause: String,
}

/// What [`Index::scan_with`] does with what the layout does not expect: a class folder it does
/// not know (an organ missing from the PTCGA200 table, a PCam200 folder other than
/// `normal`/`tumor`), a segPANDA200 image without its mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFolders {
    /// Stop with an error naming the folder or file.
    Fail,
    /// Leave it out and list it in [`Index::skipped_folders`] or [`Index::problems`].
    Skip,
}

/// A folder's entries sorted by name (code point order, as Python's `sorted`), hidden folders
/// left out (patchtcga's build state).
fn sorted_dir(dir: &Path) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(DatasetError::io(dir))? {
        let e = e.map_err(DatasetError::io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().map_err(DatasetError::io(e.path()))?.is_dir();
        if is_dir && name.starts_with('.') {
            continue;
        }
        out.push((name, is_dir));
    }
    out.sort();
    Ok(out)
}

/// The slide id encoded in a patch name `<slide>_<x>_<y>.<ext>` (patchtcga's naming); a name
/// of another form is taken whole.
pub fn slide_of_name(name: &str) -> String {
    let stem = Path::new(name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let parts: Vec<&str> = stem.rsplitn(3, '_').collect();
    if parts.len() == 3 && parts[0].parse::<u64>().is_ok() && parts[1].parse::<u64>().is_ok() {
        parts[2].to_string()
    } else {
        stem
    }
}

/// One folder of images as the release's loader lists it.
struct Folder<'a> {
    /// Path relative to the root.
    rel: PathBuf,
    label: u32,
    label_name: &'a str,
    /// Case folder, or `None` where the layout has none (the slide is the case).
    case: Option<&'a str>,
    split: Option<Split>,
}

/// The walk of one dataset: entries, problems, and how to name slides.
struct Walk<'a> {
    root: &'a Path,
    kind: DatasetKind,
    unknown: UnknownFolders,
    slide_of: HashMap<String, String>,
    index: Index,
}

impl Walk<'_> {
    fn slide(&self, rel: &Path) -> String {
        let key = rel.to_string_lossy().into_owned();
        self.slide_of.get(&key).cloned().unwrap_or_else(|| slide_of_name(&key))
    }

    fn unknown_folder(&mut self, folder: PathBuf, cause: String) -> Result<()> {
        match self.unknown {
            UnknownFolders::Fail => Err(DatasetError::invalid(folder, cause)),
            UnknownFolders::Skip => {
                self.index.skipped_folders.push(folder);
                Ok(())
            }
        }
    }

    /// Lists the images of one folder: the release's rule decides, image-like files it leaves
    /// out become problems (segPANDA200's masks excepted).
    fn folder(&mut self, f: Folder) -> Result<()> {
        let listing = sorted_dir(&self.root.join(&f.rel))?;
        let files: Vec<&str> = listing.iter().filter(|(_, d)| !d).map(|(n, _)| n.as_str()).collect();
        let mut masks_used = Vec::new();
        for name in &files {
            let path = f.rel.join(name);
            if !names::release_lists(name, self.kind) {
                continue;
            }
            let mask = if self.kind == DatasetKind::SegPanda200 {
                let m = names::release_mask_name(name);
                if !files.contains(&m.as_str()) {
                    let cause = format!("the release's segPANDA200 loader opens its mask at {m}, which does not exist");
                    match self.unknown {
                        UnknownFolders::Fail => return Err(DatasetError::invalid(self.root.join(&path), cause)),
                        UnknownFolders::Skip => {
                            self.index.problems.push(Problem { path, cause });
                            continue;
                        }
                    }
                }
                masks_used.push(m.clone());
                Some(f.rel.join(m))
            } else {
                None
            };
            let slide = self.slide(&path);
            self.index.entries.push(Entry {
                case: f.case.map_or_else(|| slide.clone(), str::to_string),
                slide,
                path,
                label: f.label,
                label_name: f.label_name.to_string(),
                split: f.split,
                mask,
            });
        }
        for name in files {
            if names::looks_like_image(name)
                && !names::release_lists(name, self.kind)
                && !masks_used.iter().any(|m| m == name)
            {
                let cause = names::why_unlisted(name, self.kind);
                self.index.problems.push(Problem { path: f.rel.join(name), cause });
            }
        }
        Ok(())
    }

    fn ptcga200(&mut self) -> Result<()> {
        for (organ, is_dir) in sorted_dir(self.root)? {
            if !is_dir || organ == POSITION_MAP_DIR {
                continue;
            }
            let Some(label) = organ_class(&organ) else {
                self.unknown_folder(self.root.join(&organ), "not one of the 24 PTCGA200 organ folders".into())?;
                continue;
            };
            self.folder(Folder { rel: PathBuf::from(&organ), label, label_name: &organ, case: None, split: None })?;
        }
        Ok(())
    }

    fn split_layout(&mut self) -> Result<()> {
        for split in Split::ALL {
            let sd = self.root.join(split.name());
            if !sd.is_dir() {
                continue;
            }
            for (label_name, is_dir) in sorted_dir(&sd)? {
                if !is_dir {
                    continue;
                }
                let label = match (self.kind, label_name.as_str()) {
                    (DatasetKind::Pcam200, "normal") => 0,
                    (DatasetKind::Pcam200, "tumor") => 1,
                    (DatasetKind::SegPanda200, g) if g.parse::<u32>().is_ok() => g.parse().unwrap_or_default(),
                    _ => {
                        let cause = format!("unexpected class folder in a {} dataset", self.kind.name());
                        self.unknown_folder(sd.join(&label_name), cause)?;
                        continue;
                    }
                };
                for (case, is_dir) in sorted_dir(&sd.join(&label_name))? {
                    if is_dir {
                        let rel = Path::new(split.name()).join(&label_name).join(&case);
                        self.folder(Folder {
                            rel,
                            label,
                            label_name: &label_name,
                            case: Some(&case),
                            split: Some(split),
                        })?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Index {
    /// Lists the dataset at `root`; `kind` None detects the layout (split folders with
    /// `normal`/`tumor` inside → PCam200, split folders otherwise → segPANDA200, else PTCGA200).
    /// Slide ids come from the dataset's `manifest.csv` when there is one, else from the names.
    pub fn scan(root: &Path, kind: Option<DatasetKind>) -> Result<Self> {
        Self::scan_with(root, kind, UnknownFolders::Fail)
    }

    /// [`scan`](Self::scan) with a policy for unknown class folders and missing masks.
    pub fn scan_with(root: &Path, kind: Option<DatasetKind>, unknown: UnknownFolders) -> Result<Self> {
        if !root.is_dir() {
            return Err(DatasetError::invalid(root, "not a dataset folder"));
        }
        let kind = match kind {
            Some(k) => k,
            None => detect(root)?,
        };
        let manifest = root.join("manifest.csv");
        let slide_of = if manifest.is_file() {
            read_manifest(&manifest)?.into_iter().map(|r| (r.file, r.slide)).collect()
        } else {
            HashMap::new()
        };
        let index = Index {
            root: root.to_path_buf(),
            kind,
            entries: Vec::new(),
            skipped_folders: Vec::new(),
            problems: Vec::new(),
        };
        let mut walk = Walk { root, kind, unknown, slide_of, index };
        match kind {
            DatasetKind::Ptcga200 => walk.ptcga200()?,
            DatasetKind::Pcam200 | DatasetKind::SegPanda200 => walk.split_layout()?,
        }
        Ok(walk.index)
    }
}

/// Every image under `root`, at any depth, in path order: names with an image extension
/// (`.jpg .JPG .JPEG .png`, read from the last `.`), label masks (`*_mask.png`), hidden files and
/// folders and the thumbnail maps left out. For folders of patches in any arrangement (`embed`).
pub fn images_under(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for (name, is_dir) in sorted_dir(&dir)? {
            let p = dir.join(&name);
            if is_dir {
                if name != POSITION_MAP_DIR {
                    stack.push(p);
                }
            } else if !name.starts_with('.')
                && !name.ends_with("_mask.png")
                && Path::new(&name).extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn detect(root: &Path) -> Result<DatasetKind> {
    let splits: Vec<PathBuf> = Split::ALL.iter().map(|s| root.join(s.name())).filter(|p| p.is_dir()).collect();
    if splits.is_empty() {
        return Ok(DatasetKind::Ptcga200);
    }
    let pcam = splits.iter().any(|s| s.join("normal").is_dir() || s.join("tumor").is_dir());
    Ok(if pcam { DatasetKind::Pcam200 } else { DatasetKind::SegPanda200 })
}

/// Options of `patchtcga verify-layout`.
#[derive(clap::Args)]
pub struct VerifyLayoutArgs {
    /// Dataset root.
    pub dataset: PathBuf,
    /// Layout (default: detected).
    #[arg(long, value_enum)]
    pub layout: Option<DatasetKind>,
}

/// What in a dataset the release's loaders would skip or misread: [`VerifyLayoutArgs::run`].
pub struct LayoutCheck {
    root: PathBuf,
    index: Index,
}

impl VerifyLayoutArgs {
    /// Lists the dataset as the release's loaders would, unknown folders and unreadable names kept
    /// aside.
    pub fn run(&self) -> Result<LayoutCheck> {
        let index = Index::scan_with(&self.dataset, self.layout, UnknownFolders::Skip)?;
        Ok(LayoutCheck { root: self.dataset.clone(), index })
    }
}

impl LayoutCheck {
    /// Whether the release's loaders would read every image as it is.
    pub fn passed(&self) -> bool {
        self.index.problems.is_empty() && self.index.skipped_folders.is_empty()
    }
}

/// A line per folder (`FOLDER`) and file (`FILE`) the loaders would not read, then the counts.
impl std::fmt::Display for LayoutCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (index, kind) = (&self.index, self.index.kind.name());
        for folder in &index.skipped_folders {
            writeln!(
                f,
                "FOLDER  {}: not a class folder of the {kind} layout; its images are not read",
                folder.display()
            )?;
        }
        for p in &index.problems {
            writeln!(f, "FILE    {}: {}", p.path.display(), p.cause)?;
        }
        write!(
            f,
            "{kind} layout at {}: {} image(s) listed as the release's loaders list them, {} file(s) and {} folder(s) not",
            self.root.display(),
            index.entries.len(),
            index.problems.len(),
            index.skipped_folders.len()
        )
    }
}
