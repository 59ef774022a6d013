//! Evaluation over the ranks of a distributed run: each rank evaluates its share of a set
//! (the loaders shard it without repeats) and these put the shares together, so every rank
//! holds the metrics of the whole set. In a single process they return their input.

use patchtcga_collective::ProcessGroup;
use tch::{Device, Kind, Tensor};

use crate::LearnError;

/// Every rank's rows of `t`, in rank order (on `t`'s device); `t` itself without a `group`.
pub fn gather_rows(group: Option<&ProcessGroup>, t: Tensor) -> Result<Tensor, LearnError> {
    match group {
        Some(g) => Ok(g.all_gather_rows(&t.to_device(Device::Cpu))?.to_device(t.device())),
        None => Ok(t),
    }
}

/// Element-wise sums over the ranks (counts and loss totals; exact for integers below 2^53).
pub fn sum(group: Option<&ProcessGroup>, values: &[f64]) -> Result<Vec<f64>, LearnError> {
    let Some(g) = group else { return Ok(values.to_vec()) };
    let t = Tensor::from_slice(values).to_kind(Kind::Double);
    g.all_reduce_sum(&t)?;
    Ok(Vec::<f64>::try_from(&t)?)
}
