//! Bags of a slide-level task: one `.h5` of patch features per slide (CLAM / TRIDENT layout:
//! `features` N × D, float32 or float16; `coords` N × 2) and a labels CSV (`slide`, `label`, and
//! optionally `case`, and `split` where `test` marks a held-out test set), checked against each
//! other before anything trains.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tch::Tensor;

use patchtcga_dataset::Split;
use patchtcga_engine::LearnError;
use patchtcga_features::slide_features::{read_source, FeatureSource};

/// One slide: its case, its label's index, its features (N × D, float32, on the CPU), and
/// whether it belongs to the held-out test set (`split` = `test` in the labels).
pub struct Bag {
    pub slide: String,
    pub case: String,
    pub label: usize,
    pub features: Tensor,
    pub held_out: bool,
}

/// Every labelled slide's bag, the class names in index order, and how the features were made
/// (when their files record it).
pub struct Bags {
    pub bags: Vec<Bag>,
    pub classes: Vec<String>,
    pub width: i64,
    pub source: Option<FeatureSource>,
}

fn config(msg: String) -> LearnError {
    LearnError::Config(msg)
}

/// The `features` dataset of `path` as an (N, D) float32 tensor (float16 files are widened).
pub fn read_features(path: &Path) -> Result<Tensor, LearnError> {
    let bad = |what: String| config(format!("{}: {what}", path.display()));
    let file = hdf5_metno::File::open(path).map_err(|e| bad(format!("not a readable HDF5 file ({e})")))?;
    let ds = file
        .dataset("features")
        .map_err(|_| bad("no `features` dataset (write it with `patchtcga embed --slides`, CLAM or TRIDENT)".into()))?;
    if file.dataset("coords").is_err() {
        return Err(bad("no `coords` dataset beside `features`".into()));
    }
    let shape = ds.shape();
    if shape.len() != 2 || shape[0] == 0 {
        return Err(bad(format!("`features` is {shape:?}, expected N × D with N ≥ 1")));
    }
    let values: Vec<f32> = match ds.read_raw::<f32>() {
        Ok(v) => v,
        Err(_) => ds
            .read_raw::<half::f16>()
            .map_err(|e| bad(format!("`features` is neither float32 nor float16 ({e})")))?
            .into_iter()
            .map(f32::from)
            .collect(),
    };
    Ok(Tensor::from_slice(&values).reshape([shape[0] as i64, shape[1] as i64]))
}

/// A labels CSV row.
pub struct LabelRow {
    pub slide: String,
    /// The case (patient) the slide belongs to; the slide itself without a `case` column.
    pub case: String,
    pub label: String,
    /// `split` = `test`: the held-out test set.
    pub held_out: bool,
}

/// The rows of a labels CSV (`slide` or `slide_id`, `label`; optional `case` or `case_id`, and
/// `split`), each bad row named by its line.
pub fn read_labels(path: &Path) -> Result<Vec<LabelRow>, LearnError> {
    let bad = |what: String| config(format!("{}: {what}", path.display()));
    let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(slide), Some(label)) = (col("slide").or(col("slide_id")), col("label")) else {
        return Err(bad("needs a `slide` (or `slide_id`) and a `label` column".into()));
    };
    let case = col("case").or(col("case_id"));
    let split = col("split");
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let r = record.map_err(|e| bad(format!("row {}: {e}", i + 2)))?;
        let get = |c: usize| r.get(c).unwrap_or("").trim().to_owned();
        let slide = get(slide);
        let case = case.map(get).filter(|c| !c.is_empty()).unwrap_or_else(|| slide.clone());
        let held_out = match split.map(get).filter(|s| !s.is_empty()) {
            None => false,
            Some(s) => s.parse::<Split>().map_err(|e| bad(format!("row {}: {e}", i + 2)))? == Split::Test,
        };
        rows.push(LabelRow { slide, case, label: get(label), held_out });
    }
    Ok(rows)
}

/// Reads the labels CSV and every labelled slide's `<features>/<slide>.h5`. A labelled slide
/// without features, features of another width, an `.h5` without `features`/`coords`, or
/// `.h5` files the labels do not name (unless `allow_unlabelled`) fail with one message naming
/// them all.
pub fn load(features: &Path, labels: &Path, allow_unlabelled: bool) -> Result<Bags, LearnError> {
    let rows = read_labels(labels)?;
    if rows.is_empty() {
        return Err(config(format!("{}: no slides", labels.display())));
    }
    let h5: BTreeSet<String> = std::fs::read_dir(features)
        .map_err(|e| LearnError::io(features, e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".h5").map(str::to_owned))
        .collect();
    let labelled: BTreeSet<&str> = rows.iter().map(|r| r.slide.as_str()).collect();
    let missing: Vec<&str> = labelled.iter().copied().filter(|s| !h5.contains(*s)).collect();
    if !missing.is_empty() {
        return Err(config(format!(
            "{}: {} labelled slide(s) have no features in {}: {} (embed them with `patchtcga embed --slides`, or drop their rows)",
            labels.display(),
            missing.len(),
            features.display(),
            shown(&missing)
        )));
    }
    let unlabelled: Vec<&str> = h5.iter().map(String::as_str).filter(|s| !labelled.contains(s)).collect();
    if !unlabelled.is_empty() && !allow_unlabelled {
        return Err(config(format!(
            "{}: {} feature file(s) have no label in {}: {} (label them, or pass --allow-unlabelled to leave them out)",
            features.display(),
            unlabelled.len(),
            labels.display(),
            shown(&unlabelled)
        )));
    }
    let classes: Vec<String> = rows.iter().map(|r| r.label.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let index: BTreeMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let mut bags = Vec::with_capacity(rows.len());
    for r in &rows {
        let path: PathBuf = features.join(format!("{}.h5", r.slide));
        let f = read_features(&path)?;
        let label = index[r.label.as_str()];
        bags.push(Bag { slide: r.slide.clone(), case: r.case.clone(), label, features: f, held_out: r.held_out });
    }
    let width = bags[0].features.size()[1];
    let other: Vec<String> = bags
        .iter()
        .filter(|b| b.features.size()[1] != width)
        .map(|b| format!("{} ({})", b.slide, b.features.size()[1]))
        .collect();
    if !other.is_empty() {
        return Err(config(format!(
            "{}: features of another width than {}'s {width}: {} (one model's features per run)",
            features.display(),
            bags[0].slide,
            shown(&other)
        )));
    }
    let source = one_source(features, &rows.iter().map(|r| r.slide.as_str()).collect::<Vec<_>>())?;
    Ok(Bags { bags, classes, width, source })
}

/// The one way the named slides' features were made, if their files say; files made another
/// way (another model, weights, normalisation or geometry) are refused, named.
fn one_source(features: &Path, slides: &[&str]) -> Result<Option<FeatureSource>, LearnError> {
    let mut sources = Vec::with_capacity(slides.len());
    for s in slides {
        sources.push((*s, read_source(&features.join(format!("{s}.h5")))?));
    }
    let Some((first, Some(source))) = sources.first().cloned() else { return Ok(None) };
    let other: Vec<&str> = sources.iter().filter(|(_, s)| s.as_ref() != Some(&source)).map(|(n, _)| *n).collect();
    if !other.is_empty() {
        return Err(config(format!(
            "{}: features made otherwise than {first}'s ({}, {}, {} px at {} µm/px): {} (one model's features per run)",
            features.display(),
            source.made_by.model,
            source.made_by.weights_md5,
            source.patch_size,
            source.mpp,
            shown(&other)
        )));
    }
    Ok(Some(source))
}

fn shown<S: AsRef<str>>(items: &[S]) -> String {
    let first: Vec<&str> = items.iter().take(10).map(AsRef::as_ref).collect();
    let more = if items.len() > 10 { format!(" … and {} more", items.len() - 10) } else { String::new() };
    format!("{}{more}", first.join(", "))
}
