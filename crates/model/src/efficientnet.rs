//! EfficientNet (v1) as torchvision builds it (`efficientnet_b3` and kin), with torchvision's
//! parameter names (`features.0.0`, `features.N.M.block.K.0`, `…block.K.fc1`, `classifier.1`).

use tch::nn;
use tch::Tensor;

use crate::norm::batch_norm;
use crate::vit::drop_path;

/// Shape of an EfficientNet: the B0 stages scaled in width and depth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EfficientNetConfig {
    pub width_mult: f64,
    pub depth_mult: f64,
    /// Stochastic depth of the last block (torchvision's `stochastic_depth_prob`, 0.2), growing
    /// linearly from 0 over the blocks.
    pub stochastic_depth: f64,
}

/// B0's stages: expand ratio, kernel, stride, input channels, output channels, blocks.
const B0: [(i64, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

/// torchvision's `_make_divisible(v, 8)`.
fn divisible(v: f64) -> i64 {
    let rounded = (((v + 4.0) as i64) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * v {
        rounded + 8
    } else {
        rounded
    }
}

impl EfficientNetConfig {
    pub const B3: Self = Self { width_mult: 1.2, depth_mult: 1.4, stochastic_depth: 0.2 };

    fn channels(&self, c: i64) -> i64 {
        divisible(c as f64 * self.width_mult)
    }

    fn blocks(&self, n: i64) -> i64 {
        (n as f64 * self.depth_mult).ceil() as i64
    }

    /// Channels of the pooled features (4 × the last stage's: 1536 for B3).
    pub fn feature_dim(&self) -> i64 {
        4 * self.channels(B0[6].4)
    }
}

/// Convolution (no bias, "same" padding) → batch norm, then SiLU unless it is a projection.
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    silu: bool,
}

impl ConvBn {
    fn new(p: &nn::Path, cin: i64, cout: i64, k: i64, stride: i64, groups: i64, silu: bool) -> Self {
        let cfg = nn::ConvConfig { stride, padding: (k - 1) / 2, groups, bias: false, ..Default::default() };
        Self { conv: nn::conv2d(p / 0, cin, cout, k, cfg), bn: nn::batch_norm2d(p / 1, cout, Default::default()), silu }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let y = batch_norm(&x.apply(&self.conv), &self.bn, train);
        if self.silu {
            y.silu()
        } else {
            y
        }
    }
}

/// Squeeze-and-excitation (`fc1`, `fc2`: 1×1 convolutions with bias, SiLU then sigmoid).
struct SqueezeExcite {
    fc1: nn::Conv2D,
    fc2: nn::Conv2D,
}

impl SqueezeExcite {
    fn forward(&self, x: &Tensor) -> Tensor {
        let scale = x.adaptive_avg_pool2d([1, 1]).apply(&self.fc1).silu().apply(&self.fc2).sigmoid();
        scale * x
    }
}

/// torchvision's `MBConv`: expand (unless the ratio is 1), depthwise, squeeze-excite, project, and
/// the residual with stochastic depth where the shape allows.
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    se: SqueezeExcite,
    project: ConvBn,
    residual: bool,
    drop: f64,
}

impl MbConv {
    fn new(p: &nn::Path, (ratio, k, stride, cin, cout): (i64, i64, i64, i64, i64), drop: f64) -> Self {
        let b = p / "block";
        let wide = divisible((cin * ratio) as f64);
        let expand = (wide != cin).then(|| ConvBn::new(&(&b / 0), cin, wide, 1, 1, 1, true));
        let at = expand.is_some() as i64;
        let depthwise = ConvBn::new(&(&b / at), wide, wide, k, stride, wide, true);
        let squeeze = (cin / 4).max(1);
        let se_path = &b / (at + 1);
        let se = SqueezeExcite {
            fc1: nn::conv2d(&se_path / "fc1", wide, squeeze, 1, Default::default()),
            fc2: nn::conv2d(&se_path / "fc2", squeeze, wide, 1, Default::default()),
        };
        let project = ConvBn::new(&(&b / (at + 2)), wide, cout, 1, 1, 1, false);
        Self { expand, depthwise, se, project, residual: stride == 1 && cin == cout, drop }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let y = match &self.expand {
            Some(e) => e.forward(x, train),
            None => x.shallow_clone(),
        };
        let y = self.project.forward(&self.se.forward(&self.depthwise.forward(&y, train)), train);
        if self.residual {
            drop_path(y, self.drop, train) + x
        } else {
            y
        }
    }
}

/// A torchvision EfficientNet without `classifier`: images (N, 3, H, W) → pooled features.
pub struct EfficientNet {
    stem: ConvBn,
    stages: Vec<Vec<MbConv>>,
    head: ConvBn,
    config: EfficientNetConfig,
}

impl EfficientNet {
    /// Creates the parameters under `p` with torchvision's names.
    pub fn new(p: &nn::Path, config: EfficientNetConfig) -> Self {
        let f = p / "features";
        let stem = ConvBn::new(&(&f / 0), 3, config.channels(B0[0].3), 3, 2, 1, true);
        let total: i64 = B0.iter().map(|s| config.blocks(s.5)).sum();
        let mut id = 0;
        let stages = B0
            .iter()
            .enumerate()
            .map(|(s, &(ratio, k, stride, cin, cout, n))| {
                let (cin, cout) = (config.channels(cin), config.channels(cout));
                (0..config.blocks(n))
                    .map(|i| {
                        let shape = if i == 0 { (ratio, k, stride, cin, cout) } else { (ratio, k, 1, cout, cout) };
                        let drop = config.stochastic_depth * id as f64 / total as f64;
                        id += 1;
                        MbConv::new(&(&f / (s + 1) / i), shape, drop)
                    })
                    .collect()
            })
            .collect();
        let last = config.channels(B0[6].4);
        let head = ConvBn::new(&(&f / 8), last, 4 * last, 1, 1, 1, true);
        Self { stem, stages, head, config }
    }

    /// The last feature map (N, C, H/32, W/32), as the segmentation heads take it.
    pub fn feature_map(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem.forward(x, train);
        for block in self.stages.iter().flatten() {
            y = block.forward(&y, train);
        }
        self.head.forward(&y, train)
    }

    /// Global-average-pooled last feature map (N, C).
    pub fn features(&self, x: &Tensor, train: bool) -> Tensor {
        self.feature_map(x, train).adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    pub fn config(&self) -> &EfficientNetConfig {
        &self.config
    }
}
