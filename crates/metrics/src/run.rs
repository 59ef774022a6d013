//! The records of a run folder that one crate writes (learn) and another reads (report), as one
//! set of types, so that neither can rename a field without the other seeing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ClassificationReport, SegmentationReport};

/// The file a fine-tuning run's results go to, in its run folder.
pub const RESULTS_FILE: &str = "results.json";

/// What a benchmark is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    #[default]
    Classification,
    Segmentation,
}

/// A set's report: classification or segmentation metrics (told apart by their fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SetReport {
    Classification(ClassificationReport),
    Segmentation(SegmentationReport),
}

/// What a fine-tuning run gives: `<run>/results.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunResults {
    pub run_dir: PathBuf,
    /// The checkpoint epoch evaluated (best validation score; the last without validation).
    pub selected_epoch: usize,
    /// The initial weights: a file, or `none`.
    pub init: String,
    /// A linear probe (frozen backbone).
    pub fine_tune: bool,
    pub task: Task,
    pub val: Option<SetReport>,
    pub test: Option<SetReport>,
}

impl RunResults {
    /// Reads `<dir>/results.json`; `Ok(None)` when the run has none (pretraining).
    pub fn read(dir: &Path) -> Result<Option<Self>, String> {
        let path = dir.join(RESULTS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The JSON written to `results.json`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("results serialise")
    }
}

/// `selected epoch 7 (best validation accuracy)` and a line per set's report.
impl std::fmt::Display for RunResults {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let by = if self.task == Task::Segmentation { "mean IoU" } else { "accuracy" };
        write!(f, "selected epoch {} (best validation {by})", self.selected_epoch)?;
        for (set, r) in [("val", &self.val), ("test", &self.test)] {
            match r {
                Some(SetReport::Classification(r)) => write!(f, "\n{set}: {r}")?,
                Some(SetReport::Segmentation(r)) => write!(f, "\n{set}: {r}")?,
                None => {}
            }
        }
        Ok(())
    }
}

/// The file a run's training log goes to, one [`LogEntry`] per line (JSON lines).
pub const LOG_FILE: &str = "metrics.jsonl";

/// One line of a run's `metrics.jsonl`: an update's figures, or an evaluation's (told apart by
/// their fields). A non-finite value is written as `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogEntry {
    Update(UpdateRecord),
    Evaluation(EvaluationRecord),
}

/// An optimizer update: where the run is, its loss and learning rate, and how fast it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// Updates taken, this one included.
    pub update: usize,
    pub epoch: usize,
    /// Batches of the epoch consumed.
    pub batch: usize,
    pub lr: f64,
    /// Mean loss of the update's micro-batches (NaN, logged `null`, when it diverged).
    #[serde(with = "nan_as_null")]
    pub loss: f64,
    pub images_per_s: f64,
    /// Share of the update's time spent waiting for batches.
    pub data_wait: f64,
    /// Weight decay, when it follows a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wd: Option<f64>,
    /// Processes of a distributed run, MiB all-reduced per update, and buckets all-reduced
    /// during the backward pass (0: after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allreduce_mib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allreduce_buckets: Option<usize>,
    /// Gradient norm before clipping (when clipping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// The float16 loss scale (under autocast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// Updates dropped so far for a non-finite loss or gradient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_updates: Option<usize>,
    /// The method's own figures (DINO's teacher temperature, BYOL's momentum, …).
    #[serde(flatten)]
    pub method: BTreeMap<String, Option<f64>>,
}

/// An evaluation: `<set>_<metric>` (`val_accuracy`, `test_loss`, `val_knn_accuracy`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationRecord {
    pub update: usize,
    pub epoch: usize,
    #[serde(flatten)]
    pub metrics: BTreeMap<String, Option<f64>>,
}

impl LogEntry {
    /// The update the entry was logged at.
    pub fn update(&self) -> usize {
        match self {
            LogEntry::Update(u) => u.update,
            LogEntry::Evaluation(e) => e.update,
        }
    }

    /// The epoch the entry was logged in.
    pub fn epoch(&self) -> usize {
        match self {
            LogEntry::Update(u) => u.epoch,
            LogEntry::Evaluation(e) => e.epoch,
        }
    }

    /// Every finite figure of the entry by its name in the log, `update` and `epoch` included.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m.into_iter().filter_map(|(k, v)| Some((k, v.as_f64()?))).collect(),
            _ => Vec::new(),
        }
    }

    /// The finite figure `name`, if the entry has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.scalars().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// Reads a run's log (`dir/metrics.jsonl`); no file is an empty log, and a last line cut short
/// (a run killed while writing it) is left out. Any other line that is not an entry is an error
/// naming the file and line.
pub fn read_log(dir: &Path) -> Result<Vec<LogEntry>, String> {
    let path = dir.join(LOG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let complete =
        if text.ends_with('\n') { text.as_str() } else { text.rsplit_once('\n').map_or("", |(done, _)| done) };
    complete
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1)))
        .collect()
}

/// `f64` fields whose non-finite values are `null` in JSON (as serde_json writes them) and read
/// back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}
