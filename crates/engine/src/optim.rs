//! Optimizers with PyTorch's update rules (SGD, Adam, AdamW) and LARS as lightly / Lightning
//! Bolts define it, over two parameter groups (weight decay on weights only), with state that
//! checkpoints save and restore exactly (tch's own optimizers keep their state out of reach).
//! Each group's parameters and gradients live in one flat buffer, as PyTorch's fused/foreach
//! optimizers work on many tensors per kernel: an update costs a few kernels, not a few per
//! parameter, which matters on a GPU.

use std::collections::BTreeMap;

use tch::Tensor;

use crate::config::Optim;
use crate::LearnError;

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Sgd {
        momentum: f64,
        nesterov: bool,
    },
    /// Adam with L2 weight decay added to the gradient (`torch.optim.Adam`).
    Adam {
        betas: [f64; 2],
        eps: f64,
    },
    /// Adam with decoupled weight decay (`torch.optim.AdamW`).
    AdamW {
        betas: [f64; 2],
        eps: f64,
    },
    /// Layer-wise adaptive rate scaling; parameters without weight decay are not scaled.
    Lars {
        momentum: f64,
        trust: f64,
        eps: f64,
    },
}

impl Rule {
    /// The rule the config's `optim` names, with its momentum or betas.
    pub fn new(optim: Optim, momentum: f64, betas: [f64; 2]) -> Self {
        match optim {
            Optim::Sgd => Rule::Sgd { momentum, nesterov: false },
            Optim::Adam => Rule::Adam { betas, eps: 1e-8 },
            Optim::AdamW => Rule::AdamW { betas, eps: 1e-8 },
            Optim::Lars => Rule::Lars { momentum, trust: 0.001, eps: 1e-8 },
        }
    }
}

/// Whether a parameter gets weight decay: not norms, biases (any 1-D tensor), `cls_token`,
/// `pos_embed` or `mask_token`.
pub fn decays(name: &str, t: &Tensor) -> bool {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    t.dim() > 1 && !matches!(leaf, "cls_token" | "pos_embed" | "mask_token" | "bias")
}

struct Param {
    tensor: Tensor,
    /// Offset of its elements in the group's flat buffers.
    offset: i64,
    /// Its gradient has been moved into the group's flat gradient buffer.
    bound: bool,
}

/// Parameters sharing a weight decay, stored as views into one flat buffer, with their gradients
/// in another, so an update is a handful of kernels instead of a handful per parameter.
struct Group {
    decay: bool,
    params: Vec<Param>,
    flat: Tensor,
    grad: Tensor,
    /// Momentum, or Adam's two moments, over the whole group.
    state: Vec<Tensor>,
}

impl Group {
    fn new(decay: bool, params: Vec<Tensor>) -> Option<Self> {
        if params.is_empty() {
            return None;
        }
        let flat = Tensor::cat(&params.iter().map(|t| t.detach().reshape([-1])).collect::<Vec<_>>(), 0);
        let grad = flat.zeros_like();
        let mut offset = 0;
        let params = params
            .into_iter()
            .map(|mut tensor| {
                let n = tensor.numel() as i64;
                let view = flat.narrow(0, offset, n).view(tensor.size().as_slice());
                tensor.set_data(&view);
                let p = Param { tensor, offset, bound: false };
                offset += n;
                p
            })
            .collect();
        Some(Self { decay, params, flat, grad, state: Vec::new() })
    }

    /// Moves gradients autograd allocated into the flat buffer; later backward passes accumulate
    /// there in place.
    fn bind(&mut self) {
        for p in self.params.iter_mut().filter(|p| !p.bound) {
            let mut g = p.tensor.grad();
            if g.defined() {
                let slot = self.grad.narrow(0, p.offset, p.tensor.numel() as i64);
                tch::no_grad(|| slot.view(g.size().as_slice()).copy_(&g));
                g.set_data(&slot.view(g.size().as_slice()));
                p.bound = true;
            }
        }
    }
}

/// An optimizer over named parameters.
pub struct Optimizer {
    rule: Rule,
    weight_decay: f64,
    groups: Vec<Group>,
    /// Updates taken so far.
    steps: i64,
}

impl Optimizer {
    /// Takes the trainable parameters; decay follows [`decays`]. They are laid out in the flat
    /// buffers in name order, so the state of a checkpoint fits a model built again in any order
    /// (a `VarStore`'s variables come in hash order).
    pub fn new(rule: Rule, weight_decay: f64, mut params: Vec<(String, Tensor)>) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let params = params
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, t)| {
                let d = decays(&name, &t);
                (name, t, d)
            })
            .collect();
        Self::with_groups(rule, weight_decay, params)
    }

    /// Same as [`Optimizer::new`] with an explicit decay flag per parameter.
    pub fn with_groups(rule: Rule, weight_decay: f64, params: Vec<(String, Tensor, bool)>) -> Self {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for (_, t, decay) in params {
            if decay {
                on.push(t)
            } else {
                off.push(t)
            }
        }
        let groups = [(true, on), (false, off)].into_iter().filter_map(|(d, p)| Group::new(d, p)).collect();
        Self { rule, weight_decay, groups, steps: 0 }
    }

    fn bind(&mut self) {
        for g in &mut self.groups {
            g.bind();
        }
    }

    /// Changes the weight decay of the decaying group (a weight-decay schedule).
    pub fn set_weight_decay(&mut self, weight_decay: f64) {
        self.weight_decay = weight_decay;
    }

    pub fn zero_grad(&mut self) {
        self.bind();
        for g in &mut self.groups {
            let _ = g.grad.zero_();
        }
    }

    /// The flat gradient buffers, one per parameter group (what a distributed run all-reduces:
    /// a few large messages instead of one per parameter).
    pub fn flat_grads(&mut self) -> Vec<Tensor> {
        self.bind();
        self.groups.iter().map(|g| g.grad.shallow_clone()).collect()
    }

    /// The flat gradient buffers and every parameter with its buffer and element offset there,
    /// once all gradients live in those buffers (a backward pass reached every parameter);
    /// `None` before.
    pub fn gradient_layout(&mut self) -> Option<(Vec<Tensor>, Vec<patchtcga_collective::GradientSlot>)> {
        self.bind();
        if self.groups.iter().any(|g| g.params.iter().any(|p| !p.bound)) {
            return None;
        }
        let flat = self.groups.iter().map(|g| g.grad.shallow_clone()).collect();
        let params = self
            .groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.params.iter().map(move |p| (p.tensor.shallow_clone(), i, p.offset)))
            .collect();
        Some((flat, params))
    }

    /// Scales gradients so that their global 2-norm is at most `max` (as
    /// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max: f64) -> f64 {
        self.bind();
        if self.groups.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = self.groups.iter().map(|g| g.grad.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let coef = (max / (&total + 1e-6)).clamp_max(1.0);
        tch::no_grad(|| {
            for g in &mut self.groups {
                let _ = g.grad.g_mul_(&coef);
            }
        });
        total.double_value(&[])
    }

    /// Scales each parameter's gradient so that its own 2-norm is at most `max` (DINO's
    /// `clip_gradients`); returns the largest norm before clipping.
    pub fn clip_each_grad_norm(&mut self, max: f64) -> f64 {
        self.bind();
        let mut norms = Vec::new();
        tch::no_grad(|| {
            for g in &mut self.groups {
                for p in &g.params {
                    let mut slot = g.grad.narrow(0, p.offset, p.tensor.numel() as i64);
                    let norm = slot.norm();
                    let _ = slot.g_mul_(&(max / (&norm + 1e-6)).clamp_max(1.0));
                    norms.push(norm);
                }
            }
        });
        if norms.is_empty() {
            return 0.0;
        }
        Tensor::stack(&norms, 0).max().double_value(&[])
    }

    /// Multiplies every gradient by `factor` (loss-scale removal) and says whether all are finite.
    pub fn unscale_grads(&mut self, factor: f64) -> bool {
        self.bind();
        tch::no_grad(|| {
            self.groups.iter_mut().fold(true, |ok, g| {
                let _ = g.grad.g_mul_scalar_(factor);
                ok & (g.grad.isfinite().all().int64_value(&[]) != 0)
            })
        })
    }

    /// Whether every accumulated gradient is finite.
    pub fn grads_finite(&mut self) -> bool {
        self.bind();
        tch::no_grad(|| self.groups.iter().all(|g| g.grad.isfinite().all().int64_value(&[]) != 0))
    }

    /// One update at learning rate `lr`.
    // One arm per update rule, each a few fused in-place kernels over a group, kept together so
    // the rules read side by side as PyTorch documents them.
    pub fn step(&mut self, lr: f64) {
        self.bind();
        self.steps += 1;
        let t = self.steps as f64;
        let rule = self.rule;
        tch::no_grad(|| {
            for group in &mut self.groups {
                let wd = if group.decay { self.weight_decay } else { 0.0 };
                let (w, g) = (&mut group.flat, &group.grad);
                let state = &mut group.state;
                // In-place, fused forms (addcmul_ with a scalar tensor is an axpy): each line is
                // one pass over the group, as PyTorch's multi-tensor kernels do.
                let scalar = |v: f64| Tensor::from(v as f32);
                let mut g = g.shallow_clone();
                match rule {
                    Rule::Sgd { momentum, nesterov } => {
                        if wd != 0.0 {
                            let _ = g.addcmul_(w, &scalar(wd));
                        }
                        let d = if momentum == 0.0 {
                            g
                        } else {
                            if state.is_empty() {
                                state.push(g.copy());
                            } else {
                                let _ = state[0].g_mul_scalar_(momentum).g_add_(&g);
                            }
                            if nesterov {
                                let _ = g.addcmul_(&state[0], &scalar(momentum));
                                g
                            } else {
                                state[0].shallow_clone()
                            }
                        };
                        let _ = w.addcmul_(&d, &scalar(-lr));
                    }
                    Rule::Adam { betas, eps } | Rule::AdamW { betas, eps } => {
                        if matches!(rule, Rule::AdamW { .. }) {
                            if wd != 0.0 {
                                let _ = w.g_mul_scalar_(1.0 - lr * wd);
                            }
                        } else if wd != 0.0 {
                            let _ = g.addcmul_(w, &scalar(wd));
                        }
                        if state.is_empty() {
                            state.push(g.zeros_like());
                            state.push(g.zeros_like());
                        }
                        let _ = state[0].lerp_(&g, 1.0 - betas[0]);
                        let _ = state[1].g_mul_scalar_(betas[1]).addcmul_(&g, &(&g * (1.0 - betas[1])));
                        let bc1 = 1.0 - betas[0].powf(t);
                        let bc2 = 1.0 - betas[1].powf(t);
                        // w −= lr/bc1 · m / (√v/√bc2 + eps), the step size folded into the divisor.
                        let mut denom = state[1].sqrt();
                        let _ = denom.g_div_scalar_(bc2.sqrt()).g_add_scalar_(eps).g_div_scalar_(-lr / bc1);
                        let _ = w.addcdiv_(&state[0], &denom);
                    }
                    Rule::Lars { momentum, trust, eps } => {
                        // The trust ratio is per parameter (layer-wise), on views of the group.
                        let mut d = g.copy();
                        if wd != 0.0 {
                            for p in &group.params {
                                let n = p.tensor.numel() as i64;
                                let (pw, pg) = (w.narrow(0, p.offset, n), g.narrow(0, p.offset, n));
                                let (pn, gn) = (pw.norm().double_value(&[]), pg.norm().double_value(&[]));
                                if pn != 0.0 && gn != 0.0 {
                                    let local = trust * pn / (gn + pn * wd + eps);
                                    d.narrow(0, p.offset, n).copy_(&((&pg + &pw * wd) * local));
                                }
                            }
                        }
                        if momentum != 0.0 {
                            if state.is_empty() {
                                state.push(d.copy());
                            } else {
                                let _ = state[0].g_mul_scalar_(momentum).g_add_(&d);
                            }
                            d = state[0].shallow_clone();
                        }
                        let _ = w.g_add_(&(d * -lr));
                    }
                }
            }
        });
    }

    /// Updates taken so far.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// The state as named tensors, for a checkpoint (`<group>.<buffer>`, flat over the group's
    /// parameters in name order).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("steps".to_owned(), Tensor::from_slice(&[self.steps]))];
        for (gi, g) in self.groups.iter().enumerate() {
            for (i, b) in g.state.iter().enumerate() {
                out.push((format!("{gi}.{i}"), b.shallow_clone()));
            }
        }
        out
    }

    /// Restores [`Optimizer::state_tensors`].
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>) -> Result<(), LearnError> {
        let bad = |m: String| LearnError::Config(format!("optimizer state: {m}"));
        let mut bufs: BTreeMap<(usize, usize), Tensor> = BTreeMap::new();
        for (key, t) in tensors {
            if key == "steps" {
                self.steps = t.int64_value(&[0]);
                continue;
            }
            let parsed =
                key.split_once('.').and_then(|(g, i)| Some((g.parse::<usize>().ok()?, i.parse::<usize>().ok()?)));
            let (g, i) = parsed.ok_or_else(|| bad(format!("entry {key:?} is not ours")))?;
            let group = self.groups.get(g).ok_or_else(|| bad(format!("group {g} does not exist in this model")))?;
            if t.size() != group.flat.size() {
                return Err(bad(format!(
                    "entry {key} has {:?} values, the model {:?} (another model?)",
                    t.size(),
                    group.flat.size()
                )));
            }
            bufs.insert((g, i), t.to_device(group.flat.device()));
        }
        for (gi, group) in self.groups.iter_mut().enumerate() {
            group.state = bufs.range((gi, 0)..(gi + 1, 0)).map(|(_, t)| t.shallow_clone()).collect();
        }
        Ok(())
    }
}

/// Dynamic loss scaling for float16 autocast (PyTorch's `GradScaler` rule: halve on overflow and
/// skip the update, double after 2000 clean updates).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    pub scale: f64,
    pub clean: u32,
}

impl Default for LossScale {
    fn default() -> Self {
        Self { scale: 65536.0, clean: 0 }
    }
}

impl LossScale {
    /// Records whether the gradients were finite; returns whether to take the update.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.clean += 1;
            if self.clean == 2000 {
                self.scale *= 2.0;
                self.clean = 0;
            }
        } else {
            self.scale /= 2.0;
            self.clean = 0;
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// An optimizer over one (n, 2) parameter per gradient column given, gradients set.
    fn with_grads(grads: &[&[f32]]) -> (Optimizer, Vec<Tensor>) {
        let params: Vec<(String, Tensor)> = grads
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let t = Tensor::zeros([g.len() as i64, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
                (format!("p{i}.weight"), t)
            })
            .collect();
        let tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
        let opt = Optimizer::new(Rule::Sgd { momentum: 0.0, nesterov: false }, 0.0, params);
        for (t, g) in tensors.iter().zip(grads) {
            let target = Tensor::from_slice(g).unsqueeze(1).expand([g.len() as i64, 2], true);
            (t * target).sum(Kind::Float).backward();
        }
        (opt, tensors)
    }

    #[test]
    fn clipping_by_the_global_norm_and_by_each_norm() {
        // Gradients (3, 4) in two columns → norm 5·√2, and (0.3, 0.4) → 0.5·√2.
        let (mut opt, t) = with_grads(&[&[3.0, 4.0], &[0.3, 0.4]]);
        let total = opt.clip_grad_norm(1.0);
        assert!((total - 50.5f64.sqrt()).abs() < 1e-5);
        let n0 = t[0].grad().norm().double_value(&[]);
        let n1 = t[1].grad().norm().double_value(&[]);
        assert!(((n0 * n0 + n1 * n1).sqrt() - 1.0).abs() < 1e-5, "the whole gradient has norm 1");
        assert!((n0 / n1 - 10.0).abs() < 1e-4, "directions kept");

        let (mut opt, t) = with_grads(&[&[3.0, 4.0], &[0.3, 0.4]]);
        let largest = opt.clip_each_grad_norm(1.0);
        assert!((largest - 50f64.sqrt()).abs() < 1e-5);
        assert!((t[0].grad().norm().double_value(&[]) - 1.0).abs() < 1e-5, "the large one clipped to 1");
        assert!((t[1].grad().norm().double_value(&[]) - 0.5f64.sqrt()).abs() < 1e-6, "the small one untouched");
    }
}
