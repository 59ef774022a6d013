use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{manifest::read_manifest, DatasetError, Result};

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

/// Image extensions the release's loaders accept.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "JPG", "JPEG", "png"];

/// The PTCGA200 folder of slide thumbnails that loaders skip.
pub const POSITION_MAP_DIR: &str = "thumbnail_position_map";

/// The three dataset layouts of the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// `<root>/<organ>/<img>`.
    Ptcga200,
    /// `<root>/{train,val,test}/{normal,tumor}/<case>/<img>`.
    Pcam200,
    /// `<root>/{train,val,test}/<grade>/<case>/<img>` with `<stem>_mask.png` beside each image.
    SegPanda200,
}

impl DatasetKind {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ptcga200 => "ptcga200",
            Self::Pcam200 => "pcam200",
            Self::SegPanda200 => "segpanda200",
        }
    }
}

/// The split folders of PCam200 and segPANDA200.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

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
    /// `train`/`val`/`test` for the split layouts, else empty.
    pub split: String,
    /// Label mask beside the image (segPANDA200).
    pub mask: Option<PathBuf>,
}

/// The images of a dataset in the release's order: folders sorted, files sorted by name.
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
}

/// What [`Index::scan_with`] does with a class folder the layout does not know (an organ
/// missing from the PTCGA200 table, a PCam200 folder other than `normal`/`tumor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFolders {
    /// Stop with an error naming the folder.
    Fail,
    /// Leave it out and list it in [`Index::skipped_folders`].
    Skip,
}

fn is_image(name: &str) -> bool {
    Path::new(name).extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e))
}

fn sorted_dir(dir: &Path) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(DatasetError::io(dir))? {
        let e = e.map_err(DatasetError::io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let is_dir = e.file_type().map_err(DatasetError::io(e.path()))?.is_dir();
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

impl Index {
    /// Lists the dataset at `root`; `kind` None detects the layout (split folders with
    /// `normal`/`tumor` inside → PCam200, split folders otherwise → segPANDA200, else PTCGA200).
    /// Slide ids come from the dataset's `manifest.csv` when there is one, else from the names.
    pub fn scan(root: &Path, kind: Option<DatasetKind>) -> Result<Self> {
        Self::scan_with(root, kind, UnknownFolders::Fail)
    }

    /// [`scan`](Self::scan) with a policy for unknown class folders.
    pub fn scan_with(root: &Path, kind: Option<DatasetKind>, unknown: UnknownFolders) -> Result<Self> {
        if !root.is_dir() {
            return Err(DatasetError::invalid(root, "not a dataset folder"));
        }
        let kind = match kind {
            Some(k) => k,
            None => detect(root)?,
        };
        let manifest = root.join("manifest.csv");
        let slide_of: HashMap<String, String> = if manifest.is_file() {
            read_manifest(&manifest)?.into_iter().map(|r| (r.file, r.slide)).collect()
        } else {
            HashMap::new()
        };
        let slide = |rel: &Path| {
            let key = rel.to_string_lossy().into_owned();
            slide_of.get(&key).cloned().unwrap_or_else(|| slide_of_name(&key))
        };
        let mut entries = Vec::new();
        let mut skipped_folders = Vec::new();
        let mut refuse = |folder: PathBuf, cause: String| match unknown {
            UnknownFolders::Fail => Err(DatasetError::invalid(folder, cause)),
            UnknownFolders::Skip => {
                skipped_folders.push(folder);
                Ok(())
            }
        };
        match kind {
            DatasetKind::Ptcga200 => {
                for (organ, is_dir) in sorted_dir(root)? {
                    if !is_dir || organ == POSITION_MAP_DIR {
                        continue;
                    }
                    let Some(label) = organ_class(&organ) else {
                        refuse(root.join(&organ), "not one of the 24 PTCGA200 organ folders".into())?;
                        continue;
                    };
                    for (name, is_dir) in sorted_dir(&root.join(&organ))? {
                        if is_dir || !is_image(&name) {
                            continue;
                        }
                        let path = Path::new(&organ).join(&name);
                        let s = slide(&path);
                        entries.push(Entry {
                            path,
                            label,
                            label_name: organ.clone(),
                            case: s.clone(),
                            slide: s,
                            split: String::new(),
                            mask: None,
                        });
                    }
                }
            }
            DatasetKind::Pcam200 | DatasetKind::SegPanda200 => {
                for split in SPLITS {
                    let sd = root.join(split);
                    if !sd.is_dir() {
                        continue;
                    }
                    for (label_name, is_dir) in sorted_dir(&sd)? {
                        if !is_dir {
                            continue;
                        }
                        let label = match (kind, label_name.as_str()) {
                            (DatasetKind::Pcam200, "normal") => 0,
                            (DatasetKind::Pcam200, "tumor") => 1,
                            (DatasetKind::SegPanda200, g) if g.parse::<u32>().is_ok() => g.parse().unwrap_or_default(),
                            _ => {
                                refuse(
                                    sd.join(&label_name),
                                    format!("unexpected class folder in a {} dataset", kind.name()),
                                )?;
                                continue;
                            }
                        };
                        for (case, is_dir) in sorted_dir(&sd.join(&label_name))? {
                            if !is_dir {
                                continue;
                            }
                            let cd = Path::new(split).join(&label_name).join(&case);
                            for (name, is_dir) in sorted_dir(&root.join(&cd))? {
                                if is_dir || !is_image(&name) || name.ends_with("_mask.png") {
                                    continue;
                                }
                                let path = cd.join(&name);
                                let mask = if kind == DatasetKind::SegPanda200 {
                                    let stem =
                                        Path::new(&name).file_stem().unwrap_or_default().to_string_lossy().into_owned();
                                    let m = cd.join(format!("{stem}_mask.png"));
                                    if !root.join(&m).is_file() {
                                        return Err(DatasetError::invalid(
                                            root.join(&path),
                                            "no label mask beside it (<stem>_mask.png)",
                                        ));
                                    }
                                    Some(m)
                                } else {
                                    None
                                };
                                entries.push(Entry {
                                    slide: slide(&path),
                                    path,
                                    label,
                                    label_name: label_name.clone(),
                                    case: case.clone(),
                                    split: split.to_string(),
                                    mask,
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(Self { root: root.to_path_buf(), kind, entries, skipped_folders })
    }
}

fn detect(root: &Path) -> Result<DatasetKind> {
    let splits: Vec<PathBuf> = SPLITS.iter().map(|s| root.join(s)).filter(|p| p.is_dir()).collect();
    if splits.is_empty() {
        return Ok(DatasetKind::Ptcga200);
    }
    let pcam = splits.iter().any(|s| s.join("normal").is_dir() || s.join("tumor").is_dir());
    Ok(if pcam { DatasetKind::Pcam200 } else { DatasetKind::SegPanda200 })
}
