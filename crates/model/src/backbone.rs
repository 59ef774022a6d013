//! Architectures by name, backbones, and the classification network (backbone + dropout + linear).

use std::fmt;
use std::str::FromStr;

use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::efficientnet::{EfficientNet, EfficientNetConfig};
use crate::foundation::Foundation;
use crate::inception::{AuxHead, Inception3, InceptionConfig, TransformChoice, TransformInput};
use crate::resnet::{ResNet, ResNetConfig};
use crate::vit::{Vit, VitConfig};
use crate::ModelError;

/// The backbones of the release, named as its `model_name` config key names them, and the
/// foundation-model presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    ResNet18,
    ResNet50,
    IncV3,
    EffB3,
    VitS16,
    VitB16,
    VitB32,
    VitL16,
    Foundation(Foundation),
}

impl Arch {
    pub const RELEASE: [Arch; 8] = [
        Arch::ResNet18,
        Arch::ResNet50,
        Arch::IncV3,
        Arch::EffB3,
        Arch::VitS16,
        Arch::VitB16,
        Arch::VitB32,
        Arch::VitL16,
    ];

    /// Every architecture and preset.
    pub fn all() -> impl Iterator<Item = Arch> {
        Self::RELEASE.into_iter().chain(Foundation::ALL.map(Arch::Foundation))
    }

    /// The backbone's shape for `image_size`-pixel inputs. A preset keeps its checkpoint's position
    /// embedding and resamples it to other inputs as its family does.
    pub fn spec(self, image_size: i64) -> Spec {
        let vit = |c: VitConfig| Spec::Vit(VitConfig { img_size: image_size, ..c });
        match self {
            Arch::ResNet18 => Spec::ResNet(ResNetConfig::RESNET18),
            Arch::ResNet50 => Spec::ResNet(ResNetConfig::RESNET50),
            Arch::IncV3 => Spec::Inception(InceptionConfig::V3),
            Arch::EffB3 => Spec::EfficientNet(EfficientNetConfig::B3),
            Arch::VitS16 => vit(VitConfig::S16),
            Arch::VitB16 => vit(VitConfig::B16),
            Arch::VitB32 => vit(VitConfig::B32),
            Arch::VitL16 => vit(VitConfig::L16),
            Arch::Foundation(f) => Spec::Vit(f.config()),
        }
    }

    /// [`Arch::spec`] for the weights at `weights`: Inception's input transform chosen by
    /// `transform` for that file (and why); the others as `spec`.
    pub fn spec_for_weights(
        self,
        image_size: i64,
        weights: &std::path::Path,
        transform: TransformInput,
    ) -> Result<(Spec, Option<TransformChoice>), crate::ModelError> {
        match self.spec(image_size) {
            Spec::Inception(_) => {
                let choice = transform.resolve(weights)?;
                Ok((Spec::Inception(InceptionConfig { transform_input: choice.on }), Some(choice)))
            }
            spec => Ok((spec, None)),
        }
    }

    /// The normalisation the weights expect, where the architecture fixes one (presets).
    pub fn stats(self) -> Option<([f32; 3], [f32; 3])> {
        match self {
            Arch::Foundation(f) => Some(f.stats()),
            _ => None,
        }
    }

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet50 => "resnet50",
            Arch::IncV3 => "incv3",
            Arch::EffB3 => "eff-b3",
            Arch::VitS16 => "vit-s16",
            Arch::VitB16 => "vit-b16",
            Arch::VitB32 => "vit-b32",
            Arch::VitL16 => "vit-l16",
            Arch::Foundation(f) => f.name(),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let k = s.to_ascii_lowercase().replace('_', "-");
        Ok(match k.as_str() {
            "resnet18" => Arch::ResNet18,
            "resnet50" => Arch::ResNet50,
            "vit-s16" | "vit-small-patch16-224" => Arch::VitS16,
            "vit-b16" | "vit-base-patch16-224" => Arch::VitB16,
            "vit-b32" | "vit-base-patch32-224" => Arch::VitB32,
            "vit-l16" | "vit-large-patch16-224" => Arch::VitL16,
            "incv3" | "inception-v3" => Arch::IncV3,
            "eff-b3" | "efficientnet-b3" => Arch::EffB3,
            other if Foundation::parse(other).is_some() => Arch::Foundation(Foundation::parse(other).expect("matched")),
            _ => {
                let names: Vec<_> = Arch::all().map(|a| a.name()).collect();
                return Err(ModelError::Arch(format!("unknown model_name {s:?}; one of {}", names.join(", "))));
            }
        })
    }
}

/// A backbone's exact shape (an [`Arch`] preset, or a reduced one in tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spec {
    ResNet(ResNetConfig),
    Inception(InceptionConfig),
    EfficientNet(EfficientNetConfig),
    Vit(VitConfig),
}

impl Spec {
    /// What weights of this backbone record of how it was built (safetensors metadata, read back
    /// by the commands that load them): Inception's `transform_input`; nothing for the others.
    pub fn attributes(&self) -> Vec<(String, String)> {
        match self {
            Spec::Inception(c) => c.attributes(),
            _ => Vec::new(),
        }
    }

    /// Width of the features the backbone hands to a head.
    pub fn feature_dim(&self) -> i64 {
        match self {
            Spec::ResNet(c) => c.feature_dim(),
            Spec::Inception(c) => c.feature_dim(),
            Spec::EfficientNet(c) => c.feature_dim(),
            Spec::Vit(c) => c.feature_dim(),
        }
    }

    /// Name of the classification layer in torchvision (`fc`, EfficientNet's `classifier.1`) or
    /// timm (`head`).
    pub fn head_name(&self) -> &'static str {
        match self {
            Spec::ResNet(_) | Spec::Inception(_) => "fc",
            Spec::EfficientNet(_) => "classifier.1",
            Spec::Vit(_) => "head",
        }
    }
}

/// A feature extractor: images (N, 3, H, W) → features (N, D).
pub enum Backbone {
    ResNet(ResNet),
    Inception(Box<Inception3>),
    EfficientNet(Box<EfficientNet>),
    Vit(Vit),
}

impl Backbone {
    /// Creates the parameters under `p` with the reference library's names.
    pub fn new(p: &nn::Path, spec: Spec) -> Self {
        match spec {
            Spec::ResNet(c) => Backbone::ResNet(ResNet::new(p, c)),
            Spec::Inception(c) => Backbone::Inception(Box::new(Inception3::new(p, c))),
            Spec::EfficientNet(c) => Backbone::EfficientNet(Box::new(EfficientNet::new(p, c))),
            Spec::Vit(c) => Backbone::Vit(Vit::new(p, c)),
        }
    }

    pub fn spec(&self) -> Spec {
        match self {
            Backbone::ResNet(m) => Spec::ResNet(*m.config()),
            Backbone::Inception(m) => Spec::Inception(*m.config()),
            Backbone::EfficientNet(m) => Spec::EfficientNet(*m.config()),
            Backbone::Vit(m) => Spec::Vit(*m.config()),
        }
    }
}

impl ModuleT for Backbone {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Backbone::ResNet(m) => m.features(xs, train),
            Backbone::Inception(m) => m.features(xs, train),
            Backbone::EfficientNet(m) => m.features(xs, train),
            Backbone::Vit(m) => m.features(xs, train),
        }
    }
}

impl fmt::Debug for Backbone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backbone({:?})", self.spec())
    }
}

/// Backbone + dropout (`dropout_p`) + linear head, the release's classifier. The head is named as
/// in torchvision (`fc`, `classifier.1`) or timm (`head`), so whole-model checkpoints load too;
/// Inception v3 keeps torchvision's auxiliary classifier (`AuxLogits`) for training.
#[derive(Debug)]
pub struct Classifier {
    pub backbone: Backbone,
    head: nn::Linear,
    aux: Option<AuxHead>,
    dropout_p: f64,
}

impl Classifier {
    /// Creates backbone and head at the root of `p`.
    pub fn new(p: &nn::Path, spec: Spec, classes: i64, dropout_p: f64) -> Self {
        let backbone = Backbone::new(p, spec);
        let head_path = spec.head_name().split('.').fold(p.clone(), |q, part| q / part);
        let head = nn::linear(head_path, spec.feature_dim(), classes, Default::default());
        let aux = matches!(spec, Spec::Inception(_)).then(|| AuxHead::new(&(p / "AuxLogits"), classes));
        Self { backbone, head, aux, dropout_p }
    }

    /// Logits from backbone features: dropout (while training) then the linear head.
    pub fn head(&self, features: &Tensor, train: bool) -> Tensor {
        features.dropout(self.dropout_p, train).apply(&self.head)
    }

    /// Logits, and while training the auxiliary classifier's where the network has one (Inception
    /// v3, as torchvision returns them in training mode). `backbone_train` runs the backbone in
    /// training mode (off for a frozen backbone).
    pub fn forward_with_aux(&self, xs: &Tensor, train: bool, backbone_train: bool) -> (Tensor, Option<Tensor>) {
        match (&self.backbone, &self.aux) {
            (Backbone::Inception(m), Some(aux)) if train && backbone_train => {
                let (map, mixed_6e) = m.feature_maps(xs, true);
                let feats = map.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
                (self.head(&feats, true), Some(aux.forward(&mixed_6e, true)))
            }
            _ => (self.head(&self.backbone.forward_t(xs, backbone_train), train), None),
        }
    }
}

impl ModuleT for Classifier {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head(&self.backbone.forward_t(xs, train), train)
    }
}
