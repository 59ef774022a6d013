//! Heads the self-supervised methods put on a backbone, named as a PyTorch `nn.Sequential` is
//! (`<name>.0` Linear, `<name>.1` BatchNorm1d, `<name>.3` Linear, …).

use tch::nn::{self, ModuleT};
use tch::Tensor;

/// An MLP: Linear → [BatchNorm1d] → ReLU, repeated, then a last Linear (→ [BatchNorm1d
/// without affine]). SimCLR's projector (BN, last BN), BYOL's projector and predictor (BN), MoCo
/// v2's head (no BN).
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<(nn::Linear, Option<nn::BatchNorm>)>,
}

/// Shape of an [`Mlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct MlpSpec {
    /// Input, hidden…, output widths.
    pub dims: Vec<i64>,
    /// Batch norm after each hidden Linear.
    pub batch_norm: bool,
    /// Batch norm (no affine) after the last Linear.
    pub last_batch_norm: bool,
}

impl Mlp {
    pub fn new(p: &nn::Path, spec: &MlpSpec) -> Self {
        let n = spec.dims.len() - 1;
        let mut index = 0;
        let mut layers = Vec::with_capacity(n);
        for (i, w) in spec.dims.windows(2).enumerate() {
            let last = i + 1 == n;
            let linear = nn::linear(p / index, w[0], w[1], Default::default());
            index += 1;
            let bn = if (!last && spec.batch_norm) || (last && spec.last_batch_norm) {
                let affine = !last;
                let cfg = nn::BatchNormConfig { affine, ..Default::default() };
                let b = nn::batch_norm1d(p / index, w[1], cfg);
                index += 1;
                Some(b)
            } else {
                None
            };
            if !last {
                index += 1; // the ReLU's slot
            }
            layers.push((linear, bn));
        }
        Self { layers }
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let n = self.layers.len();
        let mut y = xs.shallow_clone();
        for (i, (linear, bn)) in self.layers.iter().enumerate() {
            y = y.apply(linear);
            if let Some(bn) = bn {
                y = y.apply_t(bn, train);
            }
            if i + 1 < n {
                y = y.relu();
            }
        }
        y
    }
}

/// Mean over dimensions of the standard deviation of l2-normalised embeddings across the
/// batch: about 1/√D when they spread over the sphere, 0 when they collapse to one point.
pub fn collapse_std(z: &Tensor) -> f64 {
    let n = crate::loss::l2_normalize(&z.detach().to_kind(tch::Kind::Float));
    n.std_dim([0].as_slice(), true, false).mean(tch::Kind::Float).double_value(&[])
}
