//! Batch norm as the networks apply it: per process, or synchronised over the ranks of a
//! distributed run (`patchtcga_dist::set_sync_batch_norm`) in training mode.

use tch::{nn, Tensor};

/// PyTorch's defaults, which every batch norm here uses.
const MOMENTUM: f64 = 0.1;
const EPS: f64 = 1e-5;

/// `bn` applied to `x`: statistics of this batch in training mode (of every rank's batch when
/// synchronised), running statistics otherwise.
pub fn batch_norm(x: &Tensor, bn: &nn::BatchNorm, train: bool) -> Tensor {
    match patchtcga_dist::batch_norm_group().filter(|_| train) {
        Some(group) => group
            .batch_norm(x, bn.ws.as_ref(), bn.bs.as_ref(), &bn.running_mean, &bn.running_var, MOMENTUM, EPS)
            .unwrap_or_else(|e| panic!("{e}")),
        None => x.apply_t(bn, train),
    }
}
