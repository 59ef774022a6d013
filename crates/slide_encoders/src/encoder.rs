//! The slide encoders by name, the patch features each was trained on, and one loaded from its
//! weights: a slide's patch features in, one embedding out.

use std::path::Path;

use patchtcga_model::ImportReport;
use tch::{Device, Kind, Tensor};

use patchtcga_engine::LearnError;

use crate::feather::Feather;
use crate::titan::Titan;

/// A slide encoder, as `embed-slides --encoder` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlideEncoderKind {
    /// FEATHER over CONCH v1.5 features (Hugging Face MahmoodLab/abmil.base.conch_v15.pc108-24k).
    Feather,
    /// FEATHER over UNI2-h features (Hugging Face MahmoodLab/abmil.base.uni_v2.pc108-24k).
    #[value(name = "feather-uni2")]
    FeatherUni2,
    /// TITAN over CONCH v1.5 features on its 2-D grid (Hugging Face MahmoodLab/TITAN).
    Titan,
    /// The mean of the patch features: no weights, the baseline slide-encoder papers report.
    Mean,
}

/// The patch features a slide encoder was trained on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contract {
    /// The patch encoder, as `embed --slides` records it (`model`) and TRIDENT names it.
    pub patch_encoder: &'static str,
    pub trident_name: &'static str,
    /// Feature width.
    pub width: i64,
    /// Patch side in pixels at 20× (0.5 µm/px), as TRIDENT reads them before resizing them to
    /// the patch encoder's input.
    pub patch_size: u32,
    /// The patch encoder's input side: patches of the same footprint read at this size are the
    /// same patches.
    pub input: u32,
    /// Where the encoder's weights are published.
    pub weights: &'static str,
}

impl SlideEncoderKind {
    /// The name `--encoder` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Feather => "feather",
            Self::FeatherUni2 => "feather-uni2",
            Self::Titan => "titan",
            Self::Mean => "mean",
        }
    }

    /// The patch features it takes; `None` for mean pooling, which takes any.
    pub fn contract(self) -> Option<Contract> {
        match self {
            Self::Feather => Some(Contract {
                patch_encoder: "conch-v15",
                trident_name: "conch_v15",
                width: 768,
                patch_size: 512,
                input: 448,
                weights: "hf-hub MahmoodLab/abmil.base.conch_v15.pc108-24k (model.safetensors)",
            }),
            Self::FeatherUni2 => Some(Contract {
                patch_encoder: "uni2-h",
                trident_name: "uni_v2",
                width: 1536,
                patch_size: 256,
                input: 224,
                weights: "hf-hub MahmoodLab/abmil.base.uni_v2.pc108-24k (model.safetensors)",
            }),
            Self::Titan => Some(Contract {
                weights: "hf-hub MahmoodLab/TITAN (model.safetensors)",
                ..Self::Feather.contract().expect("FEATHER's contract")
            }),
            Self::Mean => None,
        }
    }

    /// Whether it needs the patches' places (`coords` and their level-0 footprint).
    pub fn needs_coords(self) -> bool {
        self == Self::Titan
    }
}

/// One slide's patch features and where the patches lie.
pub struct PatchFeatures {
    /// (N, width).
    pub features: Tensor,
    /// Level-0 top-left corners (x, y).
    pub coords: Vec<[i64; 2]>,
    /// A patch's side in level-0 pixels (`patch_size_level0`), when known.
    pub footprint: Option<i64>,
}

/// How a slide's patch features were made, as far as its `.h5` says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeaturesMade {
    /// The patch encoder (`model`, written by `embed --slides`).
    pub patch_encoder: Option<String>,
    pub mpp: Option<f64>,
    /// Patch side at `mpp` (`patch_size` of the file or of its `coords`).
    pub patch_size: Option<u32>,
    /// TRIDENT's `target_magnification` on `coords` (20 for 0.5 µm/px).
    pub magnification: Option<f64>,
    /// A patch's side in level-0 pixels (`patch_size_level0` on `coords`).
    pub footprint: Option<i64>,
}

impl Contract {
    /// A patch's side in µm.
    pub fn footprint(&self) -> f64 {
        self.patch_size as f64 * 0.5
    }

    /// Refuses features that are not what the encoder was trained on, naming what to run:
    /// `width` against the width its weights take (`self.width` in the published ones), and what
    /// the file records of how they were made (the patch encoder; the patches' footprint in µm,
    /// whatever size they were read at).
    pub fn check(
        &self,
        encoder: SlideEncoderKind,
        file: &Path,
        (width, weights_width): (i64, i64),
        made: &FeaturesMade,
    ) -> Result<(), LearnError> {
        let mut wrong = Vec::new();
        if width != weights_width {
            wrong.push(format!("{width}-wide features"));
        }
        if let Some(m) = made.patch_encoder.as_deref().filter(|m| *m != self.patch_encoder) {
            wrong.push(format!("features of {m}"));
        }
        if let Some(um) = made.footprint().filter(|um| (um / self.footprint() - 1.0).abs() > 0.05) {
            wrong.push(format!("{um:.0} µm patches"));
        }
        if wrong.is_empty() {
            return Ok(());
        }
        Err(LearnError::Config(format!(
            "{}: {}; {} takes {} features ({} wide in its published weights) of {:.0} µm patches ({} px at 20×): \
             embed the slides with `patchtcga embed --slides … --arch {} --image-size {} --mpp {:.4}`, or TRIDENT's \
             `--patch_encoder {} --patch_size {} --mag 20`",
            file.display(),
            wrong.join(", "),
            encoder.name(),
            self.patch_encoder,
            self.width,
            self.footprint(),
            self.patch_size,
            self.patch_encoder,
            self.input,
            self.footprint() / self.input as f64,
            self.trident_name,
            self.patch_size,
        )))
    }
}

impl FeaturesMade {
    /// A patch's side in µm: its size times its µm/px (or 10 / magnification).
    pub fn footprint(&self) -> Option<f64> {
        let mpp = self.mpp.or(self.magnification.map(|m| 10.0 / m))?;
        Some(self.patch_size? as f64 * mpp)
    }
}

/// A slide encoder ready to embed slides.
pub enum SlideEncoder {
    Feather(Feather),
    Titan(Box<Titan>),
    Mean,
}

impl SlideEncoder {
    /// `kind` with the weights at `weights` (refused for mean pooling, required otherwise) on
    /// `device`, and what the import did.
    pub fn load(
        kind: SlideEncoderKind,
        weights: Option<&Path>,
        device: Device,
    ) -> Result<(Self, Option<ImportReport>), LearnError> {
        match (kind, weights) {
            (SlideEncoderKind::Mean, None) => Ok((Self::Mean, None)),
            (SlideEncoderKind::Mean, Some(_)) => Err(LearnError::Config("--encoder mean takes no --weights".into())),
            (k, None) => Err(LearnError::Config(format!(
                "--encoder {} needs --weights (published as {})",
                k.name(),
                k.contract().map_or("", |c| c.weights)
            ))),
            (SlideEncoderKind::Feather | SlideEncoderKind::FeatherUni2, Some(w)) => {
                let (net, report) = Feather::load(w, device)?;
                Ok((Self::Feather(net), Some(report)))
            }
            (SlideEncoderKind::Titan, Some(w)) => {
                let (net, report) = Titan::load(w, device)?;
                Ok((Self::Titan(Box::new(net)), Some(report)))
            }
        }
    }

    /// The feature width it takes, when its weights fix one.
    pub fn input_width(&self) -> Option<i64> {
        match self {
            Self::Feather(f) => Some(f.widths().input),
            Self::Titan(t) => Some(t.shape().input),
            Self::Mean => None,
        }
    }

    /// The embedding (D) of one slide's patches, on the CPU (float32). TITAN without the
    /// patches' footprint is refused.
    pub fn encode(&self, p: &PatchFeatures) -> Result<Tensor, LearnError> {
        let z = tch::no_grad(|| -> Result<Tensor, LearnError> {
            Ok(match self {
                Self::Feather(f) => f.forward(&p.features).0,
                Self::Titan(t) => {
                    let footprint = p.footprint.ok_or_else(|| {
                        LearnError::Config(
                            "TITAN needs the patches' level-0 footprint: `coords.attrs['patch_size_level0']` (written \
                             by `embed --slides` and TRIDENT), or --patch-size-level0"
                                .into(),
                        )
                    })?;
                    t.forward(&p.features, &p.coords, footprint)
                }
                Self::Mean => p.features.to_kind(Kind::Float).mean_dim([0].as_slice(), false, Kind::Float),
            })
        })?;
        Ok(z.to_device(Device::Cpu).to_kind(Kind::Float))
    }
}
