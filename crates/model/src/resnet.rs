//! ResNet as torchvision builds it (v1.5: stride on the 3×3 convolution), with torchvision's
//! parameter names (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, …).

use crate::norm::batch_norm;
use tch::nn;
use tch::Tensor;

/// The residual block kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Two 3×3 convolutions (ResNet18/34).
    Basic,
    /// 1×1 → 3×3 → 1×1 with 4× expansion (ResNet50/101/152).
    Bottleneck,
}

impl Block {
    fn expansion(self) -> i64 {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// Shape of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNetConfig {
    pub block: Block,
    /// Blocks per stage.
    pub layers: [i64; 4],
    /// Channels of the stem convolution (64 in torchvision).
    pub stem: i64,
    /// Planes of the first stage, doubled at each next one (64 in torchvision; smaller in tests).
    pub width: i64,
    /// Stages 2–4 dilated instead of strided (torchvision's `replace_stride_with_dilation`;
    /// DeepLabv3 dilates the last two: output stride 8). Bottleneck blocks only.
    pub dilate: [bool; 3],
}

impl ResNetConfig {
    pub const RESNET18: Self =
        Self { block: Block::Basic, layers: [2, 2, 2, 2], stem: 64, width: 64, dilate: [false; 3] };
    pub const RESNET50: Self =
        Self { block: Block::Bottleneck, layers: [3, 4, 6, 3], stem: 64, width: 64, dilate: [false; 3] };

    /// Channels of the pooled features (512 for ResNet18, 2048 for ResNet50).
    pub fn feature_dim(&self) -> i64 {
        self.width * 8 * self.block.expansion()
    }
}

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, dilation: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig { stride, padding: dilation * (k / 2), dilation, bias: false, ..Default::default() };
    nn::conv2d(p, cin, cout, k, cfg)
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

struct Unit {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Unit {
    fn new(p: &nn::Path, block: Block, cin: i64, planes: i64, stride: i64, dilation: i64) -> Self {
        let cout = planes * block.expansion();
        let shapes: Vec<(i64, i64, i64, i64, i64)> = match block {
            Block::Basic => vec![(cin, planes, 3, stride, 1), (planes, planes, 3, 1, 1)],
            Block::Bottleneck => {
                vec![(cin, planes, 1, 1, 1), (planes, planes, 3, stride, dilation), (planes, cout, 1, 1, 1)]
            }
        };
        let convs = shapes
            .into_iter()
            .enumerate()
            .map(|(i, (a, b, k, s, d))| {
                (conv(p / format!("conv{}", i + 1), a, b, k, s, d), bn(p / format!("bn{}", i + 1), b))
            })
            .collect();
        let downsample = (stride != 1 || cin != cout).then(|| {
            let d = p / "downsample";
            (conv(&d / 0, cin, cout, 1, stride, 1), bn(&d / 1, cout))
        });
        Self { convs, downsample }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let last = self.convs.len() - 1;
        let mut y = x.shallow_clone();
        for (i, (c, b)) in self.convs.iter().enumerate() {
            y = batch_norm(&y.apply(c), b, train);
            if i < last {
                y = y.relu_();
            }
        }
        let shortcut = match &self.downsample {
            Some((c, b)) => batch_norm(&x.apply(c), b, train),
            None => x.shallow_clone(),
        };
        (y + shortcut).relu_()
    }
}

/// A torchvision ResNet without its `fc`: images (N, 3, H, W) → pooled features (N, C).
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    stages: Vec<Vec<Unit>>,
    config: ResNetConfig,
}

impl ResNet {
    /// Creates the parameters under `p` with torchvision's names.
    pub fn new(p: &nn::Path, config: ResNetConfig) -> Self {
        let w = config.width;
        let conv1 = nn::conv2d(
            p / "conv1",
            3,
            config.stem,
            7,
            nn::ConvConfig { stride: 2, padding: 3, bias: false, ..Default::default() },
        );
        let bn1 = bn(p / "bn1", config.stem);
        let mut cin = config.stem;
        let mut stages = Vec::new();
        let mut dilation = 1;
        for (s, &n) in config.layers.iter().enumerate() {
            let planes = w << s;
            let mut stride = if s == 0 { 1 } else { 2 };
            // As torchvision: a dilated stage keeps the resolution; its first block still uses
            // the previous dilation.
            let previous = dilation;
            if s > 0 && config.dilate[s - 1] {
                dilation *= stride;
                stride = 1;
            }
            let sp = p / format!("layer{}", s + 1);
            let units: Vec<Unit> = (0..n)
                .map(|i| {
                    let (st, d) = if i == 0 { (stride, previous) } else { (1, dilation) };
                    let u = Unit::new(&(&sp / i), config.block, cin, planes, st, d);
                    cin = planes * config.block.expansion();
                    u
                })
                .collect();
            stages.push(units);
        }
        Self { conv1, bn1, stages, config }
    }

    /// The last stage's feature map (N, C, H/32, W/32; H/8 with the last two stages dilated), as
    /// the segmentation heads take it.
    pub fn feature_map(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = batch_norm(&x.apply(&self.conv1), &self.bn1, train).relu_().max_pool2d(
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            false,
        );
        for stage in &self.stages {
            for unit in stage {
                y = unit.forward(&y, train);
            }
        }
        y
    }

    /// Global-average-pooled last stage (N, C).
    pub fn features(&self, x: &Tensor, train: bool) -> Tensor {
        self.feature_map(x, train).adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }
}
