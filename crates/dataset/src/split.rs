//! Slide-level train/val/test splits in the release's format: a dict keyed `'0'`, `'1'`, `'2'`
//! (trials), each mapping `train`/`val`/`test` to `{'idx': [int], 'imgs': [basename]}` with
//! indices into the dataset's ordered file list ([`Index`]). Written as JSON and as the
//! original `3fold_dict_idx_filenames.pickle`; either is read back and checked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_pickle::{HashableValue, Value};

use crate::kind::Split;
use crate::{atomic, DatasetError, DatasetKind, Index, Result};

/// Options of `patchtcga split`.
#[derive(clap::Args)]
pub struct SplitArgs {
    /// Dataset root (PTCGA200 layout).
    pub dataset: PathBuf,
    /// Folder for splits.json and 3fold_dict_idx_filenames.pickle (default: the dataset root).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Check and convert an existing split pickle (e.g. the release's) instead of drawing one.
    #[arg(long, conflicts_with = "from_json")]
    pub from_pickle: Option<PathBuf>,
    /// Check and convert an existing splits.json instead of drawing one.
    #[arg(long)]
    pub from_json: Option<PathBuf>,
    #[command(flatten)]
    pub params: SplitParams,
}

impl SplitArgs {
    /// Draws (or reads and checks) the splits and writes them as JSON and the release's pickle
    /// (not over the file they were read from); returns what it did, a line each.
    pub fn run(&self) -> Result<Vec<String>> {
        let index = Index::scan(&self.dataset, Some(DatasetKind::Ptcga200))?;
        let out_dir = self.out_dir.as_ref().unwrap_or(&self.dataset);
        let (splits, source): (Splits, &Path) = match (&self.from_pickle, &self.from_json) {
            (Some(p), _) => (read_pickle(p)?, p),
            (_, Some(j)) => (read_json(j)?, j),
            _ => (make(&index, &self.params)?, &self.dataset),
        };
        let counts = check(&index, &splits, &self.params, source)?;
        let mut lines: Vec<String> = counts
            .iter()
            .map(|(trial, [train, val, test])| format!("trial {trial}: train {train}, val {val}, test {test} patches"))
            .collect();
        if self.from_json.is_none() {
            let json = out_dir.join("splits.json");
            write_json(&json, &splits)?;
            lines.push(format!("wrote {}", json.display()));
        }
        if self.from_pickle.is_none() {
            let pickle = out_dir.join("3fold_dict_idx_filenames.pickle");
            write_pickle(&pickle, &splits)?;
            lines.push(format!("wrote {}", pickle.display()));
        }
        Ok(lines)
    }
}

/// The images of one set of one trial.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSet {
    /// Indices into the dataset's ordered file list.
    pub idx: Vec<u64>,
    /// Basenames of those files.
    pub imgs: Vec<String>,
}

/// Trials (`"0"`, `"1"`, …) → set name (`train`, `val`, `test`) → images.
pub type Splits = BTreeMap<String, BTreeMap<String, SplitSet>>;

/// How to draw splits. The release's: 3 trials, 2% of each organ's slides (rounded up) to val
/// and 1% to test, val and test sets disjoint across trials.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct SplitParams {
    /// Number of trials.
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
    /// Fraction of each class's slides for validation (rounded up).
    #[arg(long, default_value_t = 0.02)]
    pub val_fraction: f64,
    /// Fraction of each class's slides for test (rounded up).
    #[arg(long, default_value_t = 0.01)]
    pub test_fraction: f64,
    /// Seed of the draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Treat every N consecutive files of a class as one slide, for datasets whose names do not
    /// carry the slide (the release's PTCGA200 has 500 per slide).
    #[arg(long)]
    pub patches_per_slide: Option<usize>,
}

impl Default for SplitParams {
    fn default() -> Self {
        patchtcga_slide::flag_defaults()
    }
}

/// The slide of each entry, as a (class folder, slide) key.
fn slide_keys(index: &Index, params: &SplitParams) -> Vec<(String, String)> {
    let mut pos_in_class: HashMap<&str, usize> = HashMap::new();
    index
        .entries
        .iter()
        .map(|e| {
            let slide = match params.patches_per_slide {
                Some(n) => {
                    let i = pos_in_class.entry(&e.label_name).or_default();
                    *i += 1;
                    format!("#{}", (*i - 1) / n.max(1))
                }
                None => e.slide.clone(),
            };
            (e.label_name.clone(), slide)
        })
        .collect()
}

/// Draws slide-level splits over the dataset, per class folder.
pub fn make(index: &Index, params: &SplitParams) -> Result<Splits> {
    if index.entries.is_empty() {
        return Err(DatasetError::invalid(&index.root, "holds no images to split"));
    }
    let keys = slide_keys(index, params);
    let mut slides_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (class, slide) in &keys {
        slides_of.entry(class).or_default().insert(slide);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    // (class, slide) → set, per trial.
    let mut assignment: Vec<HashMap<(&str, &str), Split>> = vec![HashMap::new(); params.trials];
    for (class, slides) in &slides_of {
        let mut order: Vec<&str> = slides.iter().copied().collect();
        order.shuffle(&mut rng);
        let n = order.len();
        let nv = (n as f64 * params.val_fraction).ceil() as usize;
        let nt = (n as f64 * params.test_fraction).ceil() as usize;
        if params.trials * (nv + nt) > n {
            return Err(DatasetError::Usage(format!(
                "class {class:?} has {n} slide(s); {} trials with {nv} val + {nt} test slide(s) each, disjoint across \
                 trials, need at least {}",
                params.trials,
                params.trials * (nv + nt)
            )));
        }
        for (t, a) in assignment.iter_mut().enumerate() {
            let start = t * (nv + nt);
            for (i, s) in order.iter().enumerate() {
                let set = if (start..start + nv).contains(&i) {
                    Split::Val
                } else if (start + nv..start + nv + nt).contains(&i) {
                    Split::Test
                } else {
                    Split::Train
                };
                a.insert((class, s), set);
            }
        }
    }
    let mut splits = Splits::new();
    for (t, a) in assignment.iter().enumerate() {
        let mut trial: BTreeMap<String, SplitSet> =
            Split::ALL.iter().map(|s| (s.name().to_owned(), SplitSet::default())).collect();
        for (i, (e, (class, slide))) in index.entries.iter().zip(&keys).enumerate() {
            let set = trial.get_mut(a[&(class.as_str(), slide.as_str())].name()).expect("set names are fixed");
            set.idx.push(i as u64);
            set.imgs.push(basename(&e.path));
        }
        splits.insert(t.to_string(), trial);
    }
    Ok(splits)
}

fn basename(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Counts per trial and set, after checking the splits against the dataset: every index in
/// range and naming the file listed beside it (all entries that do not are named, up to
/// [`MISMATCHES_SHOWN`]), sets disjoint, no slide in two sets.
pub fn check(
    index: &Index,
    splits: &Splits,
    params: &SplitParams,
    source: &Path,
) -> Result<BTreeMap<String, [usize; 3]>> {
    let mismatches = mismatches(index, splits, source)?;
    if !mismatches.is_empty() {
        let total: usize = splits.values().flat_map(|t| t.values()).map(|s| s.idx.len()).sum();
        let shown: Vec<&str> = mismatches.iter().take(MISMATCHES_SHOWN).map(String::as_str).collect();
        return Err(DatasetError::invalid(
            source,
            format!(
                "{} of {total} entries do not match the release's listing of {} (its loaders' filter and order; \
                 `patchtcga verify-layout` names the files they skip):\n  {}{}",
                mismatches.len(),
                index.root.display(),
                shown.join("\n  "),
                if mismatches.len() > shown.len() { "\n  …" } else { "" }
            ),
        ));
    }
    let keys = slide_keys(index, params);
    let mut counts = BTreeMap::new();
    for (trial, sets) in splits {
        let mut owner: HashMap<&(String, String), &str> = HashMap::new();
        let mut seen = vec![false; index.entries.len()];
        let mut n = [0usize; 3];
        for (k, name) in Split::ALL.map(Split::name).into_iter().enumerate() {
            let Some(set) = sets.get(name) else { continue };
            for (&i, img) in set.idx.iter().zip(&set.imgs) {
                if std::mem::replace(&mut seen[i as usize], true) {
                    return Err(DatasetError::invalid(source, format!("trial {trial}: image {img} is in two sets")));
                }
                let key = &keys[i as usize];
                if let Some(other) = owner.insert(key, name) {
                    if other != name {
                        return Err(DatasetError::invalid(
                            source,
                            format!("trial {trial}: slide {} straddles {other} and {name}", key.1),
                        ));
                    }
                }
            }
            n[k] = set.idx.len();
        }
        counts.insert(trial.clone(), n);
    }
    Ok(counts)
}

/// How many mismatched split entries an error names.
pub const MISMATCHES_SHOWN: usize = 10;

/// One line per split entry whose index is out of range or names another file than the listing
/// has there; an error when a set's lists differ in length.
fn mismatches(index: &Index, splits: &Splits, source: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (trial, sets) in splits {
        for name in Split::ALL.map(Split::name) {
            let Some(set) = sets.get(name) else { continue };
            if set.idx.len() != set.imgs.len() {
                return Err(DatasetError::invalid(
                    source,
                    format!("trial {trial} {name}: {} indices but {} names", set.idx.len(), set.imgs.len()),
                ));
            }
            for (&i, img) in set.idx.iter().zip(&set.imgs) {
                match index.entries.get(i as usize) {
                    None => out.push(format!(
                        "trial {trial} {name}: index {i} past the {} images ({img})",
                        index.entries.len()
                    )),
                    Some(e) if basename(&e.path) != *img => out.push(format!(
                        "trial {trial} {name}: index {i} is {} but the split names {img}",
                        e.path.display()
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    Ok(out)
}

/// Writes the splits as JSON.
pub fn write_json(path: &Path, splits: &Splits) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(splits).map_err(|e| DatasetError::invalid(path, e.to_string()))?;
    atomic::write(path, &bytes)
}

/// Reads splits written by [`write_json`].
pub fn read_json(path: &Path) -> Result<Splits> {
    let bytes = std::fs::read(path).map_err(DatasetError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| DatasetError::invalid(path, e.to_string()))
}

/// Writes the splits as a Python pickle, readable by `pickle.load` as the release's dict.
pub fn write_pickle(path: &Path, splits: &Splits) -> Result<()> {
    let mut bytes = Vec::new();
    serde_pickle::to_writer(&mut bytes, splits, serde_pickle::SerOptions::new())
        .map_err(|e| DatasetError::invalid(path, e.to_string()))?;
    atomic::write(path, &bytes)
}

/// Reads a split pickle such as the release's `3fold_dict_idx_filenames.pickle` (trial keys
/// as strings or integers). Loading never executes code: only plain values are accepted.
pub fn read_pickle(path: &Path) -> Result<Splits> {
    let file = std::fs::File::open(path).map_err(DatasetError::io(path))?;
    let value = serde_pickle::value_from_reader(std::io::BufReader::new(file), serde_pickle::DeOptions::new())
        .map_err(|e| DatasetError::invalid(path, format!("not a readable pickle: {e}")))?;
    let bad = |what: String| DatasetError::invalid(path, what);
    let dict = |v: &Value, what: &str| -> Result<Vec<(String, Value)>> {
        match v {
            Value::Dict(d) => d
                .iter()
                .map(|(k, v)| {
                    let k = match k {
                        HashableValue::String(s) => s.clone(),
                        HashableValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                        HashableValue::I64(i) => i.to_string(),
                        other => return Err(bad(format!("{what}: unexpected key {other:?}"))),
                    };
                    Ok((k, v.clone()))
                })
                .collect(),
            other => Err(bad(format!("{what}: expected a dict, found {}", kind(other)))),
        }
    };
    let list = |v: &Value, what: &str| -> Result<Vec<Value>> {
        match v {
            Value::List(l) | Value::Tuple(l) => Ok(l.clone()),
            other => Err(bad(format!("{what}: expected a list, found {}", kind(other)))),
        }
    };
    let mut splits = Splits::new();
    for (trial, sets) in dict(&value, "top level")? {
        let mut out = BTreeMap::new();
        for (name, set) in dict(&sets, &format!("trial {trial}"))? {
            let fields: HashMap<String, Value> = dict(&set, &format!("trial {trial} {name}"))?.into_iter().collect();
            let get = |k: &str| fields.get(k).ok_or_else(|| bad(format!("trial {trial} {name}: no {k:?}")));
            let idx = list(get("idx")?, "idx")?
                .iter()
                .map(|v| match v {
                    Value::I64(i) if *i >= 0 => Ok(*i as u64),
                    other => Err(bad(format!("trial {trial} {name}: index {other:?} is not a non-negative integer"))),
                })
                .collect::<Result<Vec<_>>>()?;
            let imgs = list(get("imgs")?, "imgs")?
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
                    other => Err(bad(format!("trial {trial} {name}: image name {other:?} is not a string"))),
                })
                .collect::<Result<Vec<_>>>()?;
            out.insert(name, SplitSet { idx, imgs });
        }
        splits.insert(trial, out);
    }
    Ok(splits)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::I64(_) | Value::Int(_) => "an int",
        Value::F64(_) => "a float",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a str",
        Value::List(_) => "a list",
        Value::Tuple(_) => "a tuple",
        Value::Set(_) | Value::FrozenSet(_) => "a set",
        Value::Dict(_) => "a dict",
    }
}
