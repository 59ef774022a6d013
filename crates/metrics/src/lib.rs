//! The metrics of the release's benchmarks. Classification: accuracy, balanced accuracy, ROC-AUC,
//! F1 and the confusion matrix, with a bootstrap interval on accuracy. Segmentation: per-class
//! true/false positives and false negatives summed over a whole set, then the original's micro
//! and macro IoU and Dice and mean pixel accuracy.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub mod mil;
pub mod run;
pub mod slide_probe;

/// Counts of (true class, predicted class) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// `counts[truth][predicted]`.
    pub counts: Vec<Vec<u64>>,
}

impl Confusion {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self { counts: vec![vec![0; classes]; classes] }
    }

    /// Counts `truth`/`predicted` pairs; class ids must be below `classes`.
    pub fn from_pairs(classes: usize, truth: &[usize], predicted: &[usize]) -> Self {
        let mut c = Self::new(classes);
        for (&t, &p) in truth.iter().zip(predicted) {
            c.counts[t][p] += 1;
        }
        c
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Share of samples predicted right.
    pub fn accuracy(&self) -> f64 {
        let right: u64 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        right as f64 / self.total() as f64
    }

    /// Recall of each class present in the truth (`None` for an absent class).
    pub fn recalls(&self) -> Vec<Option<f64>> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let n: u64 = row.iter().sum();
                (n > 0).then(|| row[i] as f64 / n as f64)
            })
            .collect()
    }

    /// Mean recall over the classes present (scikit-learn's `balanced_accuracy_score`).
    pub fn balanced_accuracy(&self) -> f64 {
        let r: Vec<f64> = self.recalls().into_iter().flatten().collect();
        r.iter().sum::<f64>() / r.len() as f64
    }

    /// F1 of one class: 2·TP / (2·TP + FP + FN); 0 when the class is neither true nor predicted.
    pub fn f1(&self, class: usize) -> f64 {
        let tp = self.counts[class][class];
        let fp: u64 = self.counts.iter().map(|row| row[class]).sum::<u64>() - tp;
        let fn_: u64 = self.counts[class].iter().sum::<u64>() - tp;
        let d = 2 * tp + fp + fn_;
        if d == 0 {
            0.0
        } else {
            2.0 * tp as f64 / d as f64
        }
    }

    /// The F1 a benchmark reports: of the positive class (1) for two classes, else the mean over
    /// classes (macro).
    pub fn f1_score(&self) -> f64 {
        let k = self.counts.len();
        if k == 2 {
            self.f1(1)
        } else {
            (0..k).map(|c| self.f1(c)).sum::<f64>() / k as f64
        }
    }
}

/// Area under the ROC curve of `scores` for `positive` samples (the Mann–Whitney statistic, ties
/// counting one half); `None` without both positives and negatives.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mid-ranks (1-based) over tied runs.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&k| positive[k]).count() as f64 * mid;
        i = j + 1;
    }
    let p = positive.iter().filter(|&&x| x).count() as f64;
    let n = positive.len() as f64 - p;
    (p > 0.0 && n > 0.0).then(|| (rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// ROC-AUC of class probabilities `probs` (N rows of `classes`): of class 1 for two classes,
/// else the mean of one-vs-rest AUCs over the classes present (scikit-learn's `ovr` macro).
pub fn roc_auc_of(probs: &[f32], labels: &[usize], classes: usize) -> Option<f64> {
    let of = |c: usize| {
        let s: Vec<f64> = probs.chunks(classes).map(|row| row[c] as f64).collect();
        let y: Vec<bool> = labels.iter().map(|&l| l == c).collect();
        roc_auc(&s, &y)
    };
    if classes == 2 {
        return of(1);
    }
    let aucs: Vec<f64> = (0..classes).filter_map(of).collect();
    (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
}

/// A 95 % percentile bootstrap interval of accuracy from per-sample correctness: `resamples`
/// draws with replacement, seeded.
pub fn bootstrap_accuracy(correct: &[bool], resamples: usize, seed: u64) -> [f64; 2] {
    let n = correct.len();
    if n == 0 {
        return [f64::NAN, f64::NAN];
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut accs: Vec<f64> =
        (0..resamples).map(|_| (0..n).filter(|_| correct[rng.gen_range(0..n)]).count() as f64 / n as f64).collect();
    accs.sort_by(f64::total_cmp);
    let at = |q: f64| accs[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    [at(0.025), at(0.975)]
}

/// The most probable class of each row of `probs` (N rows of `classes`).
pub fn predicted(probs: &[f32], classes: usize) -> Vec<usize> {
    probs.chunks(classes).map(|row| (0..classes).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0)).collect()
}

/// Everything a classification benchmark reports on one set. Read back, only `accuracy` is
/// required (what an earlier version left out reads as zero or empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    #[serde(default)]
    pub samples: usize,
    pub accuracy: f64,
    /// 95 % bootstrap interval of accuracy (1,000 resamples).
    #[serde(default)]
    pub accuracy_ci: [f64; 2],
    #[serde(default)]
    pub balanced_accuracy: f64,
    /// `None` when the set lacks a class.
    pub roc_auc: Option<f64>,
    #[serde(default)]
    pub f1: f64,
    #[serde(default)]
    pub confusion: Confusion,
}

impl ClassificationReport {
    /// The report of class probabilities `probs` (N rows of `classes`) against `labels`: the
    /// prediction is the most probable class.
    pub fn new(probs: &[f32], labels: &[usize], classes: usize) -> Self {
        let predicted = predicted(probs, classes);
        let confusion = Confusion::from_pairs(classes, labels, &predicted);
        let correct: Vec<bool> = labels.iter().zip(&predicted).map(|(a, b)| a == b).collect();
        Self {
            samples: labels.len(),
            accuracy: confusion.accuracy(),
            accuracy_ci: bootstrap_accuracy(&correct, 1000, 0),
            balanced_accuracy: confusion.balanced_accuracy(),
            roc_auc: roc_auc_of(probs, labels, classes),
            f1: confusion.f1_score(),
            confusion,
        }
    }
}

/// Per-class pixel counts summed over a set, as the original evaluation sums them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentationCounts {
    pub tp: Vec<u64>,
    pub fp: Vec<u64>,
    pub fn_: Vec<u64>,
}

/// The original's segmentation metrics. Read back, only `mean_iou` is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationReport {
    /// ΣTP / Σ(TP + FP + FN) over classes.
    #[serde(default)]
    pub micro_iou: f64,
    /// 2ΣTP / (2ΣTP + ΣFP + ΣFN).
    #[serde(default)]
    pub micro_dice: f64,
    /// Mean over classes of TP / (TP + FP + FN).
    pub mean_iou: f64,
    /// Mean over classes of 2TP / (2TP + FP + FN).
    #[serde(default)]
    pub mean_dice: f64,
    /// Mean over classes of TP / (TP + FN).
    #[serde(default)]
    pub mean_pixel_accuracy: f64,
    /// TP / (TP + FP + FN) of each class (`None` for a class absent from truth and prediction).
    #[serde(default)]
    pub per_class_iou: Vec<Option<f64>>,
}

/// `accuracy 91.20 % (95 % CI 90.1–92.3), balanced accuracy 90.80 %, ROC-AUC 0.9712, F1 0.9105, 4000 images`.
impl std::fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let [lo, hi] = self.accuracy_ci;
        write!(
            f,
            "accuracy {:.2} % (95 % CI {:.2}–{:.2}), balanced accuracy {:.2} %, ROC-AUC {}, F1 {:.4}, {} images",
            100.0 * self.accuracy,
            100.0 * lo,
            100.0 * hi,
            100.0 * self.balanced_accuracy,
            optional(self.roc_auc, 4),
            self.f1,
            self.samples
        )
    }
}

/// `mIoU 61.20 %, micro IoU …, mean Dice …, micro Dice …, mean pixel accuracy …; IoU per class 80.1 / – / …`.
impl std::fmt::Display for SegmentationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let per_class: Vec<String> =
            self.per_class_iou.iter().map(|v| v.map_or("–".into(), |v| format!("{:.1}", 100.0 * v))).collect();
        write!(
            f,
            "mIoU {:.2} %, micro IoU {:.2} %, mean Dice {:.2} %, micro Dice {:.2} %, mean pixel accuracy {:.2} %; IoU per class {}",
            100.0 * self.mean_iou,
            100.0 * self.micro_iou,
            100.0 * self.mean_dice,
            100.0 * self.micro_dice,
            100.0 * self.mean_pixel_accuracy,
            per_class.join(" / ")
        )
    }
}

/// A metric that may be undefined (ROC-AUC of a set lacking a class) to `digits` places, or `n/a`.
pub fn optional(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"))
}

impl SegmentationCounts {
    pub fn new(classes: usize) -> Self {
        Self { tp: vec![0; classes], fp: vec![0; classes], fn_: vec![0; classes] }
    }

    /// Adds one mask pair; pixels whose truth is `ignore` do not count. Class ids must be below
    /// the number of classes.
    pub fn add(&mut self, predicted: &[u8], truth: &[u8], ignore: Option<u8>) {
        for (&p, &t) in predicted.iter().zip(truth) {
            if Some(t) == ignore {
                continue;
            }
            if p == t {
                self.tp[t as usize] += 1;
            } else {
                self.fp[p as usize] += 1;
                self.fn_[t as usize] += 1;
            }
        }
    }

    /// Sums another set's counts into these (several workers or ranks).
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in [(&mut self.tp, &other.tp), (&mut self.fp, &other.fp), (&mut self.fn_, &other.fn_)] {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }

    /// The metrics; macro means run over classes present in truth or prediction.
    pub fn report(&self) -> SegmentationReport {
        let k = self.tp.len();
        let ratio = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
        let iou: Vec<Option<f64>> = (0..k).map(|c| ratio(self.tp[c], self.tp[c] + self.fp[c] + self.fn_[c])).collect();
        let dice: Vec<Option<f64>> =
            (0..k).map(|c| ratio(2 * self.tp[c], 2 * self.tp[c] + self.fp[c] + self.fn_[c])).collect();
        let acc: Vec<Option<f64>> = (0..k).map(|c| ratio(self.tp[c], self.tp[c] + self.fn_[c])).collect();
        let mean = |v: &[Option<f64>]| {
            let p: Vec<f64> = v.iter().flatten().copied().collect();
            p.iter().sum::<f64>() / p.len() as f64
        };
        let (tp, fp, fn_): (u64, u64, u64) = (self.tp.iter().sum(), self.fp.iter().sum(), self.fn_.iter().sum());
        SegmentationReport {
            micro_iou: tp as f64 / (tp + fp + fn_) as f64,
            micro_dice: 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64,
            mean_iou: mean(&iou),
            mean_dice: mean(&dice),
            mean_pixel_accuracy: mean(&acc),
            per_class_iou: iou,
        }
    }
}
