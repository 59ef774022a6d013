//! TITAN's slide encoder (Ding et al. 2024; MahmoodLab/TITAN's `vision_encoder`) over CONCH v1.5
//! patch features: the features laid on a 2-D grid whose cell is the patch's level-0 footprint
//! (patches in one cell summed, empty cells dropped), a per-feature MLP embedding, a class token,
//! six pre-norm transformer blocks whose attention carries 2-D ALiBi biases (minus each head's
//! slope times the cells' Euclidean distance), and the contrastive attentional pooler (one
//! learned query) whose output is the slide embedding (`encode_slide_from_patch_features`).

use std::path::Path;

use patchtcga_model::{Checkpoint, ImportOptions, ImportReport};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use patchtcga_engine::LearnError;

/// Attention heads of TITAN's blocks and of its pooler (fixed by its configuration, not stored
/// in the weights).
const HEADS: i64 = 12;
const POOLER_HEADS: i64 = 8;

/// TITAN's widths and depth, read from its weight file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TitanShape {
    /// Patch feature width (768: CONCH v1.5).
    pub input: i64,
    /// Token width (768).
    pub embed: i64,
    /// MLP hidden width (3072).
    pub hidden: i64,
    /// Transformer blocks (6).
    pub depth: i64,
}

struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

/// `nn.MultiheadAttention` of the pooler, its learned queries and their norms.
struct Pooler {
    query: Tensor,
    ln_q: nn::LayerNorm,
    ln_k: nn::LayerNorm,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: nn::Linear,
}

/// The network, its weights on a device.
pub struct Titan {
    vs: nn::VarStore,
    patch_embed: nn::Linear,
    cls_token: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    pooler: Pooler,
    shape: TitanShape,
}

fn layer_norm(p: nn::Path, width: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![width], nn::LayerNormConfig { eps, ..Default::default() })
}

fn linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    nn::linear(p, i, o, Default::default())
}

impl Titan {
    /// TITAN with the weights of `path` (TITAN's names under any prefix, `vision_encoder.` in the
    /// published file, whose text encoder, captioning pooler and projection are left out).
    pub fn load(path: &Path, device: Device) -> Result<(Self, ImportReport), LearnError> {
        let shape = shape_of(path)?;
        let vs = nn::VarStore::new(device);
        let p = vs.root();
        let (d, eps) = (shape.embed, 1e-6);
        let blocks = (0..shape.depth)
            .map(|i| {
                let b = &p / "blocks" / "modules_list" / i;
                Block {
                    norm1: layer_norm(&b / "norm1", d, eps),
                    qkv: linear(&b / "attn" / "qkv", d, 3 * d),
                    proj: linear(&b / "attn" / "proj", d, d),
                    norm2: layer_norm(&b / "norm2", d, eps),
                    fc1: linear(&b / "mlp" / "fc1", d, shape.hidden),
                    fc2: linear(&b / "mlp" / "fc2", shape.hidden, d),
                }
            })
            .collect();
        let q = &p / "attn_pool_contrastive";
        let pooler = Pooler {
            query: q.zeros("query", &[1, d]),
            ln_q: layer_norm(&q / "ln_q", d, 1e-5),
            ln_k: layer_norm(&q / "ln_k", d, 1e-5),
            in_proj_weight: (&q / "attn").zeros("in_proj_weight", &[3 * d, d]),
            in_proj_bias: (&q / "attn").zeros("in_proj_bias", &[3 * d]),
            out_proj: linear(&q / "attn" / "out_proj", d, d),
        };
        let net = Self {
            patch_embed: linear(&p / "patch_embed" / "0", shape.input, d),
            cls_token: p.zeros("cls_token", &[1, 1, d]),
            blocks,
            norm: layer_norm(&p / "norm", d, eps),
            pooler,
            shape,
            vs,
        };
        let opts = ImportOptions { allow_partial: true, ..Default::default() };
        let report = patchtcga_model::load(&net.vs, path, "head", &opts)?;
        let wanted = net.vs.variables().len();
        if report.loaded != wanted {
            return Err(LearnError::Config(format!(
                "{}: {} of TITAN's {wanted} tensors found ({})",
                path.display(),
                report.loaded,
                report.warnings.join("; ")
            )));
        }
        Ok((net, report))
    }

    /// The shape the weights have.
    pub fn shape(&self) -> TitanShape {
        self.shape
    }

    /// The slide embedding (`embed`) of patch features (N, input) at level-0 corners `coords`
    /// (N × [x, y]) of patches `footprint` level-0 pixels wide.
    pub fn forward(&self, features: &Tensor, coords: &[[i64; 2]], footprint: i64) -> Tensor {
        let device = self.vs.device();
        let grid = Grid::of(features, coords, footprint);
        let tokens = self.patch_embed.forward(&grid.features.to_device(device)).gelu("none");
        let mut x = Tensor::cat(&[self.cls_token.squeeze_dim(0), tokens], 0).unsqueeze(0);
        let bias = alibi(&grid.cells, HEADS).to_device(device);
        for b in &self.blocks {
            x = &x + self.attention(b, &b.norm1.forward(&x), &bias);
            x = &x + b.fc2.forward(&b.fc1.forward(&b.norm2.forward(&x)).gelu("none"));
        }
        self.pool(&self.norm.forward(&x).squeeze_dim(0))
    }

    /// Multi-head self-attention with the additive ALiBi bias.
    fn attention(&self, b: &Block, x: &Tensor, bias: &Tensor) -> Tensor {
        let (n, d) = (x.size()[1], self.shape.embed);
        let qkv = b.qkv.forward(x).reshape([1, n, 3, HEADS, d / HEADS]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(bias.to_kind(q.kind())), 0.0, false, None, false);
        b.proj.forward(&y.transpose(1, 2).reshape([1, n, d]))
    }

    /// The contrastive pooler's one query attending over the tokens (L, D): the embedding (D).
    fn pool(&self, tokens: &Tensor) -> Tensor {
        let p = &self.pooler;
        let (d, h) = (self.shape.embed, POOLER_HEADS);
        let q = p.ln_q.forward(&p.query);
        let kv = p.ln_k.forward(tokens);
        let w = p.in_proj_weight.chunk(3, 0);
        let b = p.in_proj_bias.chunk(3, 0);
        let heads = |t: Tensor| t.reshape([-1, h, d / h]).transpose(0, 1).unsqueeze(0);
        let q = heads(q.linear(&w[0], Some(&b[0])));
        let k = heads(kv.linear(&w[1], Some(&b[1])));
        let v = heads(kv.linear(&w[2], Some(&b[2])));
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false);
        p.out_proj.forward(&y.squeeze_dim(0).transpose(0, 1).reshape([-1, d])).squeeze_dim(0)
    }
}

/// Patch features on TITAN's grid: the occupied cells in order (x-major), each cell's summed
/// features.
struct Grid {
    /// (cells, input).
    features: Tensor,
    /// The occupied cells' (column, row) indices.
    cells: Vec<[i64; 2]>,
}

impl Grid {
    fn of(features: &Tensor, coords: &[[i64; 2]], footprint: i64) -> Self {
        let min = |a: usize| coords.iter().map(|c| c[a]).min().unwrap_or(0);
        let (x0, y0) = (min(0), min(1));
        let cell: Vec<[i64; 2]> =
            coords.iter().map(|c| [(c[0] - x0).div_euclid(footprint), (c[1] - y0).div_euclid(footprint)]).collect();
        let rows = cell.iter().map(|c| c[1]).max().unwrap_or(0) + 1;
        let index: Vec<i64> = cell.iter().map(|c| c[0] * rows + c[1]).collect();
        let cols = cell.iter().map(|c| c[0]).max().unwrap_or(0) + 1;
        let width = features.size()[1];
        let summed = Tensor::zeros([cols * rows, width], (Kind::Float, features.device())).index_add(
            0,
            &Tensor::from_slice(&index).to_device(features.device()),
            &features.to_kind(Kind::Float),
        );
        // A cell is empty when its summed features are all zero (TITAN's background mask).
        let occupied = Vec::<bool>::try_from(summed.ne(0.0).any_dim(1, false)).expect("a mask");
        let keep: Vec<i64> = (0..cols * rows).filter(|&i| occupied[i as usize]).collect();
        let cells = keep.iter().map(|&i| [i / rows, i % rows]).collect();
        let features = summed.index_select(0, &Tensor::from_slice(&keep).to_device(features.device()));
        Self { features, cells }
    }
}

/// TITAN's ALiBi slopes for `heads` heads: the geometric sequence of the nearest power of two
/// below, and for the rest every other slope of the next power of two.
fn slopes(heads: i64) -> Vec<f64> {
    fn power_of_two(n: i64) -> Vec<f64> {
        let p = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| p * p.powi(i as i32)).collect()
    }
    let below = 2i64.pow((heads as f64).log2().floor() as u32);
    let mut s = power_of_two(below);
    s.extend(power_of_two(2 * below).into_iter().step_by(2).take((heads - below) as usize));
    s
}

/// The additive attention bias (1, heads, 1 + cells, 1 + cells): minus each head's slope times
/// the Euclidean distance between cells, zero for the class token's row and column.
fn alibi(cells: &[[i64; 2]], heads: i64) -> Tensor {
    let n = cells.len();
    let mut dist = vec![0f32; n * n];
    for (i, a) in cells.iter().enumerate() {
        for (j, b) in cells.iter().enumerate() {
            let (dx, dy) = ((a[0] - b[0]) as f64, (a[1] - b[1]) as f64);
            dist[i * n + j] = (dx * dx + dy * dy).sqrt() as f32;
        }
    }
    let slopes: Vec<f32> = slopes(heads).into_iter().map(|s| s as f32).collect();
    let bias = Tensor::from_slice(&slopes).reshape([heads, 1, 1])
        * Tensor::from_slice(&dist).reshape([1, n as i64, n as i64])
        * -1.0;
    bias.constant_pad_nd([1, 0, 1, 0]).unsqueeze(0)
}

/// TITAN's shape from the shapes of `patch_embed.0.weight`, the first block's `mlp.fc1.weight`
/// and the number of blocks.
fn shape_of(path: &Path) -> Result<TitanShape, LearnError> {
    let ckpt = Checkpoint::open(path)?;
    let find = |suffix: &str| ckpt.tensors().iter().find(|t| t.name.ends_with(suffix)).map(|t| t.shape.clone());
    let depth = (0..).take_while(|i| find(&format!("blocks.modules_list.{i}.norm1.weight")).is_some()).count() as i64;
    match (find("patch_embed.0.weight").as_deref(), find("blocks.modules_list.0.mlp.fc1.weight").as_deref()) {
        (Some(&[embed, input]), Some(&[hidden, _])) if depth > 0 => Ok(TitanShape { input, embed, hidden, depth }),
        _ => Err(LearnError::Config(format!(
            "{}: not TITAN weights (no `patch_embed.0.weight` and `blocks.modules_list.N.*`; the published file is \
             model.safetensors of MahmoodLab/TITAN)",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes_follow_the_power_of_two_rule() {
        let s = slopes(12);
        let expect: Vec<f64> =
            (1..=8).map(|i| 0.5f64.powi(i)).chain([0.5, 1.5, 2.5, 3.5].map(|e| 2f64.powf(-e))).collect();
        assert!(s.iter().zip(&expect).all(|(a, b)| (a - b).abs() < 1e-12), "{s:?}");
        assert_eq!(slopes(8), (1..=8).map(|i| 0.5f64.powi(i)).collect::<Vec<_>>());
    }
}
