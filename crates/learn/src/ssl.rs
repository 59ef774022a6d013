//! Self-supervised methods, each a composition of a view recipe, the backbone, heads, a loss and
//! a target rule (`crates/learn/src/{heads,loss,target}.rs`), and the k-NN monitor they share.

use patchtcga_loader::{Batch, Loader};
use patchtcga_model::{Arch, Backbone};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::engine::{device, Method, StepOutput};
use crate::heads::{collapse_std, Mlp, MlpSpec};
use crate::loss::{info_nce, l2_normalize, negative_cosine, nt_xent};
use crate::supervised::images;
use crate::target::{cosine_momentum, ema_update, init_targets, Queue, TARGET};
use crate::{Config, LearnError};

/// Leave-one-out k-NN accuracy of `features` (N, D): each sample's label is the vote of its `k`
/// most cosine-similar others, weighted by exp(similarity / `temperature`) (the monitor of
/// InstDisc / DINO).
pub fn knn_accuracy(features: &Tensor, labels: &[i64], k: i64, temperature: f64) -> f64 {
    let n = labels.len() as i64;
    if n < 2 {
        return f64::NAN;
    }
    let f = l2_normalize(&features.to_kind(Kind::Float).to_device(Device::Cpu));
    let mut sim = f.matmul(&f.tr());
    let _ = sim.fill_diagonal_(f64::NEG_INFINITY, false);
    let (top, idx) = sim.topk(k.min(n - 1), -1, true, true);
    let y = Tensor::from_slice(labels);
    let classes = labels.iter().max().copied().unwrap_or(0) + 1;
    let votes = Tensor::zeros([n, classes], (Kind::Float, Device::Cpu));
    let weights = (top / temperature).exp();
    let votes = votes.scatter_add(1, &y.index_select(0, &idx.reshape([-1])).reshape(idx.size()), &weights);
    votes.argmax(-1, false).eq_tensor(&y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
}

/// What every self-supervised method shares: a var store with the backbone at its root (upstream
/// names), the device, and the k-NN monitor.
struct Base {
    vs: nn::VarStore,
    backbone: Backbone,
    device: Device,
    knn: (i64, f64),
}

impl Base {
    fn new(config: &Config) -> Result<Self, LearnError> {
        let device = device(&config.device)?;
        tch::manual_seed(config.seed as i64);
        let spec = config.model_name.parse::<Arch>()?.spec(config.image_size);
        let vs = nn::VarStore::new(device);
        let backbone = Backbone::new(&vs.root(), spec);
        if !config.pretrained.is_empty() {
            let r = patchtcga_model::load(
                &vs,
                std::path::Path::new(&config.pretrained),
                spec.head_name(),
                &patchtcga_model::ImportOptions::default(),
            )?;
            eprintln!("loaded {} tensors from {} (prefix {:?})", r.loaded, config.pretrained, r.prefix);
        }
        Ok(Self { vs, backbone, device, knn: (config.knn_k, config.knn_temperature) })
    }

    fn dim(&self) -> i64 {
        self.backbone.spec().feature_dim()
    }

    /// k-NN organ accuracy of backbone features on a held-out loader (eval mode).
    fn evaluate(&self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        let (mut feats, mut labels) = (Vec::new(), Vec::new());
        for batch in loader.epoch(0) {
            let batch = batch?;
            let x = images(&batch, 0, self.device);
            feats.push(tch::no_grad(|| self.backbone.forward_t(&x, false)));
            labels.extend_from_slice(&batch.labels);
        }
        let f = Tensor::cat(&feats, 0);
        Ok(vec![("knn_accuracy".into(), knn_accuracy(&f, &labels, self.knn.0, self.knn.1))])
    }
}

/// The two views of a batch, concatenated (2B, 3, H, W), so batch norm sees both, as SimCLR does.
fn two_views(batch: &Batch, device: Device) -> Result<Tensor, LearnError> {
    if batch.views.len() < 2 {
        return Err(LearnError::Config("this method needs a recipe with two views".into()));
    }
    Ok(Tensor::cat(&[images(batch, 0, device), images(batch, 1, device)], 0))
}

/// SimCLR: backbone → projector (Linear, BN, ReLU, Linear, BN) → NT-Xent over the batch.
pub struct SimClr {
    base: Base,
    projector: Mlp,
    temperature: f64,
}

impl SimClr {
    pub fn new(config: &Config) -> Result<Self, LearnError> {
        let base = Base::new(config)?;
        let spec = MlpSpec {
            dims: vec![base.dim(), config.proj_hidden_dim, config.proj_dim],
            batch_norm: true,
            last_batch_norm: true,
        };
        let projector = Mlp::new(&(base.vs.root() / "projector"), &spec);
        Ok(Self { base, projector, temperature: config.temperature })
    }
}

impl Method for SimClr {
    fn var_store(&self) -> &nn::VarStore {
        &self.base.vs
    }
    fn step(&mut self, batch: &Batch) -> Result<StepOutput, LearnError> {
        let x = two_views(batch, self.base.device)?;
        let z = self.base.backbone.forward_t(&x, true).apply_t(&self.projector, true);
        let halves = z.chunk(2, 0);
        let loss = nt_xent(&halves[0], &halves[1], self.temperature);
        Ok(StepOutput { loss, metrics: vec![("collapse_std".into(), collapse_std(&halves[0]))] })
    }
    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        self.base.evaluate(loader)
    }
}

/// BYOL as the release trains it: online backbone → projector → predictor regresses the target
/// (`target.*`: backbone → projector, an EMA with momentum from `momentum_base` to 1 on a cosine)
/// with 2 − 2·cos, symmetrised over the two views; optionally a linear organ classifier on the
/// detached online representation.
pub struct Byol {
    base: Base,
    projector: Mlp,
    predictor: Mlp,
    target_backbone: Backbone,
    target_projector: Mlp,
    classifier: Option<nn::Linear>,
    momentum_base: f64,
    momentum: f64,
}

impl Byol {
    pub fn new(config: &Config) -> Result<Self, LearnError> {
        let base = Base::new(config)?;
        let root = base.vs.root();
        let proj = MlpSpec {
            dims: vec![base.dim(), config.proj_hidden_dim, config.proj_dim],
            batch_norm: true,
            last_batch_norm: false,
        };
        let pred = MlpSpec {
            dims: vec![config.proj_dim, config.pred_hidden_dim, config.proj_dim],
            batch_norm: true,
            last_batch_norm: false,
        };
        let projector = Mlp::new(&(&root / "projector"), &proj);
        let predictor = Mlp::new(&(&root / "predictor"), &pred);
        let target = root.sub(TARGET.trim_end_matches('.'));
        let target_backbone = Backbone::new(&target, base.backbone.spec());
        let target_projector = Mlp::new(&(&target / "projector"), &proj);
        let classifier = config
            .organ_classifier
            .then(|| nn::linear(&root / "classifier", base.dim(), config.num_classes, Default::default()));
        init_targets(&base.vs);
        let m = config.momentum_base;
        Ok(Self {
            base,
            projector,
            predictor,
            target_backbone,
            target_projector,
            classifier,
            momentum_base: m,
            momentum: m,
        })
    }
}

impl Method for Byol {
    fn var_store(&self) -> &nn::VarStore {
        &self.base.vs
    }
    fn step(&mut self, batch: &Batch) -> Result<StepOutput, LearnError> {
        let x = two_views(batch, self.base.device)?;
        let h = self.base.backbone.forward_t(&x, true);
        let z = h.apply_t(&self.projector, true);
        let p = z.apply_t(&self.predictor, true).chunk(2, 0);
        let t =
            tch::no_grad(|| self.target_backbone.forward_t(&x, true).apply_t(&self.target_projector, true)).chunk(2, 0);
        let mut loss = negative_cosine(&p[0], &t[1]) + negative_cosine(&p[1], &t[0]);
        let mut metrics = vec![("momentum".into(), self.momentum), ("collapse_std".into(), collapse_std(&z))];
        if let Some(c) = &self.classifier {
            let y = Tensor::from_slice(&batch.labels).to_device(self.base.device);
            let y = Tensor::cat(&[&y, &y], 0);
            let logits = h.detach().apply(c);
            loss += logits.cross_entropy_for_logits(&y);
            let acc = logits.argmax(-1, false).eq_tensor(&y).to_kind(Kind::Float).mean(Kind::Float);
            metrics.push(("accuracy".into(), acc.double_value(&[])));
        }
        Ok(StepOutput { loss, metrics })
    }
    fn after_update(&mut self, progress: f64) {
        ema_update(&self.base.vs, self.momentum);
        self.momentum = cosine_momentum(self.momentum_base, progress);
    }
    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        self.base.evaluate(loader)
    }
}

/// MoCo v2: query encoder (backbone → MLP head) against keys from its momentum copy
/// (`target.*`, constant momentum `momentum_base`) and a queue of past keys, with InfoNCE.
/// Keys are encoded with the batch shuffled, as MoCo's shuffle-BN does across GPUs; on one
/// device batch norm still sees the whole batch (the leak guard proper comes with multi-GPU
/// training).
pub struct MocoV2 {
    base: Base,
    head: Mlp,
    target_backbone: Backbone,
    target_head: Mlp,
    queue: Queue,
    temperature: f64,
    momentum: f64,
}

impl MocoV2 {
    pub fn new(config: &Config) -> Result<Self, LearnError> {
        if config.queue_size % config.batch_size as i64 != 0 {
            return Err(LearnError::Config(format!(
                "queue_size {} must be a multiple of batch_size {}",
                config.queue_size, config.batch_size
            )));
        }
        let base = Base::new(config)?;
        let root = base.vs.root();
        let spec = MlpSpec {
            dims: vec![base.dim(), config.proj_hidden_dim, config.proj_dim],
            batch_norm: false,
            last_batch_norm: false,
        };
        let head = Mlp::new(&(&root / "projector"), &spec);
        let target = root.sub(TARGET.trim_end_matches('.'));
        let target_backbone = Backbone::new(&target, base.backbone.spec());
        let target_head = Mlp::new(&(&target / "projector"), &spec);
        let queue = Queue::new(&target, config.queue_size, config.proj_dim);
        init_targets(&base.vs);
        Ok(Self {
            base,
            head,
            target_backbone,
            target_head,
            queue,
            temperature: config.temperature,
            momentum: config.momentum_base,
        })
    }
}

impl Method for MocoV2 {
    fn var_store(&self) -> &nn::VarStore {
        &self.base.vs
    }
    fn step(&mut self, batch: &Batch) -> Result<StepOutput, LearnError> {
        let d = self.base.device;
        if batch.views.len() < 2 {
            return Err(LearnError::Config("MoCo needs a recipe with two views".into()));
        }
        let (xq, xk) = (images(batch, 0, d), images(batch, 1, d));
        let q = self.base.backbone.forward_t(&xq, true).apply_t(&self.head, true);
        let b = xk.size()[0];
        let perm = Tensor::randperm(b, (Kind::Int64, d));
        let k = tch::no_grad(|| {
            let k = self.target_backbone.forward_t(&xk.index_select(0, &perm), true).apply_t(&self.target_head, true);
            l2_normalize(&k.index_select(0, &perm.argsort(0, false)))
        });
        // The queue as it was before this batch's keys join it (autograd keeps it for backward).
        let loss = info_nce(&q, &k, &self.queue.keys().copy(), self.temperature);
        self.queue.push(&k);
        Ok(StepOutput { loss, metrics: vec![("collapse_std".into(), collapse_std(&q))] })
    }
    fn after_update(&mut self, _progress: f64) {
        ema_update(&self.base.vs, self.momentum);
    }
    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        self.base.evaluate(loader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_votes_follow_the_neighbourhood() {
        // Two tight clusters around orthogonal directions.
        let a = Tensor::from_slice(&[1.0f32, 0.0, 0.0]).reshape([1, 3]);
        let b = Tensor::from_slice(&[0.0f32, 1.0, 0.0]).reshape([1, 3]);
        let noise = Tensor::randn([8, 3], (Kind::Float, Device::Cpu)) * 0.05;
        let f = Tensor::cat(&[a.repeat([4, 1]), b.repeat([4, 1])], 0) + noise;
        assert_eq!(knn_accuracy(&f, &[0, 0, 0, 0, 1, 1, 1, 1], 3, 0.07), 1.0);
        // Labels that cut across the clusters cannot be recovered.
        assert!(knn_accuracy(&f, &[0, 1, 0, 1, 0, 1, 0, 1], 3, 0.07) < 0.5);
        assert!(knn_accuracy(&f.narrow(0, 0, 1), &[0], 3, 0.07).is_nan(), "one sample has no neighbours");
    }
}
