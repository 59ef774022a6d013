//! Vision Transformer as timm builds it (`vit_small_patch16_224` and kin), with timm's parameter
//! names (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.attn.qkv`, `blocks.N.mlp.fc1`,
//! `norm`), so timm, DINO and MAE checkpoints load by name.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// How a position embedding is resampled to another patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosResample {
    /// timm's `resample_abs_pos_embed`: bicubic to the grid size, antialiased.
    Timm,
    /// DINO's `interpolate_pos_encoding`: bicubic by the scale factor (grid + 0.1) / g, without
    /// antialiasing (how the release's DINO saw its local crops).
    Dino,
}

/// Shape of a ViT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VitConfig {
    pub patch: i64,
    pub dim: i64,
    pub depth: i64,
    pub heads: i64,
    pub mlp_ratio: f64,
    /// Image side the position embedding is made for; other sides interpolate it.
    pub img_size: i64,
    /// Stochastic depth rate of the last block (timm's `drop_path_rate`; 0 = off).
    pub drop_path: f64,
    /// Position-embedding resampling for inputs of another side.
    pub pos_resample: PosResample,
}

impl VitConfig {
    const fn preset(patch: i64, dim: i64, depth: i64, heads: i64) -> Self {
        Self {
            patch,
            dim,
            depth,
            heads,
            mlp_ratio: 4.0,
            img_size: 224,
            drop_path: 0.0,
            pos_resample: PosResample::Timm,
        }
    }
    pub const S16: Self = Self::preset(16, 384, 12, 6);
    pub const B16: Self = Self::preset(16, 768, 12, 12);
    pub const B32: Self = Self::preset(32, 768, 12, 12);
    pub const L16: Self = Self::preset(16, 1024, 24, 16);

    /// Patches per side at `img_size`.
    pub fn grid(&self) -> i64 {
        self.img_size / self.patch
    }
}

/// A Linear layer initialised as timm's ViT (weights N(0, 0.02), bias 0).
pub fn linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: Init::Randn { mean: 0.0, stdev: 0.02 },
        bs_init: Some(Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, i, o, cfg)
}

/// A LayerNorm with timm's ViT epsilon (1e-6).
pub fn layer_norm(p: nn::Path, d: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![d], nn::LayerNormConfig { eps: 1e-6, ..Default::default() })
}

/// Drops whole residual branches per sample while training (timm's `DropPath`).
fn drop_path(x: Tensor, rate: f64, train: bool) -> Tensor {
    if !train || rate <= 0.0 {
        return x;
    }
    let keep = 1.0 - rate;
    let mut shape = vec![x.size()[0]];
    shape.extend(std::iter::repeat_n(1, x.dim() - 1));
    let mask = Tensor::empty(shape.as_slice(), (x.kind(), x.device())).bernoulli_float_(keep);
    x * mask / keep
}

/// A pre-norm transformer block (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`,
/// `mlp.fc2`), also the MAE decoder's.
pub struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
    drop_path: f64,
}

impl Block {
    /// A block of width `dim` with `heads` attention heads and an MLP of `mlp_ratio`·`dim`.
    pub fn new(p: &nn::Path, dim: i64, heads: i64, mlp_ratio: f64, drop_path: f64) -> Self {
        let d = dim;
        let hidden = (d as f64 * mlp_ratio) as i64;
        Self {
            norm1: layer_norm(p / "norm1", d),
            qkv: linear(p / "attn" / "qkv", d, 3 * d),
            proj: linear(p / "attn" / "proj", d, d),
            norm2: layer_norm(p / "norm2", d),
            fc1: linear(p / "mlp" / "fc1", d, hidden),
            fc2: linear(p / "mlp" / "fc2", hidden, d),
            heads,
            drop_path,
        }
    }

    fn attention(&self, x: &Tensor) -> Tensor {
        let (b, n, d) = x.size3().expect("tokens are (batch, tokens, dim)");
        let qkv = x.apply(&self.qkv).reshape([b, n, 3, self.heads, d / self.heads]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false);
        y.transpose(1, 2).reshape([b, n, d]).apply(&self.proj)
    }

    /// Tokens (N, T, D) → tokens.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let x = x + drop_path(self.attention(&x.apply(&self.norm1)), self.drop_path, train);
        let mlp = x.apply(&self.norm2).apply(&self.fc1).gelu("none").apply(&self.fc2);
        &x + drop_path(mlp, self.drop_path, train)
    }
}

/// A timm ViT without its `head`: images (N, 3, H, W) → class token after the final norm (N, D).
pub struct Vit {
    proj: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    config: VitConfig,
}

impl Vit {
    /// Creates the parameters under `p` with timm's names.
    pub fn new(p: &nn::Path, config: VitConfig) -> Self {
        let d = config.dim;
        let proj = nn::conv2d(
            p / "patch_embed" / "proj",
            3,
            d,
            config.patch,
            nn::ConvConfig { stride: config.patch, ..Default::default() },
        );
        let cls_token = p.var("cls_token", &[1, 1, d], Init::Randn { mean: 0.0, stdev: 1e-6 });
        let tokens = config.grid() * config.grid() + 1;
        let pos_embed = p.var("pos_embed", &[1, tokens, d], Init::Randn { mean: 0.0, stdev: 0.02 });
        let blocks = (0..config.depth)
            .map(|i| {
                let rate = if config.depth > 1 { config.drop_path * i as f64 / (config.depth - 1) as f64 } else { 0.0 };
                Block::new(&(p / "blocks" / i), config.dim, config.heads, config.mlp_ratio, rate)
            })
            .collect();
        let norm = layer_norm(p / "norm", d);
        Self { proj, cls_token, pos_embed, blocks, norm, config }
    }

    /// Patch tokens with the class token prepended and position embeddings added (N, 1+h·w, D).
    pub fn embed(&self, x: &Tensor) -> Tensor {
        let patches = self.patch_tokens(x);
        let (n, _, d) = patches.size3().expect("tokens");
        Tensor::cat(&[self.class_token().expand([n, 1, d], true), patches], 1)
    }

    /// Patch tokens with their position embeddings, without the class token (N, h·w, D), in
    /// row-major grid order (what MAE masks).
    pub fn patch_tokens(&self, x: &Tensor) -> Tensor {
        let y = x.apply(&self.proj);
        let (_, _, h, w) = y.size4().expect("patch grid");
        y.flatten(2, 3).transpose(1, 2) + self.pos_embed_for(h, w).narrow(1, 1, h * w)
    }

    /// The class token with its position embedding (1, 1, D).
    pub fn class_token(&self) -> Tensor {
        &self.cls_token + self.pos_embed.narrow(1, 0, 1)
    }

    /// The position embedding resampled to an h×w patch grid (the config's `pos_resample`).
    pub fn pos_embed_for(&self, h: i64, w: i64) -> Tensor {
        resample_pos_embed(&self.pos_embed, h, w, self.config.pos_resample)
    }

    /// Runs the blocks and the final norm on tokens (N, T, D).
    pub fn encode(&self, tokens: &Tensor, train: bool) -> Tensor {
        let mut y = tokens.shallow_clone();
        for b in &self.blocks {
            y = b.forward(&y, train);
        }
        y.apply(&self.norm)
    }

    /// All tokens after the final norm (N, 1+h·w, D).
    pub fn tokens(&self, x: &Tensor, train: bool) -> Tensor {
        self.encode(&self.embed(x), train)
    }

    /// The class token after the final norm (N, D): timm's `forward_head(…, pre_logits=True)`.
    pub fn features(&self, x: &Tensor, train: bool) -> Tensor {
        self.tokens(x, train).select(1, 0)
    }

    pub fn config(&self) -> &VitConfig {
        &self.config
    }
}

/// Resamples a (1, 1+g·g, D) position embedding to an h×w grid, keeping the class token's entry
/// (bicubic, corners not aligned; see [`PosResample`]).
pub fn resample_pos_embed(pos_embed: &Tensor, h: i64, w: i64, how: PosResample) -> Tensor {
    let (_, tokens, d) = pos_embed.size3().expect("pos_embed is (1, tokens, dim)");
    let g = ((tokens - 1) as f64).sqrt().round() as i64;
    if g * g + 1 != tokens {
        panic!("pos_embed with {tokens} tokens is not a class token plus a square grid");
    }
    if g == h && g == w {
        return pos_embed.shallow_clone();
    }
    let kind = pos_embed.kind();
    let prefix = pos_embed.narrow(1, 0, 1);
    let grid = pos_embed.narrow(1, 1, g * g).to_kind(Kind::Float).reshape([1, g, g, d]).permute([0, 3, 1, 2]);
    let grid = match how {
        PosResample::Timm => grid.internal_upsample_bicubic2d_aa([h, w], false, None, None),
        PosResample::Dino => {
            let scale = |n: i64| Some((n as f64 + 0.1) / g as f64);
            grid.upsample_bicubic2d([h, w], false, scale(h), scale(w))
        }
    };
    let grid = grid.permute([0, 2, 3, 1]).reshape([1, h * w, d]).to_kind(kind);
    Tensor::cat(&[prefix, grid], 1)
}

/// MAE's fixed 2-D sine-cosine position embedding for a `grid`×`grid` patch grid with a zero
/// class-token row first (1, 1+grid², `dim`): the first half of the channels encodes the column,
/// the second half the row, each as sin then cos at frequencies 1/10000^(k/(dim/4)).
pub fn sincos_pos_embed(dim: i64, grid: i64) -> Tensor {
    let quarter = dim / 4;
    let omega = (Tensor::arange(quarter, (Kind::Double, tch::Device::Cpu)) / quarter as f64 * -(10000f64.ln())).exp();
    let axis = |pos: Tensor| {
        let out = pos.reshape([-1, 1]) * omega.reshape([1, -1]);
        Tensor::cat(&[out.sin(), out.cos()], 1)
    };
    let idx = Tensor::arange(grid * grid, (Kind::Double, tch::Device::Cpu));
    let (row, col) = ((&idx / grid as f64).floor(), idx.remainder(grid));
    let emb = Tensor::cat(&[axis(col), axis(row)], 1);
    let cls = Tensor::zeros([1, dim], (Kind::Double, tch::Device::Cpu));
    Tensor::cat(&[cls, emb], 0).unsqueeze(0).to_kind(Kind::Float)
}
