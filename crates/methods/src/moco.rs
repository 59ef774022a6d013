//! MoCo v2: a query encoder against its momentum key encoder and a queue of keys, InfoNCE.

use patchtcga_engine::data::images;
use patchtcga_engine::{Config, LearnError, Method, RunContext, StepOutput};
use patchtcga_loader::{Batch, Loader};
use patchtcga_model::Backbone;
use tch::nn::{self, ModuleT};

use crate::heads::{collapse_std, Mlp, MlpSpec};
use crate::loss::{info_nce, l2_normalize};
use crate::ssl::Base;
use crate::target::{ema_update, init_targets, Queue, TARGET};

/// MoCo v2: query encoder (backbone → MLP head) against keys from its momentum copy
/// (`target.*`, constant momentum `momentum_base`) and a queue of past keys, with InfoNCE.
/// Against the batch-norm leak MoCo guards with shuffled batch norm across GPUs; here the key
/// encoder's batch norm sees the whole global batch (one process, or synchronised batch norm
/// across ranks, the other guard the MoCo paper names). In a distributed run every rank's keys
/// join the queue.
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
    pub fn new(config: &Config, context: &RunContext) -> Result<Self, LearnError> {
        let keys_per_step = (config.batch_size * context.world()) as i64;
        if config.queue_size % keys_per_step != 0 {
            return Err(LearnError::Config(format!(
                "queue_size {} must be a multiple of the keys per step, {keys_per_step} (batch_size × processes)",
                config.queue_size
            )));
        }
        let base = Base::new(config, context)?;
        let root = base.vs.root();
        let spec = MlpSpec {
            dims: vec![base.dim(), config.proj_hidden_dim, config.proj_dim],
            batch_norm: false,
            last_batch_norm: false,
            gelu: false,
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
        let k =
            tch::no_grad(|| l2_normalize(&self.target_backbone.forward_t(&xk, true).apply_t(&self.target_head, true)));
        // The queue as it was before this batch's keys join it (autograd keeps it for backward).
        let loss = info_nce(&q, &k, &self.queue.keys().copy(), self.temperature);
        // Every rank's keys join the queue, in rank order, as MoCo's concat_all_gather.
        match self.base.group {
            Some(g) => self.queue.push(&g.all_gather(&k)?.flatten(0, 1)),
            None => self.queue.push(&k),
        }
        Ok(StepOutput { loss, metrics: vec![("collapse_std".into(), collapse_std(&q))] })
    }
    fn after_update(&mut self, _progress: f64) {
        ema_update(&self.base.vs, self.momentum);
    }
    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        self.base.evaluate(loader)
    }
    fn notes(&self) -> &[String] {
        &self.base.notes
    }
}
