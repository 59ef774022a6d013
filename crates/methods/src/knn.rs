//! The k-NN classifier of InstDisc and DINO's evaluation: class votes of the most similar
//! samples, and the leave-one-out accuracy that self-supervised runs monitor.

use tch::{Device, Kind, Tensor};

use crate::loss::l2_normalize;

/// Class votes (queries, `classes`) of the `k` most similar bank samples in a similarity matrix
/// (queries, bank) with the bank's `labels`, each weighted by exp(similarity / `temperature`)
/// (the k-NN of InstDisc and DINO's evaluation).
pub fn knn_votes(sim: &Tensor, labels: &Tensor, classes: i64, k: i64, temperature: f64) -> Tensor {
    let (top, idx) = sim.topk(k.min(sim.size()[1]), -1, true, true);
    let neighbour_labels = labels.index_select(0, &idx.reshape([-1])).reshape(idx.size());
    let votes = Tensor::zeros([sim.size()[0], classes], (Kind::Float, sim.device()));
    votes.scatter_add(1, &neighbour_labels, &(top / temperature).exp())
}

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
