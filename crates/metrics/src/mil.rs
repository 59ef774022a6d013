//! The records of a slide-level (MIL) run that one crate writes (learn, `mil_results.json`) and
//! others read (report, `infer --mil`): the network, how the features were made, each fold's
//! results and their mean ± sd.

use serde::{Deserialize, Serialize};

use crate::ClassificationReport;

/// The file a MIL run's results go to, in its run folder.
pub const MIL_RESULTS_FILE: &str = "mil_results.json";

/// Which attention-MIL network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MilArch {
    /// Gated attention, bag loss only.
    #[default]
    Abmil,
    /// CLAM single-branch: ABMIL plus the instance-clustering loss.
    ClamSb,
    /// TransMIL: Nyström-attention Transformer over the bag with PPEG position encoding.
    TransMil,
}

impl std::str::FromStr for MilArch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "abmil" => Ok(Self::Abmil),
            "clam-sb" => Ok(Self::ClamSb),
            "transmil" => Ok(Self::TransMil),
            _ => Err(format!("{s:?}: abmil, clam-sb or transmil")),
        }
    }
}

impl std::fmt::Display for MilArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Abmil => "abmil",
            Self::ClamSb => "clam-sb",
            Self::TransMil => "transmil",
        })
    }
}

/// What the `.h5` records about how its features were made (its attributes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Backbone name.
    pub model: String,
    /// MD5 of the weights file.
    pub weights_md5: String,
    /// Normalisation and input, e.g. `imagenet normalisation, 224 px at 0.5 µm/px`.
    pub preprocessing: String,
}

/// How a folder's features were made, as `patchtcga embed --slides` records it in each file:
/// the provenance and the patches' geometry (what `infer --mil` repeats on a new slide).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSource {
    #[serde(flatten)]
    pub made_by: Provenance,
    pub mpp: f64,
    pub patch_size: u32,
}

/// One fold's outcome on its test slides.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: usize,
    /// The epoch (from 1) whose validation loss was lowest.
    pub selected_epoch: usize,
    pub val_loss: f64,
    pub test: ClassificationReport,
    /// Quadratic-weighted Cohen's kappa (labels taken in class order, as for ISUP grades).
    pub test_kappa: f64,
    pub test_slides: Vec<String>,
    /// The fold's model on the held-out test set (labels with `split` = `test`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOutFold>,
}

/// A fold's model on the held-out test slides.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldOutFold {
    pub report: ClassificationReport,
    pub kappa: f64,
    /// Class probabilities, slide by slide in the held-out order (N × C, row-major).
    #[serde(default)]
    pub probabilities: Vec<f32>,
}

/// The held-out test set (a benchmark's official one): each fold's model on it, as mean ± sd, and
/// the folds' models together (their class probabilities averaged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldOut {
    pub slides: Vec<String>,
    pub accuracy: MeanSd,
    pub balanced_accuracy: MeanSd,
    pub roc_auc: MeanSd,
    pub kappa: MeanSd,
    pub ensemble: ClassificationReport,
    pub ensemble_kappa: f64,
}

/// Mean and standard deviation over folds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
}

impl MeanSd {
    /// The mean and sample standard deviation (n − 1) of `v` (sd 0 for one value).
    pub fn of(v: &[f64]) -> Self {
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        Self { mean, sd: var.sqrt() }
    }
}

/// A cross-validation's results (`mil_results.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossValidation {
    /// The network the folds' models are (runs from before CLAM-SB are ABMIL).
    #[serde(default)]
    pub arch: MilArch,
    pub classes: Vec<String>,
    /// Feature width the models take.
    pub width: i64,
    /// How the features were made, when their files recorded it (`patchtcga embed --slides`):
    /// what `infer --mil` repeats on a new slide.
    #[serde(default)]
    pub features: Option<FeatureSource>,
    pub folds: Vec<FoldResult>,
    pub accuracy: MeanSd,
    pub balanced_accuracy: MeanSd,
    pub roc_auc: MeanSd,
    pub kappa: MeanSd,
    /// The held-out test set, when the labels named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOut>,
}

impl std::fmt::Display for MeanSd {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{:.3} ± {:.3}", self.mean, self.sd)
    }
}

/// `fold 2: epoch 7 selected (val loss 0.4123); test on 20 slides: accuracy 0.850, …`.
impl std::fmt::Display for FoldResult {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let t = &self.test;
        write!(
            f,
            "fold {}: epoch {} selected (val loss {:.4}); test on {} slides: accuracy {:.3}, balanced accuracy {:.3}, \
             ROC-AUC {}, kappa {:.3}",
            self.fold,
            self.selected_epoch,
            self.val_loss,
            t.samples,
            t.accuracy,
            t.balanced_accuracy,
            crate::optional(t.roc_auc, 3),
            self.test_kappa
        )
    }
}

/// The folds' mean ± sd, and on a second line the held-out test set's, as `mil train` ends.
impl std::fmt::Display for CrossValidation {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} folds: accuracy {}, balanced accuracy {}, ROC-AUC {}, kappa {}",
            self.folds.len(),
            self.accuracy,
            self.balanced_accuracy,
            self.roc_auc,
            self.kappa
        )?;
        if let Some(h) = &self.held_out {
            let e = &h.ensemble;
            write!(
                f,
                "\nheld-out test ({} slides): each fold's model accuracy {}, ROC-AUC {}; the folds' models together: \
                 accuracy {:.3}, balanced accuracy {:.3}, ROC-AUC {}, kappa {:.3}",
                h.slides.len(),
                h.accuracy,
                h.roc_auc,
                e.accuracy,
                e.balanced_accuracy,
                crate::optional(e.roc_auc, 3),
                h.ensemble_kappa
            )?;
        }
        Ok(())
    }
}
