//! k-fold cross-validation of ABMIL, CLAM-SB or TransMIL by case: folds stratified by label, each fold the test set once
//! with the next one as validation, the epoch of best validation loss selected, and slide-level
//! accuracy, balanced accuracy, ROC-AUC, quadratic-weighted kappa per fold and as mean ± sd.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use patchtcga_metrics::mil::{CrossValidation, FoldResult, HeldOut, HeldOutFold, MeanSd};
use patchtcga_metrics::ClassificationReport;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tch::nn;
use tch::{Device, Kind, Tensor};

use crate::bags::{Bag, Bags};
use crate::checkpoint::{self, Best};
use crate::model::{bag_loss, InstanceCriterion, MilArch, MilNet};
use patchtcga_engine::config::Optim;
use patchtcga_engine::optim::{Optimizer, Rule};
use patchtcga_engine::schedule::Schedule;
use patchtcga_engine::LearnError;

/// How a cross-validation trains (the flags of `patchtcga mil train`).
#[derive(Debug, Clone, clap::Args)]
pub struct MilOptions {
    /// The network: abmil (gated attention), clam-sb (plus CLAM's instance-clustering loss: k 8,
    /// bag weight 0.7, subtyping for more than two classes) or transmil (Nyström-attention
    /// Transformer with PPEG).
    #[arg(long = "model", value_name = "MODEL", default_value_t = MilArch::Abmil)]
    pub arch: MilArch,
    /// CLAM-SB's instance classifiers' loss: ce (cross-entropy) or svm (the smooth top-1 SVM,
    /// CLAM's `--inst_loss svm`).
    #[arg(long = "inst-loss", value_name = "LOSS", default_value_t = InstanceCriterion::CrossEntropy)]
    pub instance_criterion: InstanceCriterion,
    /// Folds of the cross-validation (by case).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Most epochs per fold.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// The optimizer: adam (CLAM's), adamw, sgd (momentum 0.9) or lars.
    #[arg(long, default_value = "adam")]
    pub optim: Optim,
    /// Peak learning rate (CLAM's 2e-4).
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// The learning rate over the updates: constant (CLAM's), or cosine (a linear warm-up over
    /// --warmup-epochs, then a cosine decay to 0 at the last epoch).
    #[arg(long, value_enum, default_value_t = LrSchedule::Constant)]
    pub schedule: LrSchedule,
    /// Epochs of linear warm-up before the cosine decay.
    #[arg(long, default_value_t = 0)]
    pub warmup_epochs: usize,
    /// Weight decay (L2 for adam and sgd, decoupled for adamw).
    #[arg(long, default_value_t = 1e-5)]
    pub weight_decay: f64,
    /// Seed of the folds, the initial weights and the slide order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weigh each class's loss by the inverse of its share of the training slides.
    #[arg(long = "no-class-weights", action = clap::ArgAction::SetFalse,
          help = "Do not weigh each class's loss by the inverse of its share of the training slides")]
    pub class_weights: bool,
    /// Stop a fold once this many epochs in a row have not lowered its validation loss (CLAM's
    /// early stopping uses 20); the epoch of lowest loss is kept either way.
    #[arg(long)]
    pub patience: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = patchtcga_engine::device::parse_device)]
    pub device: Device,
}

/// How the learning rate moves over a fold's updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LrSchedule {
    Constant,
    Cosine,
}

impl MilOptions {
    /// The learning rate of update `u` (from 0) of a fold training on `bags` slides an epoch.
    pub fn lr_at(&self, u: usize, bags: usize) -> f64 {
        match self.schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let s =
                    Schedule { peak: self.lr, cold: 0, warmup: self.warmup_epochs * bags, total: self.epochs * bags };
                s.lr(u)
            }
        }
    }
}

/// Assigns cases to `k` folds, stratified by label: each class's cases shuffled (seeded) and dealt
/// round-robin, continuing where the previous class stopped. `items` are (case, label index)
/// pairs (one per slide); the fold of each comes back in their order. A class with fewer cases
/// than folds, or a case with slides of two labels, is refused.
pub fn assign_folds(
    items: &[(&str, usize)],
    classes: &[String],
    k: usize,
    seed: u64,
) -> Result<Vec<usize>, LearnError> {
    let mut case_label: BTreeMap<&str, usize> = BTreeMap::new();
    for &(case, label) in items {
        let l = *case_label.entry(case).or_insert(label);
        if l != label {
            return Err(LearnError::Config(format!(
                "case {case} has slides of two labels ({} and {}); cross-validation splits by case",
                classes[l], classes[label]
            )));
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut fold_of: BTreeMap<&str, usize> = BTreeMap::new();
    let mut next = 0;
    for (c, name) in classes.iter().enumerate() {
        let mut cases: Vec<&str> = case_label.iter().filter(|(_, &l)| l == c).map(|(k, _)| *k).collect();
        if cases.len() < k {
            return Err(LearnError::Config(format!(
                "class {name:?} has {} case(s), fewer than the {k} folds (use --folds {} or label more cases)",
                cases.len(),
                cases.len().max(2)
            )));
        }
        cases.shuffle(&mut rng);
        for case in cases {
            fold_of.insert(case, next % k);
            next += 1;
        }
    }
    Ok(items.iter().map(|(case, _)| fold_of[case]).collect())
}

/// Quadratic-weighted Cohen's kappa of predicted against true class indices.
pub fn quadratic_kappa(truth: &[usize], predicted: &[usize], classes: usize) -> f64 {
    let n = truth.len() as f64;
    if n == 0.0 || classes < 2 {
        return 0.0;
    }
    let mut observed = vec![vec![0.0; classes]; classes];
    let (mut rows, mut cols) = (vec![0.0; classes], vec![0.0; classes]);
    for (&t, &p) in truth.iter().zip(predicted) {
        observed[t][p] += 1.0;
        rows[t] += 1.0;
        cols[p] += 1.0;
    }
    let w = |i: usize, j: usize| ((i as f64 - j as f64) / (classes as f64 - 1.0)).powi(2);
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..classes {
        for j in 0..classes {
            num += w(i, j) * observed[i][j];
            den += w(i, j) * rows[i] * cols[j] / n;
        }
    }
    if den == 0.0 {
        1.0
    } else {
        1.0 - num / den
    }
}

/// Class probabilities (N × C, row-major) and mean loss of a model over bags (evaluation mode,
/// every instance: bags are never subsampled here).
fn predict(model: &MilNet, bags: &[&Bag], weights: &Tensor, device: Device) -> (Vec<f32>, f64) {
    tch::no_grad(|| {
        let (mut probs, mut loss) = (Vec::new(), 0.0);
        for b in bags {
            let (logits, _) = model.predict(&b.features.to_device(device), false);
            loss += bag_loss(&logits, b.label as i64, &weights.get(b.label as i64)).double_value(&[]);
            probs.extend(
                Vec::<f32>::try_from(logits.softmax(-1, Kind::Float).reshape([-1]).to_device(Device::Cpu))
                    .unwrap_or_default(),
            );
        }
        (probs, loss / bags.len().max(1) as f64)
    })
}

/// Inverse-frequency class weights over the training bags (ones when off).
fn class_weights(train: &[&Bag], classes: usize, on: bool) -> Tensor {
    let mut counts = vec![0.0f32; classes];
    for b in train {
        counts[b.label] += 1.0;
    }
    let total: f32 = counts.iter().sum();
    let w: Vec<f32> = counts.iter().map(|&c| if on && c > 0.0 { total / (classes as f32 * c) } else { 1.0 }).collect();
    Tensor::from_slice(&w)
}

/// What keeps a cross-validation's work between runs: the folds an earlier run finished, where a
/// fold's training keeps its place after each epoch, and each fold's result as it finishes. The
/// defaults keep nothing ([`Unkept`]).
pub trait FoldStore {
    /// The result of fold `k`, if an earlier run finished it (the fold is then not trained).
    fn finished(&self, _k: usize) -> Option<FoldResult> {
        None
    }
    /// Where fold `k` checkpoints after every epoch (and resumes from, when the file is there).
    fn checkpoint(&self, _k: usize) -> Option<PathBuf> {
        None
    }
    /// Fold `k` finished `epoch` (its checkpoint written); an error stops the run there.
    fn epoch_done(&mut self, _k: usize, _epoch: usize, _losses: EpochLosses) -> Result<(), LearnError> {
        Ok(())
    }
    /// A fold finished, with the parameters of its selected epoch.
    fn finish(&mut self, _result: &FoldResult, _vs: &nn::VarStore) -> Result<(), LearnError> {
        Ok(())
    }
}

/// An epoch's mean training loss (over its bags, as trained) and validation loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochLosses {
    pub train: f64,
    pub val: f64,
}

/// Keeps nothing: every fold trains from its start.
pub struct Unkept;

impl FoldStore for Unkept {}

/// Trains the network on `train` (one fold; `fold` varies the seed): Adam over `epochs` passes of the
/// training bags (one bag per step, shuffled), keeping the weights of the epoch of lowest loss
/// on `val` (and stopping early once `patience` epochs have not lowered it). Each epoch's randomness (dropout) is seeded by the fold and the epoch, so a fold
/// resumed from its checkpoint trains on as it would have. Returns the model, its parameters,
/// the epoch kept and its validation loss.
pub fn fit(
    data: &Bags,
    train: &[&Bag],
    val: &[&Bag],
    o: &MilOptions,
    fold: usize,
    store: &mut dyn FoldStore,
) -> Result<(MilNet, nn::VarStore, usize, f64), LearnError> {
    let seed = |epoch: usize| o.seed.wrapping_add(fold as u64 * 1000 + 17).wrapping_add(epoch as u64 * 7919) as i64;
    tch::manual_seed(seed(0));
    let classes = data.classes.len();
    let vs = nn::VarStore::new(o.device);
    let model = MilNet::new(&vs.root(), o.arch, data.width, classes as i64).instance_criterion(o.instance_criterion);
    let mut opt =
        Optimizer::new(Rule::new(o.optim, 0.9, [0.9, 0.999]), o.weight_decay, vs.variables().into_iter().collect());
    let weights = class_weights(train, classes, o.class_weights).to_device(o.device);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(o.seed ^ ((fold as u64 + 1) * 0x9E37_79B9));
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut best = Best::none();
    let path = store.checkpoint(fold);
    let mut done = 0;
    if let Some(path) = path.as_deref().filter(|p| p.is_file()) {
        done = checkpoint::restore(path, &vs, &mut opt, &mut best)?;
        (0..done).for_each(|_| order.shuffle(&mut rng));
    }
    for epoch in done + 1..=o.epochs {
        if o.patience.is_some_and(|p| best.epoch > 0 && epoch - 1 - best.epoch >= p) {
            break;
        }
        tch::manual_seed(seed(epoch));
        order.shuffle(&mut rng);
        // Summed on the device: one read back an epoch, not a synchronisation per bag.
        let mut loss_sum = Tensor::zeros([], (Kind::Double, o.device));
        for (step, &i) in order.iter().enumerate() {
            let b = train[i];
            let loss =
                model.training_loss(&b.features.to_device(o.device), b.label as i64, &weights.get(b.label as i64));
            opt.zero_grad();
            loss.backward();
            opt.step(o.lr_at((epoch - 1) * train.len() + step, train.len()));
            loss_sum += loss.detach().to_kind(Kind::Double);
        }
        let train_loss = loss_sum.double_value(&[]) / train.len().max(1) as f64;
        let (_, val_loss) = predict(&model, val, &weights, o.device);
        best.offer(epoch, val_loss, &vs);
        if let Some(path) = &path {
            checkpoint::save(path, epoch, &vs, &opt, &best)?;
        }
        store.epoch_done(fold, epoch, EpochLosses { train: train_loss, val: val_loss })?;
    }
    if best.epoch == 0 {
        return Err(LearnError::Config(format!(
            "fold {fold}: no epoch gave a finite validation loss (epochs {}; lower --lr?)",
            o.epochs
        )));
    }
    patchtcga_engine::checkpoint::copy_variables(&vs, &best.parameters).map_err(LearnError::Config)?;
    Ok((model, vs, best.epoch, best.loss))
}

/// Runs the k-fold cross-validation, keeping its work in `store`: a fold an earlier run finished
/// is taken as it is, one it checkpointed resumes (folds and epochs are seeded apart, so a
/// resumed run ends as an uninterrupted one).
pub fn cross_validate(data: &Bags, o: &MilOptions, store: &mut dyn FoldStore) -> Result<CrossValidation, LearnError> {
    if o.folds < 3 {
        return Err(LearnError::Config(format!("--folds {}: at least 3 (train, validation and test folds)", o.folds)));
    }
    let (held, pool): (Vec<&Bag>, Vec<&Bag>) = data.bags.iter().partition(|b| b.held_out);
    let cases: Vec<(&str, usize)> = pool.iter().map(|b| (b.case.as_str(), b.label)).collect();
    let fold_of = assign_folds(&cases, &data.classes, o.folds, o.seed)?;
    let classes = data.classes.len();
    let ones = Tensor::ones([classes as i64], (Kind::Float, o.device));
    let mut folds = Vec::with_capacity(o.folds);
    let mut held_probs = Vec::new();
    for k in 0..o.folds {
        if let Some(r) = store.finished(k) {
            held_probs.extend(r.held_out.iter().flat_map(|h| h.probabilities.iter().copied()));
            folds.push(r);
            continue;
        }
        let v = (k + 1) % o.folds;
        let pick = |f: &dyn Fn(usize) -> bool| -> Vec<&Bag> {
            pool.iter().zip(&fold_of).filter(|(_, &g)| f(g)).map(|(b, _)| *b).collect()
        };
        let (test, val, train) = (pick(&|g| g == k), pick(&|g| g == v), pick(&|g| g != k && g != v));
        let (model, vs, selected_epoch, val_loss) = fit(data, &train, &val, o, k, store)?;
        let (report, test_kappa) = evaluate(&model, &test, &ones, o.device, classes, &mut Vec::new());
        let held_out = (!held.is_empty()).then(|| {
            let mut probabilities = Vec::new();
            let (report, kappa) = evaluate(&model, &held, &ones, o.device, classes, &mut probabilities);
            held_probs.extend(&probabilities);
            HeldOutFold { report, kappa, probabilities }
        });
        let result = FoldResult {
            fold: k,
            selected_epoch,
            val_loss,
            test_kappa,
            test: report,
            test_slides: test.iter().map(|b| b.slide.clone()).collect(),
            held_out,
        };
        store.finish(&result, &vs)?;
        folds.push(result);
    }
    let of = |f: &dyn Fn(&FoldResult) -> Option<f64>| MeanSd::of(&folds.iter().filter_map(f).collect::<Vec<_>>());
    let held_out = (!held.is_empty()).then(|| {
        let held_of = |f: &dyn Fn(&HeldOutFold) -> Option<f64>| of(&|r| r.held_out.as_ref().and_then(f));
        let labels: Vec<usize> = held.iter().map(|b| b.label).collect();
        // The folds' probabilities, averaged slide by slide.
        let mean: Vec<f32> = (0..labels.len() * classes)
            .map(|i| (0..o.folds).map(|k| held_probs[k * labels.len() * classes + i]).sum::<f32>() / o.folds as f32)
            .collect();
        let predicted = patchtcga_metrics::predicted(&mean, classes);
        HeldOut {
            slides: held.iter().map(|b| b.slide.clone()).collect(),
            accuracy: held_of(&|h| Some(h.report.accuracy)),
            balanced_accuracy: held_of(&|h| Some(h.report.balanced_accuracy)),
            roc_auc: held_of(&|h| h.report.roc_auc),
            kappa: held_of(&|h| Some(h.kappa)),
            ensemble: ClassificationReport::new(&mean, &labels, classes),
            ensemble_kappa: quadratic_kappa(&labels, &predicted, classes),
        }
    });
    Ok(CrossValidation {
        arch: o.arch,
        classes: data.classes.clone(),
        width: data.width,
        features: data.source.clone(),
        accuracy: of(&|r| Some(r.test.accuracy)),
        balanced_accuracy: of(&|r| Some(r.test.balanced_accuracy)),
        roc_auc: of(&|r| r.test.roc_auc),
        kappa: of(&|r| Some(r.test_kappa)),
        folds,
        held_out,
    })
}

/// A model's report and quadratic kappa on `bags`; their class probabilities are appended to
/// `probs`.
fn evaluate(
    model: &MilNet,
    bags: &[&Bag],
    weights: &Tensor,
    device: Device,
    classes: usize,
    probs: &mut Vec<f32>,
) -> (ClassificationReport, f64) {
    let (p, _) = predict(model, bags, weights, device);
    let labels: Vec<usize> = bags.iter().map(|b| b.label).collect();
    let predicted = patchtcga_metrics::predicted(&p, classes);
    let report = ClassificationReport::new(&p, &labels, classes);
    probs.extend(p);
    (report, quadratic_kappa(&labels, &predicted, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Constant keeps the peak; cosine warms up linearly over its epochs' updates, then decays
    /// to 0 at the last update of the last epoch.
    #[test]
    fn the_learning_rate_follows_the_schedule_over_a_folds_updates() {
        let mut o = MilOptions {
            arch: MilArch::Abmil,
            instance_criterion: InstanceCriterion::CrossEntropy,
            folds: 3,
            epochs: 4,
            optim: Optim::Adam,
            lr: 0.01,
            schedule: LrSchedule::Constant,
            warmup_epochs: 1,
            weight_decay: 0.0,
            seed: 0,
            class_weights: true,
            patience: None,
            device: Device::Cpu,
        };
        assert!((0..40).all(|u| o.lr_at(u, 10) == 0.01));
        o.schedule = LrSchedule::Cosine;
        let lr: Vec<f64> = (0..40).map(|u| o.lr_at(u, 10)).collect();
        assert!((lr[0] - 0.001).abs() < 1e-12 && (lr[9] - 0.01).abs() < 1e-12, "warm-up over epoch 1: {lr:?}");
        assert!(lr[10..].windows(2).all(|w| w[1] < w[0]), "then decreasing: {lr:?}");
        assert!(lr[39] < 1e-4, "to about 0 at the last update: {}", lr[39]);
    }

    #[test]
    fn quadratic_kappa_is_one_when_exact_and_penalises_far_misses_more() {
        assert_eq!(quadratic_kappa(&[0, 1, 2, 3], &[0, 1, 2, 3], 4), 1.0);
        let near = quadratic_kappa(&[0, 1, 2, 3], &[1, 1, 2, 3], 4);
        let far = quadratic_kappa(&[0, 1, 2, 3], &[3, 1, 2, 3], 4);
        assert!(near > far && near < 1.0, "{near} {far}");
        // sklearn's cohen_kappa_score(…, weights="quadratic") formula, computed in NumPy: 0.875.
        assert!((near - 0.875).abs() < 1e-12, "{near}");
    }
}
