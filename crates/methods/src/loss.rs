//! The self-supervised losses, each computed as its upstream repository computes it (goldens in
//! `tests/loss.rs` from lightly and the MoCo / BYOL / MAE formulas). Methods compose them.

use tch::{Kind, Tensor};

/// Rows scaled to unit length (`F.normalize(x, dim=1)`, eps 1e-12).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2.0, [-1].as_slice(), true).clamp_min(1e-12);
    x / norm
}

/// SimCLR's NT-Xent over two views (B, D): every other sample of both views is a negative;
/// the mean over the 2B anchors of the cross-entropy of finding the positive.
pub fn nt_xent(z0: &Tensor, z1: &Tensor, temperature: f64) -> Tensor {
    let b = z0.size()[0];
    let z = l2_normalize(&Tensor::cat(&[z0, z1], 0).to_kind(Kind::Float));
    let mut sim = z.matmul(&z.tr()) / temperature;
    let _ = sim.fill_diagonal_(f64::NEG_INFINITY, false);
    let idx = Tensor::arange(2 * b, (Kind::Int64, z.device()));
    let targets = (idx + b).remainder(2 * b);
    sim.cross_entropy_for_logits(&targets)
}

/// NT-Xent over the global batch of a distributed run (SimCLR's negatives from every rank, as
/// lightly's `gather_distributed`): the value is the mean loss of this rank's anchors; its
/// gradient gives this rank's embeddings what every rank's anchors ask of them (the gathered
/// embeddings' gradients are summed across ranks, as a gather layer's backward does), so that
/// with gradients averaged over ranks the update is the one-process update on the global batch.
pub fn nt_xent_global(
    z0: &Tensor,
    z1: &Tensor,
    temperature: f64,
    group: &patchtcga_collective::ProcessGroup,
) -> Result<Tensor, patchtcga_collective::CollectiveError> {
    let (w, r, b) = (group.world() as i64, group.rank() as i64, z0.size()[0]);
    let local = Tensor::cat(&[z0, z1], 0).to_kind(Kind::Float);
    let all = group.all_gather(&local.detach())?.reshape([w * 2 * b, -1]).set_requires_grad(true);
    let z = l2_normalize(&all);
    let mine = Tensor::arange(2 * b, (Kind::Int64, z.device())) + r * 2 * b;
    let sim = z.index_select(0, &mine).matmul(&z.tr()) / temperature;
    let sim = sim.scatter_value(1, &mine.unsqueeze(1), f64::NEG_INFINITY);
    let positives = (Tensor::arange(2 * b, (Kind::Int64, z.device())) + b).remainder(2 * b) + r * 2 * b;
    let loss = sim.cross_entropy_for_logits(&positives);
    let grad = Tensor::run_backward(&[&loss], &[&all], false, false).remove(0);
    group.all_reduce_sum(&grad)?;
    let surrogate = (&local * grad.narrow(0, r * 2 * b, 2 * b)).sum(Kind::Float);
    Ok(&surrogate - surrogate.detach() + loss.detach())
}

/// MoCo's InfoNCE: queries (B, D) against their keys (positives) and a queue of keys (K, D)
/// (negatives), at `temperature`.
pub fn info_nce(q: &Tensor, k: &Tensor, queue: &Tensor, temperature: f64) -> Tensor {
    let (q, k) = (l2_normalize(&q.to_kind(Kind::Float)), l2_normalize(&k.to_kind(Kind::Float)));
    let pos = (&q * &k).sum_dim_intlist([1].as_slice(), true, Kind::Float);
    let neg = q.matmul(&queue.to_kind(Kind::Float).tr());
    let logits = Tensor::cat(&[pos, neg], 1) / temperature;
    let targets = Tensor::zeros([q.size()[0]], (Kind::Int64, q.device()));
    logits.cross_entropy_for_logits(&targets)
}

/// BYOL's regression loss: 2 − 2·cos(p, z), averaged over the batch.
pub fn negative_cosine(p: &Tensor, z: &Tensor) -> Tensor {
    let cos = (l2_normalize(&p.to_kind(Kind::Float)) * l2_normalize(&z.to_kind(Kind::Float))).sum_dim_intlist(
        [-1].as_slice(),
        false,
        Kind::Float,
    );
    (cos * -2.0 + 2.0).mean(Kind::Float)
}

/// DINO's cross-entropy between teacher and student views with a centred, sharpened teacher.
/// The centre is the momentum average of teacher outputs, updated after each loss; it lives in
/// the var store (`center`, as upstream's buffer), so checkpoints keep it.
pub struct DinoLoss {
    pub centre: Tensor,
    pub momentum: f64,
}

impl DinoLoss {
    /// A zero centre of `dim` outputs under `p`.
    pub fn new(p: &tch::nn::Path, dim: i64, momentum: f64) -> Self {
        Self { centre: p.zeros_no_train("center", &[1, dim]), momentum }
    }

    /// Mean over pairs of a teacher view and a student view of another index (the first
    /// student views are the global ones, in the teacher's order), then the centre update. Also
    /// the teacher distributions' mean entropy (detached): the part of the loss that is not the
    /// student's KL divergence from them.
    pub fn loss(
        &mut self,
        teacher: &[Tensor],
        student: &[Tensor],
        teacher_temp: f64,
        student_temp: f64,
    ) -> (Tensor, Tensor) {
        let t = Tensor::stack(teacher, 0).to_kind(Kind::Float);
        let s = Tensor::stack(student, 0).to_kind(Kind::Float);
        let logq = ((&t - &self.centre) / teacher_temp).log_softmax(-1, Kind::Float).detach();
        let q = logq.exp();
        let entropy = -(&q * &logq).sum_dim_intlist([-1].as_slice(), false, Kind::Float).mean(Kind::Float);
        let logp = (s / student_temp).log_softmax(-1, Kind::Float);
        // (teacher views, student views): −Σ_d q·log p summed over the batch.
        let mut pair = -Tensor::einsum("tbd,sbd->ts", &[&q, &logp], None::<i64>);
        let _ = pair.fill_diagonal_(0.0, false);
        let (nt, ns, b) = (teacher.len() as i64, student.len() as i64, t.size()[1]);
        let terms = nt * ns - nt.min(ns);
        let loss = pair.sum(Kind::Float) / (terms * b) as f64;
        tch::no_grad(|| {
            let batch_centre = t.mean_dim([0, 1].as_slice(), false, Kind::Float).unsqueeze(0);
            let _ = self.centre.lerp_(&batch_centre, 1.0 - self.momentum);
        });
        (loss, entropy)
    }
}

/// MAE's loss: mean squared error per patch (N, L, P), target patches normalised by their own
/// mean and (unbiased) variance when `norm_pix`, averaged over the masked patches (mask 1).
pub fn masked_mse(pred: &Tensor, target: &Tensor, mask: &Tensor, norm_pix: bool) -> Tensor {
    let target = if norm_pix {
        let mean = target.mean_dim([-1].as_slice(), true, Kind::Float);
        let var = target.var_dim([-1].as_slice(), true, true);
        (target - mean) / (var + 1e-6).sqrt()
    } else {
        target.shallow_clone()
    };
    let per_patch = (pred.to_kind(Kind::Float) - target).square().mean_dim([-1].as_slice(), false, Kind::Float);
    (per_patch * mask).sum(Kind::Float) / mask.sum(Kind::Float)
}
