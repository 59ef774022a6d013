//! Vision Transformer as timm builds it (`vit_small_patch16_224` and kin, and the DINOv2-style
//! foundation models: patch 14, register tokens, LayerScale, packed SwiGLU), with timm's parameter
//! names (`patch_embed.proj`, `cls_token`, `reg_token`, `pos_embed`, `blocks.N.attn.qkv`,
//! `blocks.N.ls1.gamma`, `blocks.N.mlp.fc1`, `norm`), so timm, DINO and MAE checkpoints load by name.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// How a position embedding is resampled to another patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosResample {
    /// timm's `resample_abs_pos_embed`: bicubic to the grid size, antialiased.
    Timm,
    /// DINO's and DINOv2's `interpolate_pos_encoding`: bicubic by the scale factor (grid + 0.1) / g,
    /// without antialiasing (how the release's DINO saw its local crops).
    Dino,
    /// Hugging Face `ViTModel`'s `interpolate_pos_encoding`: bicubic to the grid size, without
    /// antialiasing.
    Plain,
}

/// The MLP of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mlp {
    /// `fc1` → GELU → `fc2` (timm's `Mlp`).
    Gelu,
    /// timm's `SwiGLUPacked`: `fc1` to twice the gate width, SiLU of its first half times the
    /// second half, `fc2` (DINOv2's `w12`/`w3`).
    SwiGlu,
}

/// The features a ViT hands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The class token after the final norm (timm's `global_pool="token"`).
    Cls,
    /// The class token concatenated with the mean of the patch tokens, registers excluded
    /// (Virchow's and Virchow2's embedding): twice the width.
    ClsAndPatchMean,
    /// CONCH's contrastive attentional pooler over all tokens after the final norm: one learned
    /// query of `dim` (LayerNorm `ln_q`, `to_q`) attending with `heads` heads to the tokens
    /// (LayerNorm `ln_k`, `to_kv`), `to_out`, then LayerNorm `ln_contrast`; no biases. The
    /// trunk's names go under `trunk.`, the pooler's under `attn_pool_contrast.`.
    Attentional { dim: i64, heads: i64 },
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
    /// Register tokens after the class token (timm's `reg_tokens`).
    pub reg_tokens: i64,
    /// The position embedding covers the patches only (timm's `no_embed_class`); otherwise it
    /// also covers the class and register tokens.
    pub no_embed_class: bool,
    /// LayerScale gammas on both residual branches (`ls1.gamma`, `ls2.gamma`).
    pub layer_scale: bool,
    pub mlp: Mlp,
    /// LayerNorm epsilon (timm 1e-6; Hugging Face `ViTModel` 1e-12).
    pub ln_eps: f64,
    pub pool: Pool,
}

impl VitConfig {
    /// A plain timm ViT at 224 px of this shape.
    pub const fn preset(patch: i64, dim: i64, depth: i64, heads: i64) -> Self {
        Self {
            patch,
            dim,
            depth,
            heads,
            mlp_ratio: 4.0,
            img_size: 224,
            drop_path: 0.0,
            pos_resample: PosResample::Timm,
            reg_tokens: 0,
            no_embed_class: false,
            layer_scale: false,
            mlp: Mlp::Gelu,
            ln_eps: 1e-6,
            pool: Pool::Cls,
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

    /// Class and register tokens.
    pub fn prefix_tokens(&self) -> i64 {
        1 + self.reg_tokens
    }

    /// Tokens the position embedding covers before the grid.
    pub fn pos_prefix(&self) -> i64 {
        if self.no_embed_class {
            0
        } else {
            self.prefix_tokens()
        }
    }

    /// Hidden width of a block's MLP (timm's `int(dim · mlp_ratio)`).
    pub fn mlp_hidden(&self) -> i64 {
        (self.dim as f64 * self.mlp_ratio) as i64
    }

    /// Width of the features [`Vit::features`] returns.
    pub fn feature_dim(&self) -> i64 {
        match self.pool {
            Pool::Cls => self.dim,
            Pool::ClsAndPatchMean => 2 * self.dim,
            Pool::Attentional { dim, .. } => dim,
        }
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
    layer_norm_eps(p, d, 1e-6)
}

fn layer_norm_eps(p: nn::Path, d: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![d], nn::LayerNormConfig { eps, ..Default::default() })
}

/// A LayerScale gamma (`…/gamma`, timm's `init_values` 1e-5), or none.
fn layer_scale(p: nn::Path, d: i64, on: bool) -> Option<Tensor> {
    on.then(|| p.var("gamma", &[d], Init::Const(1e-5)))
}

fn scaled(x: Tensor, gamma: &Option<Tensor>) -> Tensor {
    match gamma {
        Some(g) => x * g,
        None => x,
    }
}

/// Drops whole residual branches per sample while training (timm's `DropPath`).
pub(crate) fn drop_path(x: Tensor, rate: f64, train: bool) -> Tensor {
    if !train || rate <= 0.0 {
        return x;
    }
    let keep = 1.0 - rate;
    let mut shape = vec![x.size()[0]];
    shape.extend(std::iter::repeat_n(1, x.dim() - 1));
    let mask = Tensor::empty(shape.as_slice(), (x.kind(), x.device())).bernoulli_float_(keep);
    x * mask / keep
}

/// A pre-norm transformer block (`norm1`, `attn.qkv`, `attn.proj`, `ls1`, `norm2`, `mlp.fc1`,
/// `mlp.fc2`, `ls2`), also the MAE decoder's.
pub struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    ls1: Option<Tensor>,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    ls2: Option<Tensor>,
    mlp: Mlp,
    heads: i64,
    drop_path: f64,
}

impl Block {
    /// A plain block of width `dim` with `heads` attention heads and a GELU MLP of
    /// `mlp_ratio`·`dim` (the MAE decoder's).
    pub fn new(p: &nn::Path, dim: i64, heads: i64, mlp_ratio: f64, drop_path: f64) -> Self {
        let c = VitConfig { dim, heads, mlp_ratio, ..VitConfig::S16 };
        Self::of(p, &c, drop_path)
    }

    /// A block of a ViT of config `c`.
    fn of(p: &nn::Path, c: &VitConfig, drop_path: f64) -> Self {
        let (d, hidden) = (c.dim, c.mlp_hidden());
        let fc2_in = match c.mlp {
            Mlp::Gelu => hidden,
            Mlp::SwiGlu => hidden / 2,
        };
        Self {
            norm1: layer_norm_eps(p / "norm1", d, c.ln_eps),
            qkv: linear(p / "attn" / "qkv", d, 3 * d),
            proj: linear(p / "attn" / "proj", d, d),
            ls1: layer_scale(p / "ls1", d, c.layer_scale),
            norm2: layer_norm_eps(p / "norm2", d, c.ln_eps),
            fc1: linear(p / "mlp" / "fc1", d, hidden),
            fc2: linear(p / "mlp" / "fc2", fc2_in, d),
            ls2: layer_scale(p / "ls2", d, c.layer_scale),
            mlp: c.mlp,
            heads: c.heads,
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

    fn feed_forward(&self, x: &Tensor) -> Tensor {
        let h = x.apply(&self.fc1);
        let h = match self.mlp {
            Mlp::Gelu => h.gelu("none"),
            Mlp::SwiGlu => {
                let half = h.size()[h.dim() - 1] / 2;
                h.narrow(-1, 0, half).silu() * h.narrow(-1, half, half)
            }
        };
        h.apply(&self.fc2)
    }

    /// Tokens (N, T, D) → tokens.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let attn = scaled(self.attention(&x.apply(&self.norm1)), &self.ls1);
        let x = x + drop_path(attn, self.drop_path, train);
        let mlp = scaled(self.feed_forward(&x.apply(&self.norm2)), &self.ls2);
        &x + drop_path(mlp, self.drop_path, train)
    }
}

/// CONCH's contrastive attentional pooler ([`Pool::Attentional`]).
struct AttentionalPooler {
    query: Tensor,
    ln_q: nn::LayerNorm,
    ln_k: nn::LayerNorm,
    to_q: nn::Linear,
    to_kv: nn::Linear,
    to_out: nn::Linear,
    ln_contrast: nn::LayerNorm,
    heads: i64,
}

impl AttentionalPooler {
    /// Under `p`: `attn_pool_contrast.*` and `ln_contrast`, over tokens of width `context`.
    fn new(p: &nn::Path, context: i64, dim: i64, heads: i64) -> Self {
        let a = p / "attn_pool_contrast";
        let plain = |p: nn::Path, i, o| nn::linear(p, i, o, nn::LinearConfig { bias: false, ..Default::default() });
        Self {
            query: a.var("query", &[1, dim], Init::Randn { mean: 0.0, stdev: 1.0 }),
            ln_q: layer_norm_eps(&a / "ln_q", dim, 1e-5),
            ln_k: layer_norm_eps(&a / "ln_k", context, 1e-5),
            to_q: plain(&a / "to_q", dim, dim),
            to_kv: plain(&a / "to_kv", context, 2 * dim),
            to_out: plain(&a / "to_out", dim, dim),
            ln_contrast: layer_norm_eps(p / "ln_contrast", dim, 1e-5),
            heads,
        }
    }

    /// Tokens (N, T, context) → the pooled embedding (N, dim).
    fn forward(&self, tokens: &Tensor) -> Tensor {
        let n = tokens.size()[0];
        let (dim, h) = (self.query.size()[1], self.heads);
        let heads = |t: Tensor| {
            let len = t.size()[1];
            t.reshape([n, len, h, dim / h]).transpose(1, 2)
        };
        let q = heads(self.query.apply(&self.ln_q).apply(&self.to_q).expand([n, 1, dim], false));
        let kv = tokens.apply(&self.ln_k).apply(&self.to_kv).chunk(2, -1);
        let (k, v) = (heads(kv[0].shallow_clone()), heads(kv[1].shallow_clone()));
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false);
        y.transpose(1, 2).reshape([n, dim]).apply(&self.to_out).apply(&self.ln_contrast)
    }
}

/// A timm ViT without its `head`: images (N, 3, H, W) → pooled features after the final norm.
pub struct Vit {
    proj: nn::Conv2D,
    cls_token: Tensor,
    reg_token: Option<Tensor>,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    pooler: Option<Box<AttentionalPooler>>,
    config: VitConfig,
}

impl Vit {
    /// Creates the parameters under `p` with timm's names (under `p/trunk`, with the pooler
    /// beside it, for [`Pool::Attentional`]).
    pub fn new(root: &nn::Path, config: VitConfig) -> Self {
        let d = config.dim;
        let pooler = match config.pool {
            Pool::Attentional { dim, heads } => Some(Box::new(AttentionalPooler::new(root, d, dim, heads))),
            _ => None,
        };
        let trunk = root / "trunk";
        let p = if pooler.is_some() { &trunk } else { root };
        let proj = nn::conv2d(
            p / "patch_embed" / "proj",
            3,
            d,
            config.patch,
            nn::ConvConfig { stride: config.patch, ..Default::default() },
        );
        let cls_token = p.var("cls_token", &[1, 1, d], Init::Randn { mean: 0.0, stdev: 1e-6 });
        let reg_token = (config.reg_tokens > 0)
            .then(|| p.var("reg_token", &[1, config.reg_tokens, d], Init::Randn { mean: 0.0, stdev: 1e-6 }));
        let tokens = config.grid() * config.grid() + config.pos_prefix();
        let pos_embed = p.var("pos_embed", &[1, tokens, d], Init::Randn { mean: 0.0, stdev: 0.02 });
        let blocks = (0..config.depth)
            .map(|i| {
                let rate = if config.depth > 1 { config.drop_path * i as f64 / (config.depth - 1) as f64 } else { 0.0 };
                Block::of(&(p / "blocks" / i), &config, rate)
            })
            .collect();
        let norm = layer_norm_eps(p / "norm", d, config.ln_eps);
        Self { proj, cls_token, reg_token, pos_embed, blocks, norm, pooler, config }
    }

    /// Class, register and patch tokens with position embeddings added (N, 1+r+h·w, D), in timm's
    /// order.
    pub fn embed(&self, x: &Tensor) -> Tensor {
        let patches = self.patch_tokens(x);
        let (n, _, d) = patches.size3().expect("tokens");
        let prefix = self.prefix_tokens();
        let r = prefix.size()[1];
        Tensor::cat(&[prefix.expand([n, r, d], true), patches], 1)
    }

    /// Patch tokens with their position embeddings, without the class token (N, h·w, D), in
    /// row-major grid order (what MAE masks).
    pub fn patch_tokens(&self, x: &Tensor) -> Tensor {
        let y = x.apply(&self.proj);
        let (_, _, h, w) = y.size4().expect("patch grid");
        let skip = self.config.pos_prefix();
        y.flatten(2, 3).transpose(1, 2) + self.pos_embed_for(h, w).narrow(1, skip, h * w)
    }

    /// The class token with its position embedding (1, 1, D).
    pub fn class_token(&self) -> Tensor {
        self.prefix_tokens().narrow(1, 0, 1)
    }

    /// The class and register tokens with their position embeddings where the embedding covers
    /// them (1, 1+r, D).
    fn prefix_tokens(&self) -> Tensor {
        let tokens = match &self.reg_token {
            Some(r) => Tensor::cat(&[&self.cls_token, r], 1),
            None => self.cls_token.shallow_clone(),
        };
        match self.config.pos_prefix() {
            0 => tokens,
            k => tokens + self.pos_embed.narrow(1, 0, k),
        }
    }

    /// The position embedding resampled to an h×w patch grid (the config's `pos_resample`).
    pub fn pos_embed_for(&self, h: i64, w: i64) -> Tensor {
        resample_pos_embed(&self.pos_embed, self.config.pos_prefix(), h, w, self.config.pos_resample)
    }

    /// Runs the blocks and the final norm on tokens (N, T, D).
    pub fn encode(&self, tokens: &Tensor, train: bool) -> Tensor {
        let mut y = tokens.shallow_clone();
        for b in &self.blocks {
            y = b.forward(&y, train);
        }
        y.apply(&self.norm)
    }

    /// All tokens after the final norm (N, 1+r+h·w, D).
    pub fn tokens(&self, x: &Tensor, train: bool) -> Tensor {
        self.encode(&self.embed(x), train)
    }

    /// The pooled features (N, [`VitConfig::feature_dim`]): the class token after the final norm
    /// (timm's `forward_head(…, pre_logits=True)`), or with the patch-token mean beside it.
    pub fn features(&self, x: &Tensor, train: bool) -> Tensor {
        let t = self.tokens(x, train);
        let cls = t.select(1, 0);
        match (self.config.pool, &self.pooler) {
            (Pool::ClsAndPatchMean, _) => {
                let skip = self.config.prefix_tokens();
                let patches = t.narrow(1, skip, t.size()[1] - skip);
                Tensor::cat(&[cls, patches.mean_dim(1, false, None)], 1)
            }
            (_, Some(pooler)) => pooler.forward(&t),
            _ => cls,
        }
    }

    pub fn config(&self) -> &VitConfig {
        &self.config
    }
}

/// Resamples a (1, k+g·g, D) position embedding to an h×w grid, keeping its first `k` entries (the
/// class and register tokens'; bicubic, corners not aligned; see [`PosResample`]).
pub fn resample_pos_embed(pos_embed: &Tensor, k: i64, h: i64, w: i64, how: PosResample) -> Tensor {
    let (_, tokens, d) = pos_embed.size3().expect("pos_embed is (1, tokens, dim)");
    let g =
        grid_side(tokens - k).unwrap_or_else(|| panic!("pos_embed with {tokens} tokens is not {k} + a square grid"));
    if g == h && g == w {
        return pos_embed.shallow_clone();
    }
    let kind = pos_embed.kind();
    let prefix = pos_embed.narrow(1, 0, k);
    let grid = pos_embed.narrow(1, k, g * g).to_kind(Kind::Float).reshape([1, g, g, d]).permute([0, 3, 1, 2]);
    let grid = match how {
        PosResample::Timm => grid.internal_upsample_bicubic2d_aa([h, w], false, None, None),
        PosResample::Dino => {
            let scale = |n: i64| Some((n as f64 + 0.1) / g as f64);
            grid.upsample_bicubic2d([h, w], false, scale(h), scale(w))
        }
        PosResample::Plain => grid.upsample_bicubic2d([h, w], false, None, None),
    };
    let grid = grid.permute([0, 2, 3, 1]).reshape([1, h * w, d]).to_kind(kind);
    Tensor::cat(&[prefix, grid], 1)
}

/// The side of a square grid of `n` patches, if `n` is a square.
pub fn grid_side(n: i64) -> Option<i64> {
    let g = (n.max(0) as f64).sqrt().round() as i64;
    (g * g == n).then_some(g)
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
