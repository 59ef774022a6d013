//! The records of a run folder that one crate writes (learn) and another reads (report), as one
//! set of types, so that neither can rename a field without the other seeing it.

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
