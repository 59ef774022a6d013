//! SimCLR: two views, a projector and NT-Xent over the (global) batch.

use patchtcga_engine::{Config, LearnError, Method, RunContext, StepOutput};
use patchtcga_loader::{Batch, Loader};
use tch::nn::{self, ModuleT};

use crate::heads::{collapse_std, Mlp, MlpSpec};
use crate::loss::{nt_xent, nt_xent_global};
use crate::ssl::{two_views, Base};

/// SimCLR: backbone → projector (Linear, BN, ReLU, Linear, BN) → NT-Xent over the batch (the
/// global batch, every rank's embeddings, in a distributed run).
pub struct SimClr {
    base: Base,
    projector: Mlp,
    temperature: f64,
}

impl SimClr {
    pub fn new(config: &Config, context: &RunContext) -> Result<Self, LearnError> {
        let base = Base::new(config, context)?;
        let spec = MlpSpec {
            dims: vec![base.dim(), config.proj_hidden_dim, config.proj_dim],
            batch_norm: true,
            last_batch_norm: true,
            gelu: false,
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
        let loss = match self.base.group {
            Some(g) => nt_xent_global(&halves[0], &halves[1], self.temperature, g)?,
            None => nt_xent(&halves[0], &halves[1], self.temperature),
        };
        Ok(StepOutput { loss, metrics: vec![("collapse_std".into(), collapse_std(&halves[0]))] })
    }
    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        self.base.evaluate(loader)
    }
    fn notes(&self) -> &[String] {
        &self.base.notes
    }
}
