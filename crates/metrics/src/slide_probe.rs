//! The slide probe's results (`probe --slides`): per fold and as mean ± sd over folds, in the
//! file the report reads beside slide-level runs.

use serde::{Deserialize, Serialize};

use crate::mil::MeanSd;
use crate::ClassificationReport;

/// The probe's results in a run folder (`probe --slides … --out <run>/slide_probe.json`).
pub const SLIDE_PROBE_FILE: &str = "slide_probe.json";

/// One fold's test slides and how the probe did on them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeFold {
    pub test_slides: Vec<String>,
    pub report: ClassificationReport,
    /// Quadratic-weighted Cohen's kappa.
    pub kappa: f64,
}

/// The cross-validated slide probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlideProbeReport {
    /// The slide encoder and the patch encoder under it, as the embeddings record them.
    pub encoder: String,
    pub patch_encoder: String,
    pub classes: Vec<String>,
    pub slides: usize,
    /// Inverse L2 strength (scikit-learn's `C`).
    pub cost: f64,
    pub folds: Vec<ProbeFold>,
    pub balanced_accuracy: MeanSd,
    pub roc_auc: MeanSd,
    pub kappa: MeanSd,
}

/// A Markdown table: one row per fold and the mean ± sd.
impl std::fmt::Display for SlideProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        writeln!(f, "| fold | slides | balanced accuracy | ROC-AUC | quadratic κ |")?;
        writeln!(f, "|---|---|---|---|---|")?;
        for (k, fold) in self.folds.iter().enumerate() {
            let auc = crate::optional(fold.report.roc_auc, 3);
            writeln!(
                f,
                "| {k} | {} | {:.3} | {auc} | {:.3} |",
                fold.report.samples, fold.report.balanced_accuracy, fold.kappa
            )?;
        }
        write!(f, "| mean ± sd | {} | {} | {} | {} |", self.slides, self.balanced_accuracy, self.roc_auc, self.kappa)
    }
}
