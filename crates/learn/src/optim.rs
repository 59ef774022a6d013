//! Optimizers with PyTorch's update rules (SGD, Adam, AdamW) and LARS as lightly / Lightning
//! Bolts define it, over two parameter groups (weight decay on weights only), with state that
//! checkpoints save and restore exactly. tch's own optimizers keep their state out of reach, so
//! exact resume needs these.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use crate::LearnError;

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Sgd { momentum: f64, nesterov: bool },
    /// Adam with L2 weight decay added to the gradient (`torch.optim.Adam`).
    Adam { betas: [f64; 2], eps: f64 },
    /// Adam with decoupled weight decay (`torch.optim.AdamW`).
    AdamW { betas: [f64; 2], eps: f64 },
    /// Layer-wise adaptive rate scaling; parameters without weight decay are not scaled.
    Lars { momentum: f64, trust: f64, eps: f64 },
}

impl Rule {
    /// The rule named by the config's `optim`.
    pub fn named(name: &str, momentum: f64, betas: [f64; 2]) -> Result<Self, LearnError> {
        Ok(match name {
            "sgd" => Rule::Sgd { momentum, nesterov: false },
            "adam" => Rule::Adam { betas, eps: 1e-8 },
            "adamw" => Rule::AdamW { betas, eps: 1e-8 },
            "lars" => Rule::Lars { momentum, trust: 0.001, eps: 1e-8 },
            other => return Err(LearnError::Config(format!("optim {other:?}: one of adam, adamw, sgd, lars"))),
        })
    }
}

/// Whether a parameter gets weight decay: not norms, biases (any 1-D tensor), `cls_token`,
/// `pos_embed` or `mask_token`.
pub fn decays(name: &str, t: &Tensor) -> bool {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    t.dim() > 1 && !matches!(leaf, "cls_token" | "pos_embed" | "mask_token" | "bias")
}

struct Param {
    name: String,
    tensor: Tensor,
    decay: bool,
}

/// An optimizer over named parameters.
pub struct Optimizer {
    rule: Rule,
    weight_decay: f64,
    params: Vec<Param>,
    /// Updates taken so far.
    steps: i64,
    /// Per-parameter buffers: momentum, or Adam's two moments.
    state: BTreeMap<String, Vec<Tensor>>,
}

impl Optimizer {
    /// Takes the trainable parameters; decay follows [`decays`].
    pub fn new(rule: Rule, weight_decay: f64, params: Vec<(String, Tensor)>) -> Self {
        let params = params
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, tensor)| Param { decay: decays(&name, &tensor), name, tensor })
            .collect();
        Self { rule, weight_decay, params, steps: 0, state: BTreeMap::new() }
    }

    /// Same as [`Optimizer::new`] with an explicit decay flag per parameter (tests, custom groups).
    pub fn with_groups(rule: Rule, weight_decay: f64, params: Vec<(String, Tensor, bool)>) -> Self {
        let params = params.into_iter().map(|(name, tensor, decay)| Param { name, tensor, decay }).collect();
        Self { rule, weight_decay, params, steps: 0, state: BTreeMap::new() }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Scales gradients so that their global 2-norm is at most `max` (as
    /// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max: f64) -> f64 {
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.tensor.grad()).filter(Tensor::defined).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().to_kind(Kind::Float)).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let coef = (max / (&total + 1e-6)).clamp_max(1.0);
        tch::no_grad(|| {
            for mut g in grads {
                let _ = g.g_mul_(&coef.to_kind(g.kind()));
            }
        });
        total.double_value(&[])
    }

    /// Multiplies every gradient by `factor` (loss-scale removal) and says whether all are finite.
    pub fn unscale_grads(&mut self, factor: f64) -> bool {
        let mut finite = true;
        tch::no_grad(|| {
            for p in &self.params {
                let mut g = p.tensor.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(factor);
                    finite &= g.isfinite().all().int64_value(&[]) != 0;
                }
            }
        });
        finite
    }

    /// One update at learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as f64;
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.tensor.grad();
                if !g.defined() {
                    continue;
                }
                let wd = if p.decay { self.weight_decay } else { 0.0 };
                let mut w = p.tensor.shallow_clone();
                let state = self.state.entry(p.name.clone()).or_default();
                match self.rule {
                    Rule::Sgd { momentum, nesterov } => {
                        let mut d = if wd != 0.0 { &g + &w * wd } else { g.shallow_clone() };
                        if momentum != 0.0 {
                            if state.is_empty() {
                                state.push(d.detach().copy());
                            } else {
                                let _ = state[0].g_mul_scalar_(momentum).g_add_(&d);
                            }
                            d = if nesterov { d + &state[0] * momentum } else { state[0].shallow_clone() };
                        }
                        let _ = w.g_add_(&(d * -lr));
                    }
                    Rule::Adam { betas, eps } | Rule::AdamW { betas, eps } => {
                        let decoupled = matches!(self.rule, Rule::AdamW { .. });
                        if decoupled && wd != 0.0 {
                            let _ = w.g_mul_scalar_(1.0 - lr * wd);
                        }
                        let g = if !decoupled && wd != 0.0 { &g + &w * wd } else { g.shallow_clone() };
                        if state.is_empty() {
                            state.push(g.zeros_like());
                            state.push(g.zeros_like());
                        }
                        let _ = state[0].lerp_(&g, 1.0 - betas[0]);
                        let _ = state[1].g_mul_scalar_(betas[1]).addcmul_(&g, &(&g * (1.0 - betas[1])));
                        let bc1 = 1.0 - betas[0].powf(t);
                        let bc2 = 1.0 - betas[1].powf(t);
                        let denom = state[1].sqrt() / bc2.sqrt() + eps;
                        let _ = w.addcdiv_(&(&state[0] * (-lr / bc1)), &denom);
                    }
                    Rule::Lars { momentum, trust, eps } => {
                        let mut d = g.shallow_clone();
                        if wd != 0.0 {
                            let (pn, gn) = (w.norm().double_value(&[]), g.norm().double_value(&[]));
                            if pn != 0.0 && gn != 0.0 {
                                let local = trust * pn / (gn + pn * wd + eps);
                                d = (&g + &w * wd) * local;
                            }
                        }
                        if momentum != 0.0 {
                            if state.is_empty() {
                                state.push(d.detach().copy());
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

    /// The state as named tensors, for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("steps".to_owned(), Tensor::from(self.steps))];
        for (name, bufs) in &self.state {
            for (i, b) in bufs.iter().enumerate() {
                out.push((format!("{i}.{name}"), b.shallow_clone()));
            }
        }
        out
    }

    /// Restores [`Optimizer::state_tensors`] (moved to each parameter's device).
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>) -> Result<(), LearnError> {
        let mut state: BTreeMap<String, Vec<(usize, Tensor)>> = BTreeMap::new();
        for (key, t) in tensors {
            if key == "steps" {
                self.steps = t.int64_value(&[]);
                continue;
            }
            let (i, name) = key
                .split_once('.')
                .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n)))
                .ok_or_else(|| LearnError::Config(format!("optimizer state entry {key:?} is not ours")))?;
            let p = self
                .params
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| LearnError::Config(format!("optimizer state for {name}, which the model does not train")))?;
            state.entry(name.to_owned()).or_default().push((i, t.to_device(p.tensor.device())));
        }
        self.state = state
            .into_iter()
            .map(|(n, mut v)| {
                v.sort_by_key(|(i, _)| *i);
                (n, v.into_iter().map(|(_, t)| t).collect())
            })
            .collect();
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
