//! Self-supervised methods, each a composition of a view recipe, the backbone, heads, a loss and
//! a target rule (`crates/learn/src/{heads,loss,target}.rs`), and the k-NN monitor they share.

use patchtcga_loader::{Batch, Loader};
use patchtcga_model::vit::sincos_pos_embed;
use patchtcga_model::{Backbone, Spec};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::engine::{device, Method, StepOutput};
use crate::heads::{collapse_std, patchify, DinoHead, MaeDecoder, MaeDecoderSpec, Mlp, MlpSpec};
use crate::loss::{info_nce, l2_normalize, masked_mse, negative_cosine, nt_xent, nt_xent_global, DinoLoss};
use crate::probe::knn_votes;
use crate::schedule::cosine;
use crate::shards;
use crate::supervised::images;
use crate::target::{ema_update, init_targets, Queue, TARGET};
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
    let y = Tensor::from_slice(labels);
    let classes = labels.iter().max().copied().unwrap_or(0) + 1;
    let votes = knn_votes(&sim, &y, classes, k.min(n - 1), temperature);
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
        let device = device(config.device)?;
        tch::manual_seed(config.seed as i64);
        let spec = config.backbone_spec()?;
        let vs = nn::VarStore::new(device);
        let backbone = Backbone::new(&vs.root(), spec);
        if let Some(pretrained) = &config.pretrained {
            let r =
                patchtcga_model::load(&vs, pretrained, spec.head_name(), &patchtcga_model::ImportOptions::default())?;
            eprintln!("loaded {} tensors from {} (prefix {:?})", r.loaded, pretrained.display(), r.prefix);
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
        let f = if feats.is_empty() {
            Tensor::zeros([0, self.dim()], (Kind::Float, self.device))
        } else {
            Tensor::cat(&feats, 0).to_kind(Kind::Float)
        };
        let f = shards::gather_rows(f)?;
        let labels = Vec::<i64>::try_from(shards::gather_rows(Tensor::from_slice(&labels))?)?;
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

/// SimCLR: backbone → projector (Linear, BN, ReLU, Linear, BN) → NT-Xent over the batch (the
/// global batch, every rank's embeddings, in a distributed run).
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
        let loss = match patchtcga_dist::group() {
            Some(g) => nt_xent_global(&halves[0], &halves[1], self.temperature, g)?,
            None => nt_xent(&halves[0], &halves[1], self.temperature),
        };
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
}

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
    pub fn new(config: &Config) -> Result<Self, LearnError> {
        let keys_per_step = (config.batch_size * patchtcga_dist::group().map_or(1, |g| g.world())) as i64;
        if config.queue_size % keys_per_step != 0 {
            return Err(LearnError::Config(format!(
                "queue_size {} must be a multiple of the keys per step, {keys_per_step} (batch_size × processes)",
                config.queue_size
            )));
        }
        let base = Base::new(config)?;
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
        match patchtcga_dist::group() {
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
}

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
    pub fn new(config: &Config) -> Result<Self, LearnError> {
        let base = Base::new(config)?;
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
}

/// MAE: the encoder (a ViT, fixed sine-cosine position embedding) sees a random
/// `1 − mask_ratio` of each image's patches; a light decoder predicts the pixels of the hidden
/// ones from the encoded visible tokens and mask tokens; the loss is the pixel MSE on hidden
/// patches (normalised per patch with `norm_pix_loss`).
pub struct Mae {
    base: Base,
    decoder: MaeDecoder,
    mask_ratio: f64,
    norm_pix: bool,
    patch: i64,
}

impl Mae {
    pub fn new(config: &Config) -> Result<Self, LearnError> {
        let base = Base::new(config)?;
        let Spec::Vit(vit) = base.backbone.spec() else {
            return Err(LearnError::Config(format!("MAE needs a ViT backbone, not {}", config.model_name)));
        };
        let grid = vit.grid();
        if grid * vit.patch != config.image_size {
            return Err(LearnError::Config(format!(
                "MAE: image_size {} is not a whole number of {} px patches",
                config.image_size, vit.patch
            )));
        }
        if config.pretrained.is_none() {
            // MAE's encoder position embedding is fixed; loaded weights keep theirs.
            let mut pos = base.vs.variables()["pos_embed"].shallow_clone();
            tch::no_grad(|| pos.copy_(&sincos_pos_embed(vit.dim, grid)));
            let _ = pos.set_requires_grad(false);
        }
        let spec = MaeDecoderSpec {
            encoder_dim: vit.dim,
            dim: config.decoder_embed_dim,
            depth: config.decoder_depth,
            heads: config.decoder_num_heads,
            grid,
            patch: vit.patch,
        };
        let decoder = MaeDecoder::new(&base.vs.root(), spec);
        if config.pretrained.is_none() {
            mae_init(&base.vs);
        }
        Ok(Self { base, decoder, mask_ratio: config.mask_ratio, norm_pix: config.norm_pix_loss, patch: vit.patch })
    }
}

/// MAE's `initialize_weights` over encoder and decoder: Linear weights (and the patch embedding,
/// as a matrix) Xavier-uniform with zero biases, class and mask tokens N(0, 0.02); layer norms
/// stay 1 and 0, the patch embedding's bias and the fixed position embeddings as they are.
fn mae_init(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (name, t) in vs.variables() {
            if !t.requires_grad() {
                continue;
            }
            let mut t = t.shallow_clone();
            let size = t.size();
            if name.ends_with("cls_token") || name.ends_with("mask_token") {
                let _ = t.normal_(0.0, 0.02);
            } else if name.ends_with(".weight") && (size.len() == 2 || name == "patch_embed.proj.weight") {
                let (fan_out, fan_in) = (size[0], size[1..].iter().product::<i64>());
                let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
                let _ = t.uniform_(-a, a);
            } else if name.ends_with(".bias") && !name.contains("norm") && !name.starts_with("patch_embed") {
                let _ = t.zero_();
            }
        }
    });
}

/// MAE's per-image random masking of `tokens` (N, L, D): keeps `keep` tokens in a random order;
/// returns them (N, keep, D), the mask (N, L; 1 = hidden) in grid order, and the permutation that
/// restores grid order from the shuffled one (N, L).
pub fn random_masking(tokens: &Tensor, keep: i64) -> (Tensor, Tensor, Tensor) {
    let (n, l, d) = tokens.size3().expect("tokens are (N, L, D)");
    let noise = Tensor::rand([n, l], (Kind::Float, tokens.device()));
    let shuffle = noise.argsort(1, false);
    let restore = shuffle.argsort(1, false);
    let kept = shuffle.narrow(1, 0, keep);
    let visible = tokens.gather(1, &kept.unsqueeze(-1).expand([n, keep, d], true), false);
    let mask = Tensor::ones([n, l], (Kind::Float, tokens.device()));
    let _ = mask.narrow(1, 0, keep).fill_(0.0);
    (visible, mask.gather(1, &restore, false), restore)
}

impl Method for Mae {
    fn var_store(&self) -> &nn::VarStore {
        &self.base.vs
    }
    fn step(&mut self, batch: &Batch) -> Result<StepOutput, LearnError> {
        let x = images(batch, 0, self.base.device);
        let Backbone::Vit(vit) = &self.base.backbone else { unreachable!("checked in Mae::new") };
        let tokens = vit.patch_tokens(&x);
        let (n, l, d) = tokens.size3().expect("tokens");
        let keep = (l as f64 * (1.0 - self.mask_ratio)) as i64;
        let (visible, mask, restore) = random_masking(&tokens, keep);
        let cls = vit.class_token().expand([n, 1, d], true);
        let latent = vit.encode(&Tensor::cat(&[cls, visible], 1), true);
        let pred = self.decoder.forward(&latent, &restore, true);
        let loss = masked_mse(&pred, &patchify(&x, self.patch), &mask, self.norm_pix);
        let tokens = latent.narrow(1, 1, keep).reshape([-1, d]);
        Ok(StepOutput { loss, metrics: vec![("collapse_std".into(), collapse_std(&tokens))] })
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
