//! TransMIL (Shao et al., 2021): instances projected to 512, a class token, the bag padded to a
//! square, two Transformer layers of Nyström attention (Xiong et al., 2021) with the PPEG
//! position encoding between them, and a classifier on the class token; TransMIL's parameter
//! names (`_fc1.0`, `cls_token`, `layer1.attn.to_qkv`, `pos_layer.proj`, `norm`, `_fc2`).

use tch::nn::{self, Module};
use tch::Tensor;

/// Token width.
const DIM: i64 = 512;
/// Attention heads (of 64).
const HEADS: i64 = 8;
/// Nyström landmarks.
const LANDMARKS: i64 = 256;
/// Iterations of the pseudo-inverse.
const PINV_ITERATIONS: usize = 6;
/// Dropout after each attention's output projection while training.
const DROPOUT: f64 = 0.1;

/// Nyström self-attention: landmarks are means of consecutive tokens (after zero-padding at the
/// front to a multiple of their number), softmax(QK̃ᵀ) · pinv(softmax(Q̃K̃ᵀ)) · softmax(Q̃Kᵀ)V, plus a
/// 33 × 1 depthwise convolution of the values.
struct Nystrom {
    to_qkv: nn::Linear,
    to_out: nn::Linear,
    res_conv: nn::Conv<[i64; 2]>,
}

impl Nystrom {
    fn new(p: &nn::Path) -> Self {
        let res = nn::ConvConfigND { padding: [16, 0], groups: HEADS, bias: false, ..Default::default() };
        Self {
            to_qkv: nn::linear(p / "to_qkv", DIM, 3 * DIM, nn::LinearConfig { bias: false, ..Default::default() }),
            to_out: nn::linear(p / "to_out" / 0, DIM, DIM, Default::default()),
            res_conv: nn::conv(p / "res_conv", HEADS, HEADS, [33, 1], res),
        }
    }

    /// x: (1, n, DIM) → (1, n, DIM).
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (n, m, dh) = (x.size()[1], LANDMARKS, DIM / HEADS);
        let x = if n % m != 0 { x.constant_pad_nd([0, 0, m - n % m, 0]) } else { x.shallow_clone() };
        let heads = |t: &Tensor| t.reshape([1, -1, HEADS, dh]).permute([0, 2, 1, 3]);
        let qkv = self.to_qkv.forward(&x).chunk(3, -1);
        let (q, k, v) = (heads(&qkv[0]) * (dh as f64).powf(-0.5), heads(&qkv[1]), heads(&qkv[2]));
        let l = (n + m - 1) / m;
        let landmarks = |t: &Tensor| t.reshape([1, HEADS, m, l, dh]).sum_dim_intlist(3, false, t.kind()) / l as f64;
        let (ql, kl) = (landmarks(&q), landmarks(&k));
        let attend = |a: &Tensor, b: &Tensor| a.matmul(&b.transpose(-1, -2)).softmax(-1, a.kind());
        let out = attend(&q, &kl).matmul(&pinv(&attend(&ql, &kl))).matmul(&attend(&ql, &k).matmul(&v))
            + self.res_conv.forward(&v);
        let out = out.permute([0, 2, 1, 3]).reshape([1, -1, DIM]);
        let out = self.to_out.forward(&out).dropout(DROPOUT, train);
        let len = out.size()[1];
        out.narrow(1, len - n, n)
    }
}

/// The iterative Moore–Penrose pseudo-inverse of softmax matrices (Razavi et al.'s iteration, as
/// Nyströmformer uses it), scaled by the largest row and column sums.
fn pinv(x: &Tensor) -> Tensor {
    let a = x.abs();
    let scale = a.sum_dim_intlist(-1, false, x.kind()).max() * a.sum_dim_intlist(-2, false, x.kind()).max();
    let mut z = x.transpose(-1, -2) / scale;
    let eye = Tensor::eye(x.size()[x.dim() - 1], (x.kind(), x.device()));
    for _ in 0..PINV_ITERATIONS {
        let xz = x.matmul(&z);
        let inner = &eye * 7.0 - &xz;
        let inner = &eye * 15.0 - xz.matmul(&inner);
        z = z.matmul(&(&eye * 13.0 - xz.matmul(&inner))) * 0.25;
    }
    z
}

/// A pre-norm Transformer layer of Nyström attention (no MLP, as TransMIL's).
struct Layer {
    norm: nn::LayerNorm,
    attn: Nystrom,
}

impl Layer {
    fn new(p: &nn::Path) -> Self {
        Self { norm: nn::layer_norm(p / "norm", vec![DIM], Default::default()), attn: Nystrom::new(&(p / "attn")) }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        x + self.attn.forward(&self.norm.forward(x), train)
    }
}

/// The TransMIL network.
pub struct TransMil {
    fc1: nn::Linear,
    cls_token: Tensor,
    layer1: Layer,
    layer2: Layer,
    /// PPEG's depthwise 7 × 7, 5 × 5 and 3 × 3 convolutions.
    ppeg: [nn::Conv2D; 3],
    norm: nn::LayerNorm,
    fc2: nn::Linear,
}

impl TransMil {
    /// Creates the parameters under `p` for `input`-wide instances and `classes` classes.
    pub fn new(p: &nn::Path, input: i64, classes: i64) -> Self {
        let depthwise = |name: &str, k: i64| {
            nn::conv2d(
                p / "pos_layer" / name,
                DIM,
                DIM,
                k,
                nn::ConvConfig { padding: k / 2, groups: DIM, ..Default::default() },
            )
        };
        Self {
            fc1: nn::linear(p / "_fc1" / 0, input, DIM, Default::default()),
            cls_token: p.var("cls_token", &[1, 1, DIM], nn::Init::Randn { mean: 0.0, stdev: 1.0 }),
            layer1: Layer::new(&(p / "layer1")),
            layer2: Layer::new(&(p / "layer2")),
            ppeg: [depthwise("proj", 7), depthwise("proj1", 5), depthwise("proj2", 3)],
            norm: nn::layer_norm(p / "norm", vec![DIM], Default::default()),
            fc2: nn::linear(p / "_fc2", DIM, classes, Default::default()),
        }
    }

    /// The bag's (1, C) logits and its (N, DIM) projected instances.
    pub fn forward(&self, bag: &Tensor, train: bool) -> (Tensor, Tensor) {
        let h = self.fc1.forward(bag).relu();
        let n = h.size()[0];
        let side = (n as f64).sqrt().ceil() as i64;
        let square = Tensor::cat(&[&h, &h.narrow(0, 0, side * side - n)], 0);
        let x = Tensor::cat(&[self.cls_token.get(0), square], 0).unsqueeze(0);
        let x = self.layer1.forward(&x, train);
        let x = self.position(&x, side);
        let x = self.layer2.forward(&x, train);
        let logits = self.fc2.forward(&self.norm.forward(&x).select(1, 0));
        (logits, h)
    }

    /// PPEG: the tokens after the class token as a side × side map, plus their depthwise
    /// convolutions.
    fn position(&self, x: &Tensor, side: i64) -> Tensor {
        let cls = x.narrow(1, 0, 1);
        let map = x.narrow(1, 1, side * side).transpose(1, 2).reshape([1, DIM, side, side]);
        let mixed = self.ppeg.iter().fold(map.shallow_clone(), |acc, conv| acc + conv.forward(&map));
        Tensor::cat(&[cls, mixed.flatten(2, 3).transpose(1, 2)], 1)
    }
}

#[cfg(test)]
mod tests {
    use super::pinv;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn pinv_of_a_softmax_matrix_inverts_it() {
        let x =
            (Tensor::arange(16, (Kind::Double, Device::Cpu)).reshape([1, 4, 4]).sin() * 2.0).softmax(-1, Kind::Double);
        let z = pinv(&x);
        let err = (x.matmul(&z) - Tensor::eye(4, (Kind::Double, Device::Cpu))).abs().max().double_value(&[]);
        assert!(err < 1e-3, "x · pinv(x) is {err} away from the identity after 6 iterations");
    }
}
