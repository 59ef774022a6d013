//! Supervised organ classification, the release's pretraining without self-supervision.

use std::path::Path;

use patchtcga_loader::{Batch, Loader};
use patchtcga_model::{load, Classifier, ImportOptions};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::engine::{device, Method, StepOutput};
use crate::{Config, LearnError};

/// Images of a batch's first view on `device`.
pub fn images(batch: &Batch, view: usize, device: Device) -> Tensor {
    let v = &batch.views[view];
    let shape: Vec<i64> = v.shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(&v.data).reshape(shape.as_slice()).to_device(device)
}

/// Backbone + dropout + linear head trained with cross-entropy.
pub struct Supervised {
    vs: nn::VarStore,
    model: Classifier,
    /// `fine_tune`: the backbone is frozen and runs in evaluation mode.
    frozen: bool,
    device: Device,
}

impl Supervised {
    /// The model of `config`, with `pretrained` weights loaded into the backbone if given.
    pub fn new(config: &Config) -> Result<Self, LearnError> {
        let device = device(&config.device)?;
        tch::manual_seed(config.seed as i64);
        let spec = config.backbone_spec()?;
        let vs = nn::VarStore::new(device);
        let model = Classifier::new(&vs.root(), spec, config.num_classes, config.dropout_p);
        let head = spec.head_name();
        if !config.pretrained.is_empty() {
            let r = load(&vs, Path::new(&config.pretrained), head, &ImportOptions::default())?;
            eprintln!("loaded {} tensors from {} (prefix {:?})", r.loaded, config.pretrained, r.prefix);
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
        Ok(Self { vs, model, frozen: config.fine_tune, device })
    }

    fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        let feats = self.model.backbone.forward_t(x, train && !self.frozen);
        self.model.head(&feats, train)
    }
}

impl Method for Supervised {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn step(&mut self, batch: &Batch) -> Result<StepOutput, LearnError> {
        let x = images(batch, 0, self.device);
        let y = Tensor::from_slice(&batch.labels).to_device(self.device);
        let logits = self.logits(&x, true);
        let loss = logits.to_kind(Kind::Float).cross_entropy_for_logits(&y);
        let acc = logits.argmax(-1, false).eq_tensor(&y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        Ok(StepOutput { loss, metrics: vec![("accuracy".into(), acc)] })
    }

    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        let (mut loss, mut correct, mut n) = (0.0, 0i64, 0i64);
        for batch in loader.epoch(0) {
            let batch = batch?;
            let x = images(&batch, 0, self.device);
            let y = Tensor::from_slice(&batch.labels).to_device(self.device);
            let logits = tch::no_grad(|| self.logits(&x, false)).to_kind(Kind::Float);
            let b = batch.labels.len() as i64;
            loss += logits.cross_entropy_for_logits(&y).double_value(&[]) * b as f64;
            correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
            n += b;
        }
        let n = n.max(1) as f64;
        Ok(vec![("loss".into(), loss / n), ("accuracy".into(), correct as f64 / n)])
    }
}
