//! Batch norm as the networks apply it: per process, or, inside [`synchronised`], with its
//! statistics over every rank of a distributed run (PyTorch's `SyncBatchNorm`) in training mode.

use std::cell::{Cell, RefCell};

use patchtcga_collective::ProcessGroup;
use tch::{nn, Tensor};

use crate::ModelError;

/// PyTorch's defaults, which every batch norm here uses but Inception's (ε 1e-3).
const MOMENTUM: f64 = 0.1;
const EPS: f64 = 1e-5;

thread_local! {
    /// The group this thread's training-mode batch norms synchronise over (see [`synchronised`]).
    static GROUP: Cell<Option<&'static ProcessGroup>> = const { Cell::new(None) };
    /// The first collective that failed inside [`synchronised`].
    static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `passes` (training-mode forward passes, and their backward) with every batch norm
/// synchronised over `group` (`None`: each process its own statistics). A collective that fails
/// inside does not panic: that batch norm uses this process's statistics so the pass completes,
/// and the failure is returned as the error.
pub fn synchronised<T>(group: Option<&'static ProcessGroup>, passes: impl FnOnce() -> T) -> Result<T, ModelError> {
    let previous = GROUP.replace(group);
    let out = passes();
    GROUP.set(previous);
    match FAILURE.take() {
        Some(cause) => Err(ModelError::Arch(format!("synchronised batch norm: {cause}"))),
        None => Ok(out),
    }
}

/// `bn` applied to `x`: statistics of this batch in training mode (of every rank's batch inside
/// [`synchronised`]), running statistics otherwise.
pub fn batch_norm(x: &Tensor, bn: &nn::BatchNorm, train: bool) -> Tensor {
    batch_norm_eps(x, bn, EPS, train)
}

/// [`batch_norm`] of a batch norm made with epsilon `eps` (tch keeps its config private).
pub fn batch_norm_eps(x: &Tensor, bn: &nn::BatchNorm, eps: f64, train: bool) -> Tensor {
    let Some(group) = GROUP.get().filter(|_| train) else { return x.apply_t(bn, train) };
    match group.batch_norm(x, bn.ws.as_ref(), bn.bs.as_ref(), &bn.running_mean, &bn.running_var, MOMENTUM, eps) {
        Ok(y) => y,
        Err(e) => {
            FAILURE.with(|f| {
                f.borrow_mut().get_or_insert(e.to_string());
            });
            x.apply_t(bn, train)
        }
    }
}
