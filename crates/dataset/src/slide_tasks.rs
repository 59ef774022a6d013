//! Slide-level benchmarks laid out from the user's own copies: a slide list for `embed --slides`
//! and a labels file for `mil train`, with the benchmark's official test split where it has one.
//! Camelyon16 (normal / tumor; its 129–130 test slides labelled by `testing/reference.csv`) and
//! PANDA (ISUP grade 0–5 from `train.csv`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::kind::Split;
use crate::{atomic, DatasetError, Result};

/// Options of `patchtcga slide-labels`.
#[derive(clap::Args)]
pub struct SlideLabelsArgs {
    /// camelyon16 (normal / tumor, the official test set held out) or panda (ISUP grade 0–5).
    #[arg(value_enum)]
    pub benchmark: SlideBenchmark,
    /// The benchmark's folder as downloaded (CAMELYON16/ with training/ and testing/, or PANDA's
    /// folder with train.csv and train_images/).
    #[arg(long)]
    pub root: PathBuf,
    /// Where slides.csv (for `embed --slides`) and labels.csv (for `mil train`) go.
    #[arg(long)]
    pub out: PathBuf,
}

impl SlideLabelsArgs {
    /// Lists the benchmark's slides and writes the two files; says what it wrote.
    pub fn run(&self) -> Result<String> {
        let slides = self.benchmark.slides(&self.root)?;
        write_layout(&slides, &self.out)?;
        let (n, by_split, out) = (slides.len(), count_by_split(&slides), self.out.display());
        Ok(format!("{n} slides ({by_split}) → {out}/slides.csv, labels.csv"))
    }
}

/// A slide-level benchmark whose layout can be read from its download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlideBenchmark {
    /// `training/{normal,tumor}/*.tif`, `testing/images/*.tif`, `testing/reference.csv`.
    Camelyon16,
    /// `train.csv` (`image_id`, `data_provider`, `isup_grade`, `gleason_score`),
    /// `train_images/<image_id>.tiff`.
    Panda,
}

/// One slide of a benchmark: its file, id, label, case and split (`test` for the official test
/// set, none where cross-validation decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledSlide {
    pub path: PathBuf,
    pub id: String,
    pub label: String,
    pub case: String,
    pub split: Option<Split>,
}

impl SlideBenchmark {
    /// Every slide of the benchmark under `root`, sorted by id. A missing part of the layout,
    /// a test image without a reference label or a label without its image fails naming it.
    pub fn slides(self, root: &Path) -> Result<Vec<LabelledSlide>> {
        let mut slides = match self {
            Self::Camelyon16 => camelyon16(root)?,
            Self::Panda => panda(root)?,
        };
        slides.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(slides)
    }
}

/// Writes `slides.csv` (`slide`, `id`: for `embed --slides`) and `labels.csv` (`slide`, `label`,
/// `case`, `split`: for `mil train`) into `out`, atomically.
pub fn write_layout(slides: &[LabelledSlide], out: &Path) -> Result<()> {
    let (mut list, mut labels) = (String::from("slide,id\n"), String::from("slide,label,case,split\n"));
    for s in slides {
        let _ = writeln!(list, "{},{}", quoted(&s.path.to_string_lossy()), quoted(&s.id));
        let _ = writeln!(
            labels,
            "{},{},{},{}",
            quoted(&s.id),
            quoted(&s.label),
            quoted(&s.case),
            s.split.map_or("", Split::name)
        );
    }
    atomic::write(&out.join("slides.csv"), list.as_bytes())?;
    atomic::write(&out.join("labels.csv"), labels.as_bytes())
}

/// The slides counted by split and label, as `patchtcga slide-labels` reports them:
/// `cross-validation normal: 160, test tumor: 49, …`.
pub fn count_by_split(slides: &[LabelledSlide]) -> String {
    let mut counts: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for s in slides {
        *counts
            .entry((if s.split == Some(Split::Test) { "test" } else { "cross-validation" }, &s.label))
            .or_default() += 1;
    }
    let shown: Vec<String> = counts.iter().map(|((split, label), n)| format!("{split} {label}: {n}")).collect();
    shown.join(", ")
}

fn quoted(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The files with extension `ext` in `dir`, by stem.
fn images(dir: &Path, ext: &str) -> Result<BTreeMap<String, PathBuf>> {
    let missing = |e| DatasetError::invalid(dir, format!("not found ({e}): is this the benchmark's folder?"));
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(missing)? {
        let path = entry.map_err(DatasetError::io(dir))?.path();
        if path.extension().is_some_and(|e| e == ext) {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                found.insert(stem.to_owned(), path.clone());
            }
        }
    }
    Ok(found)
}

fn camelyon16(root: &Path) -> Result<Vec<LabelledSlide>> {
    let mut slides = Vec::new();
    for label in ["normal", "tumor"] {
        for (id, path) in images(&root.join("training").join(label), "tif")? {
            slides.push(LabelledSlide { case: id.clone(), id, label: label.into(), path, split: None });
        }
    }
    let reference = root.join("testing/reference.csv");
    let text = std::fs::read_to_string(&reference).map_err(DatasetError::io(&reference))?;
    // No header: slide, Tumor/Normal, then the lesion type and more.
    let mut labels = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut cells = line.split(',').map(str::trim);
        let (Some(id), Some(class)) = (cells.next(), cells.next()) else {
            return Err(DatasetError::invalid(&reference, format!("line {}: expected slide,class", i + 1)));
        };
        let label = match class.to_ascii_lowercase().as_str() {
            "tumor" | "tumour" => "tumor",
            "normal" => "normal",
            other => return Err(DatasetError::invalid(&reference, format!("line {}: class {other:?}", i + 1))),
        };
        labels.insert(id.to_ascii_lowercase(), label);
    }
    let test = images(&root.join("testing/images"), "tif")?;
    let unlabelled: Vec<&str> =
        test.keys().filter(|id| !labels.contains_key(&id.to_ascii_lowercase())).map(String::as_str).collect();
    if !unlabelled.is_empty() {
        return Err(DatasetError::invalid(&reference, format!("no label for {}", unlabelled.join(", "))));
    }
    for (id, path) in test {
        let label = labels[&id.to_ascii_lowercase()].to_owned();
        slides.push(LabelledSlide { case: id.clone(), id, label, path, split: Some(Split::Test) });
    }
    Ok(slides)
}

fn panda(root: &Path) -> Result<Vec<LabelledSlide>> {
    let csv_path = root.join("train.csv");
    let bad = |cause: String| DatasetError::invalid(&csv_path, cause);
    let mut reader = csv::Reader::from_path(&csv_path).map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(id_col), Some(grade_col)) = (col("image_id"), col("isup_grade")) else {
        return Err(bad("needs `image_id` and `isup_grade` columns (PANDA's train.csv)".into()));
    };
    let found = images(&root.join("train_images"), "tiff")?;
    let (mut slides, mut missing) = (Vec::new(), Vec::new());
    for (i, record) in reader.records().enumerate() {
        let r = record.map_err(|e| bad(format!("row {}: {e}", i + 2)))?;
        let (id, grade) = (r.get(id_col).unwrap_or("").trim(), r.get(grade_col).unwrap_or("").trim());
        if !matches!(grade, "0" | "1" | "2" | "3" | "4" | "5") {
            return Err(bad(format!("row {}: isup_grade {grade:?} is not 0–5", i + 2)));
        }
        match found.get(id) {
            Some(path) => slides.push(LabelledSlide {
                path: path.clone(),
                id: id.to_owned(),
                label: grade.to_owned(),
                case: id.to_owned(),
                split: None,
            }),
            None => missing.push(id.to_owned()),
        }
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        return Err(bad(format!(
            "{} slide(s) without train_images/<id>.tiff: {}{}",
            missing.len(),
            shown.join(", "),
            if missing.len() > 10 { " …" } else { "" }
        )));
    }
    Ok(slides)
}
