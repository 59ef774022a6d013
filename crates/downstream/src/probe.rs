//! Frozen-feature evaluation, as pathology foundation-model benchmarks run it: embeddings of a
//! benchmark's splits (from `patchtcga embed`), then a logistic-regression probe and a k-NN
//! classifier on them — seconds per checkpoint instead of a fine-tuning run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use patchtcga_dataset::{Index, Split};
use patchtcga_metrics::{predicted, ClassificationReport};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use patchtcga_engine::data::set_indices;
use patchtcga_engine::LearnError;
use patchtcga_methods::knn::knn_votes;
use patchtcga_methods::loss::l2_normalize;

/// The embedded train, val and test sets of a dataset (`None` for an empty one): the rows of
/// `features` (an `.npy` from `patchtcga embed`, its rows named by the `.csv` beside it) picked in
/// the order of the split's sets (`split` file and `trial`, as training takes them), each with
/// its image's class. An image of a set without a row is an error naming it.
pub fn embedded_sets(
    index: &Index,
    features: &Path,
    split: &str,
    trial: usize,
) -> Result<[Option<Features>; 3], LearnError> {
    let bad = |path: &Path, cause: String| LearnError::Config(format!("{}: {cause}", path.display()));
    let feats = Tensor::read_npy(features).map_err(|e| bad(features, format!("cannot read features: {e}")))?;
    let csv_path = features.with_extension("csv");
    let mut reader = csv::Reader::from_path(&csv_path).map_err(|e| bad(&csv_path, e.to_string()))?;
    let rows: Vec<PathBuf> = reader
        .records()
        .map(|r| r.map(|r| PathBuf::from(r.get(1).unwrap_or_default())))
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&csv_path, e.to_string()))?;
    if rows.len() as i64 != feats.size()[0] {
        return Err(bad(&csv_path, format!("{} rows for {} feature vectors", rows.len(), feats.size()[0])));
    }
    let row_of: HashMap<&Path, i64> = rows.iter().enumerate().map(|(i, p)| (p.as_path(), i as i64)).collect();
    let sets = set_indices(index, split, trial)?;
    let mut out: [Option<Features>; 3] = [None, None, None];
    for (k, set) in sets.iter().enumerate() {
        let Some(idx) = set else { continue };
        let (mut pick, mut labels) = (Vec::with_capacity(idx.len()), Vec::with_capacity(idx.len()));
        for &i in idx {
            let e = &index.entries[i as usize];
            let row = row_of.get(e.path.as_path()).ok_or_else(|| {
                let cause =
                    format!("no features for {} ({} set); embed the whole dataset", e.path.display(), Split::ALL[k]);
                bad(features, cause)
            })?;
            pick.push(*row);
            labels.push(e.label as usize);
        }
        out[k] = Some(Features { x: feats.index_select(0, &Tensor::from_slice(&pick)), labels });
    }
    Ok(out)
}

/// What `patchtcga probe` evaluates: a dataset's embedded splits, and the k-NN classifier's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeOptions {
    /// The dataset the features were computed on (`patchtcga embed --images DIR`).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Features from `patchtcga embed` (`.npy`, rows named in the `.csv` beside it).
    #[arg(long)]
    pub features: PathBuf,
    /// Split file relative to the dataset (default: the split folders of PCam200/segPANDA200).
    #[arg(long, default_value = "")]
    pub split: String,
    /// Trial of the split file.
    #[arg(long, default_value_t = 0)]
    pub trial: usize,
    /// Neighbours of the k-NN classifier.
    #[arg(long, default_value_t = 20)]
    pub k: i64,
    /// Temperature of the k-NN classifier's votes.
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f64,
}

/// The probes' reports on the val and test sets (a set the split lacks is left out).
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub features: PathBuf,
    pub classes: usize,
    /// Training images.
    pub train: usize,
    /// The logistic regression's weight decay, selected on val.
    pub weight_decay: f64,
    pub k: i64,
    pub temperature: f64,
    /// (classifier, set, report) for `linear` and `knn` on `val` and `test`.
    pub reports: Vec<(String, Split, ClassificationReport)>,
}

/// Fits the logistic-regression probe (weight decay selected on val) and runs the k-NN classifier
/// on the embedded train set, and reports both on val and test.
pub fn probe(o: &ProbeOptions) -> Result<ProbeReport, LearnError> {
    let index = Index::scan(&o.dataset, None)?;
    let classes = index.entries.iter().map(|e| e.label as usize).max().unwrap_or(0) + 1;
    let [train, val, test] = embedded_sets(&index, &o.features, &o.split, o.trial)?;
    let train = train.ok_or_else(|| LearnError::Config("the split's train set is empty".into()))?;
    let linear = LinearProbe::select(&train, val.as_ref(), classes);
    let mut reports = Vec::new();
    for (set, f) in [(Split::Val, &val), (Split::Test, &test)] {
        let Some(f) = f else { continue };
        let knn = knn_probs(&train, &f.x, classes, o.k, o.temperature);
        for (name, probs) in [("linear", linear.probs(&f.x)), ("knn", knn)] {
            reports.push((name.into(), set, ClassificationReport::new(&probs, &f.labels, classes)));
        }
    }
    Ok(ProbeReport {
        features: o.features.clone(),
        classes,
        train: train.labels.len(),
        weight_decay: linear.weight_decay,
        k: o.k,
        temperature: o.temperature,
        reports,
    })
}

impl ProbeReport {
    /// The reports as JSON: `features`, `classes`, `train`, and per classifier (`linear` with its
    /// `weight_decay`, `knn` with `k` and `temperature`) a report per set.
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({"features": self.features, "classes": self.classes, "train": self.train,
            "linear": {"weight_decay": self.weight_decay}, "knn": {"k": self.k, "temperature": self.temperature}});
        for (name, set, r) in &self.reports {
            json[name][set.name()] = serde_json::to_value(r).expect("a report is JSON");
        }
        json
    }
}

/// A Markdown table: classifier, set, images, accuracy (95 % CI), balanced accuracy, ROC-AUC, F1.
impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        writeln!(f, "| classifier | set | images | accuracy (95 % CI) | balanced accuracy | ROC-AUC | F1 |")?;
        write!(f, "|---|---|---|---|---|---|---|")?;
        for (name, set, r) in &self.reports {
            write!(
                f,
                "\n| {name} | {set} | {} | {:.2} % ({:.2}–{:.2}) | {:.2} % | {} | {:.4} |",
                r.samples,
                100.0 * r.accuracy,
                100.0 * r.accuracy_ci[0],
                100.0 * r.accuracy_ci[1],
                100.0 * r.balanced_accuracy,
                patchtcga_metrics::optional(r.roc_auc, 4),
                r.f1
            )?;
        }
        Ok(())
    }
}

/// Features (N, D) of one set and their class ids.
pub struct Features {
    pub x: Tensor,
    pub labels: Vec<usize>,
}

impl Features {
    fn targets(&self) -> Tensor {
        Tensor::from_slice(&self.labels.iter().map(|&l| l as i64).collect::<Vec<_>>())
    }
}

/// Multinomial logistic regression on features standardised with the training set's mean and
/// deviation, with an L2 penalty on the weights.
pub struct LinearProbe {
    mean: Tensor,
    std: Tensor,
    weight: Tensor,
    bias: Tensor,
    /// The L2 strength it was fitted with.
    pub weight_decay: f64,
}

/// The L2 strengths [`LinearProbe::select`] tries.
pub const WEIGHT_DECAYS: [f64; 5] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

impl LinearProbe {
    /// Fits by full-batch Adam (500 steps from zero weights: deterministic).
    pub fn fit(train: &Features, classes: usize, weight_decay: f64) -> Self {
        let x = train.x.to_kind(Kind::Float).to_device(Device::Cpu);
        let mean = x.mean_dim([0].as_slice(), true, Kind::Float);
        let std = x.std_dim([0].as_slice(), false, true).clamp_min(1e-6);
        let x = (&x - &mean) / &std;
        let y = train.targets();
        let vs = nn::VarStore::new(Device::Cpu);
        let d = x.size()[1];
        let weight = vs.root().zeros("weight", &[d, classes as i64]);
        let bias = vs.root().zeros("bias", &[classes as i64]);
        let mut opt = nn::Adam::default().build(&vs, 0.01).expect("adam");
        for _ in 0..500 {
            let logits = x.matmul(&weight) + &bias;
            let loss = logits.cross_entropy_for_logits(&y) + weight.square().sum(Kind::Float) * (weight_decay / 2.0);
            opt.backward_step(&loss);
        }
        Self { mean, std, weight: weight.detach(), bias: bias.detach(), weight_decay }
    }

    /// Fits with each of [`WEIGHT_DECAYS`] and keeps the most accurate on `val` (the earliest
    /// of equals); without validation, 1e-4.
    pub fn select(train: &Features, val: Option<&Features>, classes: usize) -> Self {
        let Some(val) = val else { return Self::fit(train, classes, 1e-4) };
        let mut best: Option<(f64, Self)> = None;
        for wd in WEIGHT_DECAYS {
            let p = Self::fit(train, classes, wd);
            let acc = accuracy(&p.probs(&val.x), &val.labels, classes);
            if best.as_ref().is_none_or(|(a, _)| acc > *a) {
                best = Some((acc, p));
            }
        }
        best.expect("at least one strength").1
    }

    /// Class probabilities of features (N rows of `classes`).
    pub fn probs(&self, x: &Tensor) -> Vec<f32> {
        let x = (x.to_kind(Kind::Float).to_device(Device::Cpu) - &self.mean) / &self.std;
        let p = (x.matmul(&self.weight) + &self.bias).softmax(-1, Kind::Float);
        Vec::<f32>::try_from(p.reshape([-1])).expect("float probabilities")
    }
}

/// Class shares of the `k` most cosine-similar training features of each query (see
/// [`knn_votes`]).
pub fn knn_probs(bank: &Features, query: &Tensor, classes: usize, k: i64, temperature: f64) -> Vec<f32> {
    let b = l2_normalize(&bank.x.to_kind(Kind::Float).to_device(Device::Cpu));
    let q = l2_normalize(&query.to_kind(Kind::Float).to_device(Device::Cpu));
    let votes = knn_votes(&q.matmul(&b.tr()), &bank.targets(), classes as i64, k, temperature);
    let p = &votes / votes.sum_dim_intlist([1].as_slice(), true, Kind::Float);
    Vec::<f32>::try_from(p.reshape([-1])).expect("float shares")
}

fn accuracy(probs: &[f32], labels: &[usize], classes: usize) -> f64 {
    let right = predicted(probs, classes).iter().zip(labels).filter(|(p, l)| p == l).count();
    right as f64 / labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian clusters in 16 dimensions, at ±4 on the first axis.
    fn clusters(n: i64, seed: i64) -> Features {
        tch::manual_seed(seed);
        let x = Tensor::randn([n, 16], (Kind::Float, Device::Cpu));
        let labels: Vec<usize> = (0..n as usize).map(|i| i % 2).collect();
        let shift = Tensor::from_slice(&labels.iter().map(|&l| (l as f32 * 2.0 - 1.0) * 4.0).collect::<Vec<_>>());
        let _ = x.select(1, 0).g_add_(&shift);
        Features { x, labels }
    }

    #[test]
    fn linear_probe_and_knn_separate_clusters_and_not_noise() {
        let (train, val, test) = (clusters(200, 1), clusters(60, 2), clusters(60, 3));
        let p = LinearProbe::select(&train, Some(&val), 2);
        assert!(WEIGHT_DECAYS.contains(&p.weight_decay));
        assert!(accuracy(&p.probs(&test.x), &test.labels, 2) > 0.95);
        let knn = knn_probs(&train, &test.x, 2, 20, 0.07);
        assert!(accuracy(&knn, &test.labels, 2) > 0.95);
        assert!(knn.chunks(2).all(|r| (r[0] + r[1] - 1.0).abs() < 1e-5), "shares sum to one");

        // Labels unrelated to the features: near chance on new samples.
        let shuffled = Features { x: train.x.shallow_clone(), labels: (0..200).map(|i| (i / 2) % 2).collect() };
        let noise_test = Features { x: test.x.shallow_clone(), labels: (0..60).map(|i| (i / 2) % 2).collect() };
        let p = LinearProbe::fit(&shuffled, 2, 1e-2);
        assert!(accuracy(&p.probs(&noise_test.x), &noise_test.labels, 2) < 0.75);
    }
}
