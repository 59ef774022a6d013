//! The slide-level linear probe of the slide-encoder papers: L2-penalised multinomial logistic
//! regression on slide embeddings (scikit-learn's `LogisticRegression(C)` objective, fitted to its
//! optimum by L-BFGS), k-fold cross-validated by case, reported as balanced accuracy, ROC-AUC and
//! quadratic-weighted Cohen's kappa (mean ± sd over folds).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use linfa::traits::Fit;
use linfa_logistic::MultiLogisticRegression;
use ndarray16::{Array1, Array2};
use patchtcga_metrics::mil::MeanSd;
use patchtcga_metrics::slide_probe::{ProbeFold, SlideProbeReport};
use patchtcga_metrics::ClassificationReport;

use patchtcga_engine::LearnError;
use patchtcga_mil::bags::read_labels;
use patchtcga_mil::cv::{assign_folds, quadratic_kappa};

use crate::embed::SlideEmbeddings;

/// How the probe is fitted and cross-validated.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct SlideProbeOptions {
    /// Folds of the cross-validation (by case, stratified by label).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Inverse L2 strength, as scikit-learn's `C`.
    #[arg(long, default_value_t = 1.0)]
    pub cost: f64,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A fitted logistic regression.
pub struct LogisticProbe {
    model: linfa_logistic::MultiFittedLogisticRegression<f64, usize>,
    classes: usize,
}

impl LogisticProbe {
    /// Fits rows `x` (N × `width`, row-major) to class ids `y` (every class below `classes`
    /// present) with penalty `1 / cost`.
    pub fn fit(x: &[f32], width: usize, y: &[usize], classes: usize, cost: f64) -> Result<Self, LearnError> {
        let records = rows(x, width)?;
        let dataset = linfa::Dataset::new(records, Array1::from_vec(y.to_vec()));
        let model = MultiLogisticRegression::default()
            .alpha(1.0 / cost)
            .max_iterations(10_000)
            .gradient_tolerance(1e-8)
            .fit(&dataset)
            .map_err(|e| LearnError::Config(format!("logistic regression: {e}")))?;
        if model.classes().len() != classes {
            return Err(LearnError::Config(format!(
                "a training fold holds {} of the {classes} classes",
                model.classes().len()
            )));
        }
        Ok(Self { model, classes })
    }

    /// Class probabilities of rows `x` (N × classes, row-major, classes in id order).
    pub fn probs(&self, x: &[f32], width: usize) -> Result<Vec<f32>, LearnError> {
        let p = self.model.predict_probabilities(&rows(x, width)?);
        let order = self.model.classes();
        let mut out = vec![0f32; p.nrows() * self.classes];
        for (i, row) in p.outer_iter().enumerate() {
            for (j, &c) in order.iter().enumerate() {
                out[i * self.classes + c] = row[j] as f32;
            }
        }
        Ok(out)
    }
}

fn rows(x: &[f32], width: usize) -> Result<Array2<f64>, LearnError> {
    let n = x.len() / width.max(1);
    Array2::from_shape_vec((n, width), x.iter().map(|&v| v as f64).collect())
        .map_err(|e| LearnError::Config(e.to_string()))
}

/// Cross-validates the probe on the labelled slides of `embeddings` (labels CSV as `mil train`
/// reads it: `slide`, `label`, optional `case`). A labelled slide without an embedding is an
/// error naming it; embedded slides without a label are left out.
pub fn probe(
    embeddings: &SlideEmbeddings,
    labels: &Path,
    o: &SlideProbeOptions,
) -> Result<SlideProbeReport, LearnError> {
    if o.folds < 2 {
        return Err(LearnError::Config(format!("--folds {}: at least 2", o.folds)));
    }
    let rows = read_labels(labels)?;
    let row_of: BTreeMap<&str, usize> = embeddings.slides.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let missing: Vec<&str> = rows.iter().map(|r| r.slide.as_str()).filter(|s| !row_of.contains_key(s)).collect();
    if !missing.is_empty() {
        return Err(LearnError::Config(format!(
            "{}: {} labelled slide(s) have no embedding: {}",
            labels.display(),
            missing.len(),
            missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let classes: Vec<String> = rows.iter().map(|r| r.label.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let class_of = |l: &str| classes.iter().position(|c| c == l).expect("a label's class");
    let items: Vec<(&str, usize)> = rows.iter().map(|r| (r.case.as_str(), class_of(&r.label))).collect();
    let fold_of = assign_folds(&items, &classes, o.folds, o.seed)?;
    let d = embeddings.width;
    let take = |pick: &dyn Fn(usize) -> bool| {
        let (mut x, mut y, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for ((r, &(_, label)), &f) in rows.iter().zip(&items).zip(&fold_of) {
            if pick(f) {
                let i = row_of[r.slide.as_str()];
                x.extend_from_slice(&embeddings.features[i * d..(i + 1) * d]);
                y.push(label);
                ids.push(r.slide.clone());
            }
        }
        (x, y, ids)
    };
    let mut folds = Vec::with_capacity(o.folds);
    for k in 0..o.folds {
        let (train_x, train_y, _) = take(&|f| f != k);
        let (test_x, test_y, test_slides) = take(&|f| f == k);
        let fitted = LogisticProbe::fit(&train_x, d, &train_y, classes.len(), o.cost)?;
        let probs = fitted.probs(&test_x, d)?;
        let report = ClassificationReport::new(&probs, &test_y, classes.len());
        let predicted = patchtcga_metrics::predicted(&probs, classes.len());
        let kappa = quadratic_kappa(&test_y, &predicted, classes.len());
        folds.push(ProbeFold { test_slides, report, kappa });
    }
    let of = |f: &dyn Fn(&ProbeFold) -> Option<f64>| MeanSd::of(&folds.iter().filter_map(f).collect::<Vec<_>>());
    Ok(SlideProbeReport {
        encoder: embeddings.encoder.clone(),
        patch_encoder: embeddings.patch_encoder.clone(),
        slides: rows.len(),
        cost: o.cost,
        balanced_accuracy: of(&|f| Some(f.report.balanced_accuracy)),
        roc_auc: of(&|f| f.report.roc_auc),
        kappa: of(&|f| Some(f.kappa)),
        classes,
        folds,
    })
}
