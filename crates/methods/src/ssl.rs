//! What every self-supervised method shares: the backbone's var store, the device, the k-NN
//! monitor, and the two views of a batch.

use patchtcga_collective::ProcessGroup;
use patchtcga_engine::data::images;
use patchtcga_engine::shards;
use patchtcga_engine::{Config, LearnError, RunContext};
use patchtcga_loader::{Batch, Loader};
use patchtcga_model::Backbone;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::knn::knn_accuracy;

/// What every self-supervised method shares: a var store with the backbone at its root (upstream
/// names), the device, and the k-NN monitor.
pub(crate) struct Base {
    pub vs: nn::VarStore,
    pub backbone: Backbone,
    pub device: Device,
    /// The distributed run's process group, if any.
    pub group: Option<&'static ProcessGroup>,
    knn: (i64, f64),
    /// What the set-up loaded ([`patchtcga_engine::Method::notes`]).
    pub notes: Vec<String>,
}

impl Base {
    pub fn new(config: &Config, context: &RunContext) -> Result<Self, LearnError> {
        let (device, group) = (context.device, context.group);
        let spec = config.backbone_spec()?;
        let vs = nn::VarStore::new(device);
        let backbone = Backbone::new(&vs.root(), spec);
        let mut notes = Vec::new();
        if let Some(pretrained) = &config.pretrained {
            let r =
                patchtcga_model::load(&vs, pretrained, spec.head_name(), &patchtcga_model::ImportOptions::default())?;
            notes.push(format!("loaded {} tensors from {} (prefix {:?})", r.loaded, pretrained.display(), r.prefix));
        }
        Ok(Self { vs, backbone, device, group, knn: (config.knn_k, config.knn_temperature), notes })
    }

    pub fn dim(&self) -> i64 {
        self.backbone.spec().feature_dim()
    }

    /// k-NN organ accuracy of backbone features on a held-out loader (eval mode).
    pub fn evaluate(&self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        let (mut feats, mut labels) = (Vec::new(), Vec::new());
        for batch in loader.epoch(0) {
            let batch = batch?;
            let x = images(&batch, 0, self.device);
            feats.push(tch::no_grad(|| self.backbone.forward_t(&x, false)));
            labels.extend_from_slice(&batch.labels);
        }
        let f = if feats.is_empty() {
            Tensor::zeros([0, self.dim()], (Kind::Float, self.device))
        } else {
            Tensor::cat(&feats, 0).to_kind(Kind::Float)
        };
        let f = shards::gather_rows(self.group, f)?;
        let labels = Vec::<i64>::try_from(shards::gather_rows(self.group, Tensor::from_slice(&labels))?)?;
        Ok(vec![("knn_accuracy".into(), knn_accuracy(&f, &labels, self.knn.0, self.knn.1))])
    }
}

/// The two views of a batch, concatenated (2B, 3, H, W), so batch norm sees both, as SimCLR does.
pub(crate) fn two_views(batch: &Batch, device: Device) -> Result<Tensor, LearnError> {
    if batch.views.len() < 2 {
        return Err(LearnError::Config("this method needs a recipe with two views".into()));
    }
    Ok(Tensor::cat(&[images(batch, 0, device), images(batch, 1, device)], 0))
}
