//! Segmentation networks: a backbone's last feature map (ResNet's last stage, or a ViT's patch
//! tokens laid back on their grid) through a head — the release's FCN head, or DeepLabv3's
//! ASPP head on a ResNet with its last two stages dilated (output stride 8) — to per-pixel
//! class scores at the input size. Heads carry torchvision's names under `classifier.`
//! (`FCNHead`, `DeepLabHead`: `classifier.0.convs.N`, `classifier.0.project`, …); the backbone
//! sits at the root with its own reference names, so backbone checkpoints load as they are.

use std::path::Path;
use std::str::FromStr;

use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::backbone::{Backbone, Spec};
use crate::norm::batch_norm;
use crate::source::read_tensors;
use crate::ModelError;

/// Which head turns the feature map into class scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegHead {
    /// torchvision's `FCNHead`: 3×3 conv to C/4, BN, ReLU, dropout 0.1, 1×1 conv to classes.
    Fcn,
    /// torchvision's `DeepLabHead`: ASPP (1×1, 3×3 at rates 12/24/36, image pooling), 3×3 conv,
    /// BN, ReLU, 1×1 conv; the ResNet's last two stages dilated.
    DeepLabV3,
}

impl FromStr for SegHead {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fcn" => Ok(Self::Fcn),
            "deeplabv3" => Ok(Self::DeepLabV3),
            other => Err(ModelError::Arch(format!("segmentation head {other:?}: fcn or deeplabv3"))),
        }
    }
}

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, dilation: i64, bias: bool) -> nn::Conv2D {
    let cfg = nn::ConvConfig { padding: dilation * (k / 2), dilation, bias, ..Default::default() };
    nn::conv2d(p, cin, cout, k, cfg)
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

/// Convolution, batch norm, ReLU.
fn cbr(x: &Tensor, c: &(nn::Conv2D, nn::BatchNorm), train: bool) -> Tensor {
    batch_norm(&x.apply(&c.0), &c.1, train).relu()
}

/// DeepLabv3's atrous spatial pyramid pooling: parallel 1×1 and dilated 3×3 branches and image
/// pooling, concatenated and projected to 256 channels.
struct Aspp {
    branches: Vec<(nn::Conv2D, nn::BatchNorm)>,
    pool: (nn::Conv2D, nn::BatchNorm),
    project: (nn::Conv2D, nn::BatchNorm),
}

/// [ASPP →] 3×3 conv, BN, ReLU [→ dropout] → 1×1 conv to class scores.
struct Head {
    aspp: Option<Aspp>,
    block: (nn::Conv2D, nn::BatchNorm),
    dropout: f64,
    out: nn::Conv2D,
}

/// A segmentation network: backbone feature map → head → class scores (N, classes, H, W).
pub struct SegNet {
    pub backbone: Backbone,
    head: Head,
}

impl SegNet {
    /// The backbone (`spec`; a ResNet is dilated for DeepLabv3) at the root of `p`, the head
    /// under `classifier`.
    pub fn new(p: &nn::Path, spec: Spec, head: SegHead, classes: i64) -> Result<Self, ModelError> {
        let spec = match (head, spec) {
            (SegHead::DeepLabV3, Spec::ResNet(c)) if c.block == crate::resnet::Block::Bottleneck => {
                Spec::ResNet(crate::resnet::ResNetConfig { dilate: [false, true, true], ..c })
            }
            (SegHead::DeepLabV3, other) => {
                return Err(ModelError::Arch(format!(
                    "DeepLabv3 needs a bottleneck ResNet (resnet50), not {other:?}; use the fcn head"
                )))
            }
            (SegHead::Fcn, s) => s,
        };
        let backbone = Backbone::new(p, spec);
        let cin = match spec {
            Spec::Vit(v) => v.dim,
            other => other.feature_dim(),
        };
        let c = p / "classifier";
        let head = match head {
            SegHead::Fcn => {
                let mid = cin / 4;
                let block = (conv(&c / 0, cin, mid, 3, 1, false), bn(&c / 1, mid));
                Head { aspp: None, block, dropout: 0.1, out: conv(&c / 4, mid, classes, 1, 1, true) }
            }
            SegHead::DeepLabV3 => {
                let a = &c / 0;
                let convs = &a / "convs";
                let mut branches = vec![(conv(&convs / 0 / 0, cin, 256, 1, 1, false), bn(&convs / 0 / 1, 256))];
                for (i, rate) in [12, 24, 36].into_iter().enumerate() {
                    let b = &convs / (i + 1);
                    branches.push((conv(&b / 0, cin, 256, 3, rate, false), bn(&b / 1, 256)));
                }
                let pool = (conv(&convs / 4 / 1, cin, 256, 1, 1, false), bn(&convs / 4 / 2, 256));
                let project = (conv(&a / "project" / 0, 5 * 256, 256, 1, 1, false), bn(&a / "project" / 1, 256));
                let block = (conv(&c / 1, 256, 256, 3, 1, false), bn(&c / 2, 256));
                let aspp = Some(Aspp { branches, pool, project });
                Head { aspp, block, dropout: 0.0, out: conv(&c / 4, 256, classes, 1, 1, true) }
            }
        };
        Ok(Self { backbone, head })
    }

    /// The backbone's last feature map (N, C, h, w): a ResNet's last stage, Inception's
    /// `Mixed_7c`, EfficientNet's last convolution, or a ViT's patch tokens after the final norm on
    /// their grid.
    pub fn feature_map(&self, x: &Tensor, train: bool) -> Tensor {
        match &self.backbone {
            Backbone::ResNet(m) => m.feature_map(x, train),
            Backbone::Inception(m) => m.feature_maps(x, train).0,
            Backbone::EfficientNet(m) => m.feature_map(x, train),
            Backbone::Vit(m) => {
                let t = m.tokens(x, train);
                let (n, l, d) = t.size3().expect("tokens");
                let (h, w) = (x.size()[2] / m.config().patch, x.size()[3] / m.config().patch);
                let skip = m.config().prefix_tokens();
                debug_assert_eq!(l, h * w + skip);
                t.narrow(1, skip, h * w).transpose(1, 2).reshape([n, d, h, w])
            }
        }
    }
}

impl std::fmt::Debug for SegNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = if self.head.aspp.is_some() { "deeplabv3" } else { "fcn" };
        write!(f, "SegNet({:?}, {head})", self.backbone)
    }
}

impl SegNet {
    /// Class scores at the input size with the backbone in training mode or not apart from the
    /// head (a frozen backbone runs in evaluation mode while its head trains).
    pub fn scores(&self, x: &Tensor, train_backbone: bool, train: bool) -> Tensor {
        let size = [x.size()[2], x.size()[3]];
        let f = self.feature_map(x, train_backbone);
        let f = match &self.head.aspp {
            Some(Aspp { branches, pool, project }) => {
                let (h, w) = (f.size()[2], f.size()[3]);
                let mut parts: Vec<Tensor> = branches.iter().map(|b| cbr(&f, b, train)).collect();
                let pooled = cbr(&f.adaptive_avg_pool2d([1, 1]), pool, train);
                parts.push(pooled.upsample_bilinear2d([h, w], false, None, None));
                cbr(&Tensor::cat(&parts, 1), project, train).dropout(0.5, train)
            }
            None => f,
        };
        let y = cbr(&f, &self.head.block, train).dropout(self.head.dropout, train).apply(&self.head.out);
        y.upsample_bilinear2d(size, false, None, None)
    }
}

/// What [`load_head`] did: head tensors loaded, and those left as initialised because their
/// shape differs (a last layer for another number of classes); names sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeadImport {
    pub loaded: Vec<String>,
    pub left: Vec<String>,
}

/// Loads a segmentation head by torchvision's names (`classifier.*`, with whatever prefix the
/// checkpoint puts before them; `aux_classifier.*` is not it) from `path` into the head of the
/// network under `vs`'s root, wherever the shapes agree: torchvision's COCO DeepLabv3 / FCN
/// checkpoints give the whole head but the class layer. A checkpoint without one loads nothing.
pub fn load_head(vs: &nn::VarStore, path: &Path) -> Result<HeadImport, ModelError> {
    let vars = vs.variables();
    let mut import = HeadImport::default();
    tch::no_grad(|| {
        for (name, t) in read_tensors(path)? {
            let Some(at) = name.find("classifier.").filter(|&i| i == 0 || name[..i].ends_with('.')) else { continue };
            let short = &name[at..];
            let Some(var) = vars.get(short) else { continue };
            if var.size() == t.size() {
                var.shallow_clone().copy_(&t);
                import.loaded.push(short.to_owned());
            } else {
                import.left.push(short.to_owned());
            }
        }
        import.loaded.sort();
        import.left.sort();
        Ok(import)
    })
}

impl ModuleT for SegNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.scores(x, train, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Arch;

    #[test]
    fn every_backbone_gives_scores_at_the_input_size() {
        let x = Tensor::randn([2, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
        let cases = [
            (Arch::ResNet18, SegHead::Fcn, [2, 512, 2, 2]),
            (Arch::EffB3, SegHead::Fcn, [2, 1536, 2, 2]),
            (Arch::VitS16, SegHead::Fcn, [2, 384, 4, 4]),
        ];
        for (arch, head, map) in cases {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let net = SegNet::new(&vs.root(), arch.spec(64), head, 6).unwrap();
            let y = tch::no_grad(|| net.forward_t(&x, false));
            assert_eq!(y.size(), [2, 6, 64, 64], "{arch}");
            assert_eq!(tch::no_grad(|| net.feature_map(&x, false)).size(), map, "{arch}: feature map");
            let names: Vec<String> = vs.variables().into_keys().collect();
            assert!(
                names.iter().any(|n| n == "classifier.4.bias") && names.iter().any(|n| n == "classifier.1.running_var")
            );
        }
        // Inception's valid convolutions take 75 px at least: Mixed_7c is 1×1 there.
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = SegNet::new(&vs.root(), Arch::IncV3.spec(75), SegHead::Fcn, 6).unwrap();
        let x = Tensor::randn([2, 3, 75, 75], (tch::Kind::Float, tch::Device::Cpu));
        assert_eq!(tch::no_grad(|| net.forward_t(&x, false)).size(), [2, 6, 75, 75]);
        assert_eq!(tch::no_grad(|| net.feature_map(&x, false)).size(), [2, 2048, 1, 1]);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        assert!(SegNet::new(&vs.root(), Arch::VitS16.spec(64), SegHead::DeepLabV3, 6).is_err());
    }
}
