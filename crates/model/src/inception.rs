//! Inception v3 as torchvision builds it (`inception_v3`), with torchvision's parameter names
//! (`Conv2d_1a_3x3.conv`, `Mixed_5b.branch1x1.bn`, …, `AuxLogits.conv0`, `AuxLogits.fc`, `fc`).

use tch::nn;
use tch::Tensor;

use crate::norm::batch_norm_eps;

/// torchvision's `BasicConv2d` batch-norm epsilon.
const EPS: f64 = 1e-3;

/// Shape of an Inception v3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InceptionConfig {
    /// torchvision's `transform_input`: re-normalise ImageNet-normalised input to the (x − 0.5) / 0.5
    /// the Google weights were trained on. torchvision turns it on only with its ImageNet weights;
    /// a network trained from scratch runs without it.
    pub transform_input: bool,
}

impl InceptionConfig {
    /// As torchvision builds it with its ImageNet weights.
    pub const V3: Self = Self { transform_input: true };

    /// What weights of this network record of how it was built (safetensors metadata).
    pub fn attributes(&self) -> Vec<(String, String)> {
        vec![(TRANSFORM_INPUT_KEY.to_string(), self.transform_input.to_string())]
    }

    /// Channels of the pooled features.
    pub fn feature_dim(&self) -> i64 {
        2048
    }

    /// The smallest input side: 75 px (torchvision's `min_size`), or 299 px for the auxiliary
    /// classifier, whose 5×5 pooling and 5×5 convolution need `Mixed_6e` at least 17 wide.
    pub fn min_side(&self, with_aux: bool) -> i64 {
        if with_aux {
            299
        } else {
            75
        }
    }
}

/// The safetensors metadata key under which patchtcga's weights files record `transform_input`.
pub const TRANSFORM_INPUT_KEY: &str = "patchtcga.inception.transform_input";

/// How Inception v3's input transform (torchvision's `transform_input`) is chosen for a weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TransformInput {
    /// As the weights file records it (patchtcga's runs and exports do), else on: a `.pth` of
    /// Inception is most often torchvision's ImageNet weights, made with it on.
    #[default]
    Auto,
    /// On (torchvision's ImageNet weights).
    On,
    /// Off (a torchvision `inception_v3(weights=None)` model, or a run from scratch).
    Off,
}

/// Whether the transform is on, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformChoice {
    pub on: bool,
    pub why: &'static str,
}

impl std::fmt::Display for TransformChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let state = if self.on { "on" } else { "off" };
        write!(f, "Inception input transform (torchvision's transform_input) {state}: {}", self.why)
    }
}

impl TransformInput {
    /// The transform for the weights at `weights`.
    pub fn resolve(self, weights: &std::path::Path) -> Result<TransformChoice, crate::ModelError> {
        Ok(match self {
            Self::On => TransformChoice { on: true, why: "--transform-input on" },
            Self::Off => TransformChoice { on: false, why: "--transform-input off" },
            Self::Auto => match recorded_transform_input(weights)? {
                Some(on) => TransformChoice { on, why: "as the weights file records" },
                None => TransformChoice {
                    on: true,
                    why: "the file records nothing, so torchvision's ImageNet default (--transform-input off for a \
                          model made with weights=None)",
                },
            },
        })
    }
}

/// `transform_input` as a weights file records it, if it does (safetensors written by patchtcga).
pub fn recorded_transform_input(weights: &std::path::Path) -> Result<Option<bool>, crate::ModelError> {
    let attributes = crate::source::safetensors_attributes(weights)?;
    Ok(attributes.get(TRANSFORM_INPUT_KEY).map(|v| v == "true"))
}

/// Convolution (no bias) → batch norm (ε 1e-3) → ReLU: torchvision's `BasicConv2d`.
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBn {
    /// A `kh`×`kw` convolution with stride `s` and padding (`ph`, `pw`).
    fn new(p: nn::Path, cin: i64, cout: i64, k: [i64; 2], s: i64, pad: [i64; 2]) -> Self {
        let cfg = nn::ConvConfigND { stride: [s, s], padding: pad, bias: false, ..Default::default() };
        let conv = nn::conv(&p / "conv", cin, cout, k, cfg);
        let bn = nn::batch_norm2d(&p / "bn", cout, nn::BatchNormConfig { eps: EPS, ..Default::default() });
        Self { conv, bn }
    }

    fn square(p: nn::Path, cin: i64, cout: i64, k: i64, s: i64, pad: i64) -> Self {
        Self::new(p, cin, cout, [k, k], s, [pad, pad])
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        batch_norm_eps(&x.apply(&self.conv), &self.bn, EPS, train).relu_()
    }
}

/// A chain of convolutions applied in turn.
fn chain(convs: &[ConvBn], x: &Tensor, train: bool) -> Tensor {
    convs.iter().fold(x.shallow_clone(), |y, c| c.forward(&y, train))
}

fn avg_3x3(x: &Tensor) -> Tensor {
    x.avg_pool2d([3, 3], [1, 1], [1, 1], false, true, None::<i64>)
}

fn max_3x3_s2(x: &Tensor) -> Tensor {
    x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
}

/// One of the `Mixed_*` blocks (torchvision's `InceptionA` … `InceptionE`).
// Eleven of them per network: their sizes do not matter, and boxing would only add noise.
#[allow(clippy::large_enum_variant)]
enum Mixed {
    /// `InceptionA`: 1×1, 5×5, double 3×3 and pooled branches.
    A { b1: ConvBn, b5: Vec<ConvBn>, b3: Vec<ConvBn>, pool: ConvBn },
    /// `InceptionB`: strided 3×3, double 3×3 and max-pooled branches.
    B { b3: ConvBn, b3dbl: Vec<ConvBn> },
    /// `InceptionC`: factorised 7×7 branches.
    C { b1: ConvBn, b7: Vec<ConvBn>, b7dbl: Vec<ConvBn>, pool: ConvBn },
    /// `InceptionD`: strided 3×3 and 7×7×3 branches.
    D { b3: Vec<ConvBn>, b7: Vec<ConvBn> },
    /// `InceptionE`: branches split into 1×3 and 3×1 halves.
    E { b1: ConvBn, b3_1: ConvBn, b3_2: [ConvBn; 2], dbl_1: Vec<ConvBn>, dbl_2: [ConvBn; 2], pool: ConvBn },
}

impl Mixed {
    fn a(p: &nn::Path, cin: i64, pool_features: i64) -> Self {
        let c = |n: &str, i, o, k, pad| ConvBn::square(p / n, i, o, k, 1, pad);
        Mixed::A {
            b1: c("branch1x1", cin, 64, 1, 0),
            b5: vec![c("branch5x5_1", cin, 48, 1, 0), c("branch5x5_2", 48, 64, 5, 2)],
            b3: vec![
                c("branch3x3dbl_1", cin, 64, 1, 0),
                c("branch3x3dbl_2", 64, 96, 3, 1),
                c("branch3x3dbl_3", 96, 96, 3, 1),
            ],
            pool: c("branch_pool", cin, pool_features, 1, 0),
        }
    }

    fn b(p: &nn::Path, cin: i64) -> Self {
        Mixed::B {
            b3: ConvBn::square(p / "branch3x3", cin, 384, 3, 2, 0),
            b3dbl: vec![
                ConvBn::square(p / "branch3x3dbl_1", cin, 64, 1, 1, 0),
                ConvBn::square(p / "branch3x3dbl_2", 64, 96, 3, 1, 1),
                ConvBn::square(p / "branch3x3dbl_3", 96, 96, 3, 2, 0),
            ],
        }
    }

    fn c(p: &nn::Path, cin: i64, c7: i64) -> Self {
        let one = |n: &str, i, o| ConvBn::square(p / n, i, o, 1, 1, 0);
        let row = |n: &str, i, o| ConvBn::new(p / n, i, o, [1, 7], 1, [0, 3]);
        let col = |n: &str, i, o| ConvBn::new(p / n, i, o, [7, 1], 1, [3, 0]);
        Mixed::C {
            b1: one("branch1x1", cin, 192),
            b7: vec![one("branch7x7_1", cin, c7), row("branch7x7_2", c7, c7), col("branch7x7_3", c7, 192)],
            b7dbl: vec![
                one("branch7x7dbl_1", cin, c7),
                col("branch7x7dbl_2", c7, c7),
                row("branch7x7dbl_3", c7, c7),
                col("branch7x7dbl_4", c7, c7),
                row("branch7x7dbl_5", c7, 192),
            ],
            pool: one("branch_pool", cin, 192),
        }
    }

    fn d(p: &nn::Path, cin: i64) -> Self {
        Mixed::D {
            b3: vec![
                ConvBn::square(p / "branch3x3_1", cin, 192, 1, 1, 0),
                ConvBn::square(p / "branch3x3_2", 192, 320, 3, 2, 0),
            ],
            b7: vec![
                ConvBn::square(p / "branch7x7x3_1", cin, 192, 1, 1, 0),
                ConvBn::new(p / "branch7x7x3_2", 192, 192, [1, 7], 1, [0, 3]),
                ConvBn::new(p / "branch7x7x3_3", 192, 192, [7, 1], 1, [3, 0]),
                ConvBn::square(p / "branch7x7x3_4", 192, 192, 3, 2, 0),
            ],
        }
    }

    fn e(p: &nn::Path, cin: i64) -> Self {
        let halves = |a: &str, b: &str, i| {
            [ConvBn::new(p / a, i, 384, [1, 3], 1, [0, 1]), ConvBn::new(p / b, i, 384, [3, 1], 1, [1, 0])]
        };
        Mixed::E {
            b1: ConvBn::square(p / "branch1x1", cin, 320, 1, 1, 0),
            b3_1: ConvBn::square(p / "branch3x3_1", cin, 384, 1, 1, 0),
            b3_2: halves("branch3x3_2a", "branch3x3_2b", 384),
            dbl_1: vec![
                ConvBn::square(p / "branch3x3dbl_1", cin, 448, 1, 1, 0),
                ConvBn::square(p / "branch3x3dbl_2", 448, 384, 3, 1, 1),
            ],
            dbl_2: halves("branch3x3dbl_3a", "branch3x3dbl_3b", 384),
            pool: ConvBn::square(p / "branch_pool", cin, 192, 1, 1, 0),
        }
    }

    fn forward(&self, x: &Tensor, t: bool) -> Tensor {
        let parts = match self {
            Mixed::A { b1, b5, b3, pool } => {
                vec![b1.forward(x, t), chain(b5, x, t), chain(b3, x, t), pool.forward(&avg_3x3(x), t)]
            }
            Mixed::B { b3, b3dbl } => vec![b3.forward(x, t), chain(b3dbl, x, t), max_3x3_s2(x)],
            Mixed::C { b1, b7, b7dbl, pool } => {
                vec![b1.forward(x, t), chain(b7, x, t), chain(b7dbl, x, t), pool.forward(&avg_3x3(x), t)]
            }
            Mixed::D { b3, b7 } => vec![chain(b3, x, t), chain(b7, x, t), max_3x3_s2(x)],
            Mixed::E { b1, b3_1, b3_2, dbl_1, dbl_2, pool } => {
                let split = |y: Tensor, h: &[ConvBn; 2]| Tensor::cat(&[h[0].forward(&y, t), h[1].forward(&y, t)], 1);
                vec![
                    b1.forward(x, t),
                    split(b3_1.forward(x, t), b3_2),
                    split(chain(dbl_1, x, t), dbl_2),
                    pool.forward(&avg_3x3(x), t),
                ]
            }
        };
        Tensor::cat(&parts, 1)
    }
}

/// torchvision's `InceptionAux` on `Mixed_6e` (`AuxLogits.conv0`, `.conv1`, `.fc`): logits whose
/// loss is added in training (weight 0.4 in torchvision's reference recipe).
pub struct AuxHead {
    conv0: ConvBn,
    conv1: ConvBn,
    fc: nn::Linear,
}

impl std::fmt::Debug for AuxHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuxLogits")
    }
}

impl AuxHead {
    /// The auxiliary classifier for `classes` under `p` (`AuxLogits`).
    pub fn new(p: &nn::Path, classes: i64) -> Self {
        Self {
            conv0: ConvBn::square(p / "conv0", 768, 128, 1, 1, 0),
            conv1: ConvBn::square(p / "conv1", 128, 768, 5, 1, 0),
            fc: nn::linear(p / "fc", 768, classes, Default::default()),
        }
    }

    /// Logits from `Mixed_6e`'s output.
    pub fn forward(&self, mixed_6e: &Tensor, train: bool) -> Tensor {
        let y = mixed_6e.avg_pool2d([5, 5], [3, 3], [0, 0], false, true, None::<i64>);
        let y = self.conv1.forward(&self.conv0.forward(&y, train), train);
        y.adaptive_avg_pool2d([1, 1]).flatten(1, -1).apply(&self.fc)
    }
}

/// A torchvision Inception v3 without `fc` and `AuxLogits`: images (N, 3, H ≥ 75, W ≥ 75) →
/// pooled `Mixed_7c` (N, 2048).
pub struct Inception3 {
    stem: Vec<ConvBn>,
    mixed: Vec<Mixed>,
    config: InceptionConfig,
}

/// Where the auxiliary head branches off: after `Mixed_6e`, the 8th mixed block.
const AUX_AFTER: usize = 8;

impl Inception3 {
    /// Creates the parameters under `p` with torchvision's names.
    pub fn new(p: &nn::Path, config: InceptionConfig) -> Self {
        let stem = vec![
            ConvBn::square(p / "Conv2d_1a_3x3", 3, 32, 3, 2, 0),
            ConvBn::square(p / "Conv2d_2a_3x3", 32, 32, 3, 1, 0),
            ConvBn::square(p / "Conv2d_2b_3x3", 32, 64, 3, 1, 1),
            ConvBn::square(p / "Conv2d_3b_1x1", 64, 80, 1, 1, 0),
            ConvBn::square(p / "Conv2d_4a_3x3", 80, 192, 3, 1, 0),
        ];
        let mixed = vec![
            Mixed::a(&(p / "Mixed_5b"), 192, 32),
            Mixed::a(&(p / "Mixed_5c"), 256, 64),
            Mixed::a(&(p / "Mixed_5d"), 288, 64),
            Mixed::b(&(p / "Mixed_6a"), 288),
            Mixed::c(&(p / "Mixed_6b"), 768, 128),
            Mixed::c(&(p / "Mixed_6c"), 768, 160),
            Mixed::c(&(p / "Mixed_6d"), 768, 160),
            Mixed::c(&(p / "Mixed_6e"), 768, 192),
            Mixed::d(&(p / "Mixed_7a"), 768),
            Mixed::e(&(p / "Mixed_7b"), 1280),
            Mixed::e(&(p / "Mixed_7c"), 2048),
        ];
        Self { stem, mixed, config }
    }

    /// torchvision's `_transform_input`.
    fn transform(&self, x: &Tensor) -> Tensor {
        if !self.config.transform_input {
            return x.shallow_clone();
        }
        let column = |v: [f64; 3]| Tensor::from_slice(&v).reshape([1, 3, 1, 1]).to_device(x.device()).to_kind(x.kind());
        let scale = column([0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5]);
        let shift = column([(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5]);
        x * scale + shift
    }

    /// `Mixed_7c`'s feature map (N, 2048, h, w) and `Mixed_6e`'s output (what `AuxLogits` takes).
    pub fn feature_maps(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let x = self.transform(x);
        let mut y = chain(&self.stem[..3], &x, train);
        y = chain(&self.stem[3..], &max_3x3_s2(&y), train);
        y = max_3x3_s2(&y);
        let mut at_6e = Tensor::new();
        for (i, m) in self.mixed.iter().enumerate() {
            y = m.forward(&y, train);
            if i + 1 == AUX_AFTER {
                at_6e = y.shallow_clone();
            }
        }
        (y, at_6e)
    }

    /// Global-average-pooled `Mixed_7c` (N, 2048).
    pub fn features(&self, x: &Tensor, train: bool) -> Tensor {
        self.feature_maps(x, train).0.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    pub fn config(&self) -> &InceptionConfig {
        &self.config
    }
}
