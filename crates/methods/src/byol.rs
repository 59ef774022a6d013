//! BYOL: an online network regressing its EMA target across two views.

use patchtcga_engine::schedule::cosine;
use patchtcga_engine::{Config, LearnError, Method, RunContext, StepOutput};
use patchtcga_loader::{Batch, Loader};
use patchtcga_model::Backbone;
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use crate::heads::{collapse_std, Mlp, MlpSpec};
use crate::loss::negative_cosine;
use crate::ssl::{two_views, Base};
use crate::target::{ema_update, init_targets, TARGET};

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
    pub fn new(config: &Config, context: &RunContext) -> Result<Self, LearnError> {
        let base = Base::new(config, context)?;
        let root = base.vs.root();
        let proj = MlpSpec {
            dims: vec![base.dim(), config.proj_hidden_dim, config.proj_dim],
            batch_norm: true,
            last_batch_norm: false,
            gelu: false,
        };
        let pred = MlpSpec {
            dims: vec![config.proj_dim, config.pred_hidden_dim, config.proj_dim],
            batch_norm: true,
            last_batch_norm: false,
            gelu: false,
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
        self.momentum = cosine(self.momentum_base, 1.0, progress);
        ema_update(&self.base.vs, self.momentum);
    }
    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        self.base.evaluate(loader)
    }
    fn notes(&self) -> &[String] {
        &self.base.notes
    }
}
