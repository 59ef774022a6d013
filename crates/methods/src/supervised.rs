//! Supervised organ classification, the release's pretraining without self-supervision.

use patchtcga_loader::{Batch, Loader};
use patchtcga_model::{load, Classifier, ImportOptions, Spec};
use tch::kind::FLOAT_CPU;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use patchtcga_metrics::{predicted, roc_auc_of, Confusion};

use patchtcga_collective::ProcessGroup;
use patchtcga_engine::data::images;
use patchtcga_engine::shards;
use patchtcga_engine::{Config, LearnError, Method, RunContext, StepOutput};

/// Weight of Inception v3's auxiliary classifier loss (torchvision's reference recipe).
pub const AUX_LOSS_WEIGHT: f64 = 0.4;

/// Backbone + dropout + linear head trained with cross-entropy (plus the auxiliary classifier's,
/// weighted 0.4, for Inception v3).
pub struct Supervised {
    vs: nn::VarStore,
    model: Classifier,
    /// `fine_tune`: the backbone is frozen and runs in evaluation mode.
    frozen: bool,
    device: Device,
    classes: i64,
    /// The distributed run's process group, if any.
    group: Option<&'static ProcessGroup>,
    /// What the set-up loaded ([`Method::notes`]).
    notes: Vec<String>,
}

impl Supervised {
    /// The model of `config`, with `pretrained` weights loaded into the backbone if given.
    pub fn new(config: &Config, context: &RunContext) -> Result<Self, LearnError> {
        let device = context.device;
        let spec = config.backbone_spec()?;
        if let Spec::Inception(c) = spec {
            let (train, eval) = (c.min_side(!config.fine_tune), c.min_side(false));
            if config.image_size < train || config.val_image_size < eval {
                return Err(LearnError::Config(format!(
                    "incv3 takes image_size ≥ {train} (its auxiliary classifier) and val_image_size ≥ {eval}, not {} and {}",
                    config.image_size, config.val_image_size
                )));
            }
        }
        let vs = nn::VarStore::new(device);
        let model = Classifier::new(&vs.root(), spec, config.num_classes, config.dropout_p);
        let head = spec.head_name();
        let mut notes = Vec::new();
        if let Some(pretrained) = &config.pretrained {
            let r = load(&vs, pretrained, head, &ImportOptions::default())?;
            notes.push(format!("loaded {} tensors from {} (prefix {:?})", r.loaded, pretrained.display(), r.prefix));
        }
        let is_head = |n: &str| n.starts_with(head) && n[head.len()..].starts_with('.');
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if config.reset_bn && name.ends_with("running_mean") {
                    let _ = t.zero_();
                }
                if config.reset_bn && name.ends_with("running_var") {
                    let _ = t.fill_(1.0);
                }
                if config.fine_tune && !is_head(&name) {
                    let _ = t.set_requires_grad(false);
                }
            }
        });
        Ok(Self {
            vs,
            model,
            frozen: config.fine_tune,
            device,
            classes: config.num_classes,
            group: context.group,
            notes,
        })
    }

    fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        let feats = self.model.backbone.forward_t(x, train && !self.frozen);
        self.model.head(&feats, train)
    }
}

/// Class probabilities of a set, its labels, and the mean cross-entropy.
pub struct Predictions {
    /// N rows of class probabilities.
    pub probs: Vec<f32>,
    pub labels: Vec<usize>,
    pub loss: f64,
}

impl Supervised {
    /// Evaluation-mode predictions over a loader (its first view).
    pub fn predict(&self, loader: &Loader) -> Result<Predictions, LearnError> {
        let (mut probs, mut labels, mut loss) = (Vec::new(), Vec::new(), 0.0);
        for batch in loader.epoch(0) {
            let batch = batch?;
            let x = images(&batch, 0, self.device);
            let y = Tensor::from_slice(&batch.labels).to_device(self.device);
            let logits = tch::no_grad(|| self.logits(&x, false)).to_kind(Kind::Float);
            loss += logits.cross_entropy_for_logits(&y).double_value(&[]) * batch.labels.len() as f64;
            probs.push(logits.softmax(-1, Kind::Float).to_device(Device::Cpu));
            labels.extend_from_slice(&batch.labels);
        }
        let totals = shards::sum(self.group, &[loss, labels.len() as f64])?;
        let (loss, n) = (totals[0], totals[1]);
        if n == 0.0 {
            return Err(LearnError::Config("an evaluation set has no images".into()));
        }
        // A rank may have no share of a set smaller than the number of ranks.
        let probs = if probs.is_empty() { Tensor::zeros([0, self.classes], FLOAT_CPU) } else { Tensor::cat(&probs, 0) };
        let probs = Vec::<f32>::try_from(shards::gather_rows(self.group, probs)?.reshape([-1]))?;
        let labels = Vec::<i64>::try_from(shards::gather_rows(self.group, Tensor::from_slice(&labels))?)?;
        Ok(Predictions { probs, labels: labels.into_iter().map(|l| l as usize).collect(), loss: loss / n })
    }
}

impl Method for Supervised {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn step(&mut self, batch: &Batch) -> Result<StepOutput, LearnError> {
        let x = images(batch, 0, self.device);
        let y = Tensor::from_slice(&batch.labels).to_device(self.device);
        let (logits, aux) = self.model.forward_with_aux(&x, true, !self.frozen);
        let mut loss = logits.to_kind(Kind::Float).cross_entropy_for_logits(&y);
        if let Some(aux) = aux {
            loss += aux.to_kind(Kind::Float).cross_entropy_for_logits(&y) * AUX_LOSS_WEIGHT;
        }
        let acc = logits.argmax(-1, false).eq_tensor(&y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        Ok(StepOutput { loss, metrics: vec![("accuracy".into(), acc)] })
    }

    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        let p = self.predict(loader)?;
        let classes = self.classes as usize;
        let confusion = Confusion::from_pairs(classes, &p.labels, &predicted(&p.probs, classes));
        let mut out = vec![
            ("loss".into(), p.loss),
            ("accuracy".into(), confusion.accuracy()),
            ("balanced_accuracy".into(), confusion.balanced_accuracy()),
            ("f1".into(), confusion.f1_score()),
        ];
        if let Some(auc) = roc_auc_of(&p.probs, &p.labels, classes) {
            out.push(("roc_auc".into(), auc));
        }
        Ok(out)
    }
    fn selection_key(&self) -> Option<&'static str> {
        Some("val_accuracy")
    }
    fn notes(&self) -> &[String] {
        &self.notes
    }
}
