//! DINO: a student matching its EMA teacher's centred, sharpened outputs across global and
//! local crops.

use patchtcga_engine::data::images;
use patchtcga_engine::schedule::cosine;
use patchtcga_engine::{Config, LearnError, Method, RunContext, StepOutput};
use patchtcga_loader::{Batch, Loader};
use patchtcga_model::Backbone;
use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::heads::{collapse_std, DinoHead};
use crate::loss::DinoLoss;
use crate::ssl::Base;
use crate::target::{ema_update, init_targets, TARGET};

/// DINO: a student (backbone → DINO head) matches the centred, sharpened output of its teacher
/// (`target.*`, EMA with momentum from `momentum_base` to 1 on a cosine) across views: the
/// teacher sees the two global crops, the student every crop (global and local, each
/// resolution through the backbone in one batch). The teacher temperature warms up per epoch,
/// and the head's last layer stays still for the first `freeze_last_layer` epochs.
pub struct Dino {
    base: Base,
    head: DinoHead,
    target_backbone: Backbone,
    target_head: DinoHead,
    loss: DinoLoss,
    momentum_base: f64,
    momentum: f64,
    epochs: usize,
    student_temp: f64,
    teacher_temp: (f64, f64, usize),
    freeze_last_layer: usize,
    epoch: usize,
    /// The last layer as it was before this update, while it is frozen.
    frozen: Option<Tensor>,
}

impl Dino {
    pub fn new(config: &Config, context: &RunContext) -> Result<Self, LearnError> {
        let base = Base::new(config, context)?;
        let root = base.vs.root();
        let head_of =
            |p: &nn::Path| DinoHead::new(p, base.dim(), config.proj_hidden_dim, config.proj_dim, config.out_dim);
        let head = head_of(&(&root / "projector"));
        let target = root.sub(TARGET.trim_end_matches('.'));
        let target_backbone = Backbone::new(&target, base.backbone.spec());
        let target_head = head_of(&(&target / "projector"));
        let loss = DinoLoss::new(&target, config.out_dim, config.center_momentum);
        init_targets(&base.vs);
        Ok(Self {
            base,
            head,
            target_backbone,
            target_head,
            loss,
            momentum_base: config.momentum_base,
            momentum: config.momentum_base,
            epochs: config.epochs,
            student_temp: config.temperature,
            teacher_temp: (config.warmup_teacher_temp, config.teacher_temp, config.warmup_teacher_temp_epochs),
            freeze_last_layer: config.freeze_last_layer,
            epoch: 0,
            frozen: None,
        })
    }

    /// The teacher temperature of the current epoch: linear from the warm-up value to the final
    /// one over the warm-up epochs (upstream's `np.linspace` per epoch), then constant.
    fn teacher_temp(&self) -> f64 {
        let (from, to, epochs) = self.teacher_temp;
        if self.epoch >= epochs {
            return to;
        }
        from + (to - from) * self.epoch as f64 / (epochs.max(2) - 1) as f64
    }
}

impl Method for Dino {
    fn var_store(&self) -> &nn::VarStore {
        &self.base.vs
    }
    fn begin_update(&mut self, progress: f64) {
        self.epoch = (progress * self.epochs as f64 + 1e-9).floor() as usize;
        let frozen = self.epoch < self.freeze_last_layer;
        let last = self.head.last_layer();
        let _ = last.shallow_clone().set_requires_grad(!frozen);
        // Upstream drops the layer's gradient, so no rule touches it; restoring it after the
        // update does the same whatever the optimizer (Adam's L2 decay would move it).
        self.frozen = frozen.then(|| last.detach().copy());
    }
    fn step(&mut self, batch: &Batch) -> Result<StepOutput, LearnError> {
        let d = self.base.device;
        if batch.views.len() < 2 {
            return Err(LearnError::Config("DINO needs a recipe with two global views".into()));
        }
        // Views of one resolution go through the backbone together, as upstream's MultiCropWrapper.
        let global = Tensor::cat(&[images(batch, 0, d), images(batch, 1, d)], 0);
        let mut feats = vec![self.base.backbone.forward_t(&global, true)];
        if batch.views.len() > 2 {
            let local: Vec<Tensor> = (2..batch.views.len()).map(|v| images(batch, v, d)).collect();
            feats.push(self.base.backbone.forward_t(&Tensor::cat(&local, 0), true));
        }
        let student = Tensor::cat(&feats, 0).apply_t(&self.head, true);
        let teacher = tch::no_grad(|| self.target_backbone.forward_t(&global, false).apply_t(&self.target_head, false));
        let views = batch.views.len() as i64;
        let temp = self.teacher_temp();
        let teacher = teacher.chunk(2, 0);
        let (loss, entropy) = self.loss.loss(&teacher, &student.chunk(views, 0), temp, self.student_temp);
        let (loss_value, entropy) = (loss.double_value(&[]), entropy.double_value(&[]));
        // DINO's cross-entropy is the teacher's entropy plus the student's KL divergence from
        // it: the KL is what falls as the student learns, the entropy what collapse drives to 0.
        let metrics = vec![
            ("momentum".into(), self.momentum),
            ("teacher_temp".into(), temp),
            ("teacher_entropy".into(), entropy),
            ("kl".into(), loss_value - entropy),
            ("collapse_std".into(), collapse_std(&teacher[0])),
        ];
        Ok(StepOutput { loss, metrics })
    }
    fn after_update(&mut self, progress: f64) {
        if let Some(kept) = self.frozen.take() {
            tch::no_grad(|| self.head.last_layer().shallow_clone().copy_(&kept));
        }
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
