//! The pathology foundation models and DINOv2 backbones people embed with, as presets: each with the
//! architecture, native input size, normalisation and output rule its authors publish.

use std::fmt;

use crate::naming::Naming;
use crate::vit::{Mlp, Pool, PosResample, VitConfig};

/// A published ViT backbone whose weights the user has as a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foundation {
    /// MahmoodLab UNI: timm ViT-L/16, LayerScale, 224 px, class token (1024).
    Uni,
    /// MahmoodLab UNI2-h: ViT-H/14-like (1536 wide, 24 deep), SwiGLU, 8 registers outside the
    /// position embedding, class token (1536).
    Uni2H,
    /// Paige Virchow: ViT-H/14, SwiGLU, class token ⊕ patch-token mean (2560).
    Virchow,
    /// Paige Virchow2: Virchow with 4 registers, class token ⊕ mean of patch tokens (2560).
    Virchow2,
    /// Virchow2 with its class token only (1280), as TRIDENT offers it.
    Virchow2Cls,
    /// Bioptimus H-optimus-0: ViT-g/14 with 4 registers, its own normalisation, class token (1536).
    HOptimus0,
    /// Bioptimus H-optimus-1: H-optimus-0's architecture and normalisation, new weights (1536).
    HOptimus1,
    /// Prov-GigaPath's tile encoder: ViT-g with 16 px patches, SwiGLU, class token (1536).
    GigaPath,
    /// Owkin Phikon: Hugging Face `ViTModel` ViT-B/16, class token (768).
    Phikon,
    /// MahmoodLab CONCH v1.5 (TITAN's patch encoder): ViT-L/16 with LayerScale, its 14 × 14
    /// position grid resampled by DINO's rule to 448 px, the contrastive attentional pooler (768).
    ConchV15,
    /// DINOv2 ViT-S/14, B/14, L/14, g/14 (the repository's checkpoints at 518 px, used at any size).
    Dinov2S14,
    Dinov2B14,
    Dinov2L14,
    Dinov2G14,
}

/// ImageNet's mean and standard deviation, what most of these models were trained with.
pub const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

/// timm's `2.66667 · 2`, the SwiGLU ratio of DINOv2-g and its descendants.
const SWIGLU_RATIO: f64 = 2.66667 * 2.0;

impl Foundation {
    pub const ALL: [Foundation; 14] = [
        Foundation::Uni,
        Foundation::Uni2H,
        Foundation::Virchow,
        Foundation::Virchow2,
        Foundation::Virchow2Cls,
        Foundation::HOptimus0,
        Foundation::HOptimus1,
        Foundation::GigaPath,
        Foundation::Phikon,
        Foundation::ConchV15,
        Foundation::Dinov2S14,
        Foundation::Dinov2B14,
        Foundation::Dinov2L14,
        Foundation::Dinov2G14,
    ];

    /// The preset's name on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Foundation::Uni => "uni",
            Foundation::Uni2H => "uni2-h",
            Foundation::Virchow => "virchow",
            Foundation::Virchow2 => "virchow2",
            Foundation::Virchow2Cls => "virchow2-cls",
            Foundation::HOptimus0 => "h-optimus-0",
            Foundation::HOptimus1 => "h-optimus-1",
            Foundation::GigaPath => "gigapath",
            Foundation::Phikon => "phikon",
            Foundation::ConchV15 => "conch-v15",
            Foundation::Dinov2S14 => "dinov2-s14",
            Foundation::Dinov2B14 => "dinov2-b14",
            Foundation::Dinov2L14 => "dinov2-l14",
            Foundation::Dinov2G14 => "dinov2-g14",
        }
    }

    /// Where the weights are published (the user downloads them).
    pub fn source(self) -> &'static str {
        match self {
            Foundation::Uni => "hf-hub MahmoodLab/UNI (timm)",
            Foundation::Uni2H => "hf-hub MahmoodLab/UNI2-h (timm)",
            Foundation::Virchow => "hf-hub paige-ai/Virchow (timm)",
            Foundation::Virchow2 => "hf-hub paige-ai/Virchow2 (timm)",
            Foundation::Virchow2Cls => "hf-hub paige-ai/Virchow2 (timm), class token only",
            Foundation::HOptimus0 => "hf-hub bioptimus/H-optimus-0 (timm)",
            Foundation::HOptimus1 => "hf-hub bioptimus/H-optimus-1 (timm)",
            Foundation::GigaPath => "hf-hub prov-gigapath/prov-gigapath (timm)",
            Foundation::Phikon => "hf-hub owkin/phikon (transformers ViTModel)",
            Foundation::ConchV15 => "hf-hub MahmoodLab/conchv1_5 (pytorch_model_vision.bin)",
            Foundation::Dinov2S14 => "dl.fbaipublicfiles.com dinov2_vits14_pretrain.pth",
            Foundation::Dinov2B14 => "dl.fbaipublicfiles.com dinov2_vitb14_pretrain.pth",
            Foundation::Dinov2L14 => "dl.fbaipublicfiles.com dinov2_vitl14_pretrain.pth",
            Foundation::Dinov2G14 => "dl.fbaipublicfiles.com dinov2_vitg14_pretrain.pth",
        }
    }

    /// The names its published weights use (what `export` writes back).
    pub fn naming(self) -> Naming {
        match self {
            Foundation::Phikon => Naming::HuggingFace,
            Foundation::Dinov2S14 | Foundation::Dinov2B14 | Foundation::Dinov2L14 | Foundation::Dinov2G14 => {
                Naming::Dinov2
            }
            _ => Naming::Timm,
        }
    }

    /// Mean and standard deviation of the input normalisation.
    pub fn stats(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Foundation::HOptimus0 | Foundation::HOptimus1 => {
                ([0.707223, 0.578729, 0.703617], [0.211883, 0.230117, 0.177517])
            }
            _ => IMAGENET,
        }
    }

    /// The exact architecture.
    pub fn config(self) -> VitConfig {
        let dino = |dim, depth, heads| VitConfig {
            patch: 14,
            img_size: 518,
            layer_scale: true,
            pos_resample: PosResample::Dino,
            ..VitConfig::preset(14, dim, depth, heads)
        };
        let huge = VitConfig {
            patch: 14,
            layer_scale: true,
            mlp: Mlp::SwiGlu,
            mlp_ratio: 5.3375,
            pool: Pool::ClsAndPatchMean,
            ..VitConfig::preset(14, 1280, 32, 16)
        };
        let giant = |patch, depth| VitConfig {
            layer_scale: true,
            mlp: Mlp::SwiGlu,
            mlp_ratio: SWIGLU_RATIO,
            ..VitConfig::preset(patch, 1536, depth, 24)
        };
        match self {
            Foundation::Uni => VitConfig { layer_scale: true, ..VitConfig::L16 },
            Foundation::Uni2H => VitConfig { reg_tokens: 8, no_embed_class: true, ..giant(14, 24) },
            Foundation::Virchow => huge,
            Foundation::Virchow2 => VitConfig { reg_tokens: 4, ..huge },
            Foundation::Virchow2Cls => VitConfig { reg_tokens: 4, pool: Pool::Cls, ..huge },
            Foundation::HOptimus0 | Foundation::HOptimus1 => {
                VitConfig { reg_tokens: 4, no_embed_class: true, ..giant(14, 40) }
            }
            Foundation::GigaPath => giant(16, 40),
            Foundation::Phikon => VitConfig { ln_eps: 1e-12, pos_resample: PosResample::Plain, ..VitConfig::B16 },
            Foundation::ConchV15 => VitConfig {
                layer_scale: true,
                pos_resample: PosResample::Dino,
                pool: Pool::Attentional { dim: 768, heads: 8 },
                ..VitConfig::L16
            },
            Foundation::Dinov2S14 => dino(384, 12, 6),
            Foundation::Dinov2B14 => dino(768, 12, 12),
            Foundation::Dinov2L14 => dino(1024, 24, 16),
            Foundation::Dinov2G14 => VitConfig { mlp: Mlp::SwiGlu, mlp_ratio: SWIGLU_RATIO, ..dino(1536, 40, 24) },
        }
    }

    /// By its name (`uni`, `UNI2-h`, `h_optimus_0`, …).
    pub fn parse(name: &str) -> Option<Self> {
        let k = name.to_ascii_lowercase().replace('_', "-");
        Self::ALL.into_iter().find(|f| f.name() == k)
    }
}

impl fmt::Display for Foundation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
