//! Target-network rules: momentum (EMA) copies of online weights (their momentum follows
//! [`patchtcga_engine::schedule::cosine`]) and MoCo's queue of keys.

use tch::nn;
use tch::{Kind, Tensor};

/// Where a method keeps its momentum networks in its var store: `target.<online name>`, so one
/// checkpoint holds both and the online names stay the upstream ones.
pub const TARGET: &str = "target.";

/// Moves every `target.<name>` parameter towards the online `<name>`:
/// target ← m·target + (1 − m)·online. Batch-norm statistics stay each network's own, as BYOL
/// and MoCo keep them.
pub fn ema_update(vs: &nn::VarStore, momentum: f64) {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, t) in &vars {
            let Some(online) = name.strip_prefix(TARGET) else { continue };
            if name.ends_with("running_mean") || name.ends_with("running_var") {
                continue;
            }
            if let Some(o) = vars.get(online) {
                let _ = t.shallow_clone().lerp_(o, 1.0 - momentum);
            }
        }
    });
}

/// Sets every `target.<name>` variable to the online `<name>` and freezes it (the start of a
/// momentum target).
pub fn init_targets(vs: &nn::VarStore) {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, t) in &vars {
            if let Some(o) = name.strip_prefix(TARGET).and_then(|n| vars.get(n)) {
                let mut t = t.shallow_clone();
                t.copy_(o);
                let _ = t.set_requires_grad(false);
            }
        }
    });
}

/// MoCo's queue of `size` keys of width `dim`, filled in place as a ring; its contents and
/// position live in the var store, so checkpoints keep them.
pub struct Queue {
    keys: Tensor,
    ptr: Tensor,
}

impl Queue {
    /// A queue of random unit keys (as MoCo initialises it), under `p`.
    pub fn new(p: &nn::Path, size: i64, dim: i64) -> Self {
        let mut keys = p.zeros_no_train("queue", &[size, dim]);
        tch::no_grad(|| {
            let r = crate::loss::l2_normalize(&Tensor::randn([size, dim], (Kind::Float, keys.device())));
            keys.copy_(&r);
        });
        let ptr = p.zeros_no_train("queue_ptr", &[1]);
        Self { keys, ptr }
    }

    /// The keys, (size, dim).
    pub fn keys(&self) -> &Tensor {
        &self.keys
    }

    /// Replaces the oldest keys by `k` (B, dim); `size` must be a multiple of B, as in MoCo.
    pub fn push(&mut self, k: &Tensor) {
        let (size, b) = (self.keys.size()[0], k.size()[0]);
        let at = self.ptr.double_value(&[0]) as i64;
        tch::no_grad(|| {
            self.keys.narrow(0, at, b.min(size - at)).copy_(&k.narrow(0, 0, b.min(size - at)).to_kind(Kind::Float));
            let _ = self.ptr.fill_(((at + b) % size) as f64);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn ema_moves_the_target_towards_the_online_weights() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut w = vs.root().zeros("w", &[3]);
        let _t = vs.root().sub("target").zeros("w", &[3]);
        init_targets(&vs);
        assert!(!vs.variables()["target.w"].requires_grad(), "targets are not trained");
        tch::no_grad(|| {
            let _ = w.fill_(1.0);
        });
        ema_update(&vs, 0.9);
        let t = vs.variables()["target.w"].shallow_clone();
        assert!((t - 0.1).abs().max().double_value(&[]) < 1e-7);
        ema_update(&vs, 0.9);
        assert!((vs.variables()["target.w"].double_value(&[0]) - 0.19).abs() < 1e-6);
    }

    #[test]
    fn the_queue_replaces_its_oldest_keys_in_order() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut q = Queue::new(&vs.root(), 6, 2);
        let before = q.keys().copy();
        let k1 = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        q.push(&k1);
        q.push(&(&k1 * 2.0));
        q.push(&(&k1 * 3.0));
        let rows: Vec<f64> = (0..6).map(|i| q.keys().double_value(&[i, 0])).collect();
        assert_eq!(rows, [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        q.push(&(&k1 * 4.0));
        assert_eq!(q.keys().double_value(&[0, 0]), 4.0, "wraps around to the oldest");
        assert_eq!(q.keys().double_value(&[2, 0]), 2.0);
        assert!(before.abs().sum(Kind::Float).double_value(&[]) > 0.0, "starts from random unit keys");
        assert_eq!(vs.variables()["queue_ptr"].double_value(&[0]), 2.0, "position kept in the var store");
    }
}
