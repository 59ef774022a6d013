//! The choices of a run config as types, parsed once when the config loads (a typo is one error
//! naming the key and the valid values), so every place that must know a new variant is found by
//! the compiler.

use std::fmt;
use std::str::FromStr;

use patchtcga_augment::Preset;
use serde::{de::IntoDeserializer, Deserialize, Deserializer, Serialize};

use crate::LearnError;

/// The release's `self_supervised` key: how a backbone is pretrained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelfSupervised {
    /// Supervised organ classification (the release's `none`).
    #[default]
    None,
    #[serde(rename = "simclr")]
    SimClr,
    Byol,
    #[serde(rename = "mocov2")]
    MocoV2,
    Dino,
    Mae,
}

impl SelfSupervised {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::SimClr => "simclr",
            Self::Byol => "byol",
            Self::MocoV2 => "mocov2",
            Self::Dino => "dino",
            Self::Mae => "mae",
        }
    }

    /// The view recipe the method trains on.
    pub fn recipe(self) -> Preset {
        match self {
            Self::None => Preset::Supervised,
            Self::SimClr | Self::MocoV2 => Preset::SimClr,
            Self::Byol => Preset::Byol,
            Self::Dino => Preset::Dino,
            Self::Mae => Preset::Mae,
        }
    }
}

impl fmt::Display for SelfSupervised {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The release's `optim` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optim {
    #[default]
    Adam,
    AdamW,
    Sgd,
    Lars,
}

impl FromStr for Optim {
    type Err = LearnError;
    fn from_str(s: &str) -> Result<Self, LearnError> {
        Self::deserialize(s.into_deserializer())
            .map_err(|e: serde::de::value::Error| LearnError::Config(format!("optim {s:?}: {e}")))
    }
}

/// How `clip_norm` applies (ours).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipMode {
    /// One norm over all gradients (`clip_grad_norm_`).
    #[default]
    Global,
    /// Each parameter's own norm (DINO's `clip_gradients`).
    PerParameter,
}

/// The c10d backend for GPU tensors (`dist_backend`; CPU tensors always go through Gloo).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistBackend {
    /// NCCL on a GPU where the build has it, else Gloo.
    #[default]
    Auto,
    Nccl,
    Gloo,
}

impl DistBackend {
    /// The config value, as `patchtcga_collective::Backend::choose` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Nccl => "nccl",
            Self::Gloo => "gloo",
        }
    }
}

/// What a run does when an update's loss or gradients are not finite (ours).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNonFinite {
    /// Stop with an error naming the update, the loss and the last good checkpoint (exit 1).
    #[default]
    Stop,
    /// Drop the update, count it in the log (`skipped_updates`) and go on.
    Skip,
}

/// The device a run trains on: `cpu`, `cuda` (a distributed run's process takes the GPU of its
/// local rank) or `cuda:N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// The GPU of this process's local rank.
    Cuda,
    /// One GPU by index.
    CudaIndex(usize),
}

impl DeviceChoice {
    /// Whether a GPU is asked for.
    pub fn is_cuda(self) -> bool {
        self != Self::Cpu
    }
}

impl FromStr for DeviceChoice {
    type Err = LearnError;
    fn from_str(s: &str) -> Result<Self, LearnError> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::CudaIndex)
                .ok_or_else(|| LearnError::Config(format!("device {other:?}: cpu, cuda or cuda:N"))),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = LearnError;
    fn try_from(s: String) -> Result<Self, LearnError> {
        s.parse()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda => f.write_str("cuda"),
            Self::CudaIndex(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

/// Normalisation statistics (`image_stats`): `imagenet`, `ptcga`, or `m0,m1,m2,s0,s1,s2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageStats {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// As written in the config.
    spec: String,
}

const IMAGENET: [f32; 6] = [0.485, 0.456, 0.406, 0.229, 0.224, 0.225];
const PTCGA: [f32; 6] = [0.7184, 0.5076, 0.6476, 0.0380, 0.0527, 0.0352];

impl ImageStats {
    /// The normalisation `arch`'s weights expect: a foundation-model preset's own, else ImageNet's.
    pub fn of(arch: patchtcga_model::Arch) -> Self {
        match arch.stats() {
            Some((m, s)) => {
                let spec = format!("{},{},{},{},{},{}", m[0], m[1], m[2], s[0], s[1], s[2]);
                Self { mean: m, std: s, spec }
            }
            None => Self::default(),
        }
    }
}

impl Default for ImageStats {
    fn default() -> Self {
        "imagenet".parse().expect("a known name")
    }
}

impl FromStr for ImageStats {
    type Err = LearnError;
    fn from_str(s: &str) -> Result<Self, LearnError> {
        let v: Vec<f32> = match s {
            "imagenet" => IMAGENET.to_vec(),
            "ptcga" | "ptcga200" => PTCGA.to_vec(),
            other => other.split(',').map(|x| x.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|_| {
                LearnError::Config(format!("image_stats {other:?}: expected imagenet, ptcga or six numbers"))
            })?,
        };
        if v.len() != 6 || v[3..].iter().any(|&s| s <= 0.0) {
            return Err(LearnError::Config(format!("image_stats {s:?}: expected three means and three positive stds")));
        }
        Ok(Self { mean: [v[0], v[1], v[2]], std: [v[3], v[4], v[5]], spec: s.to_string() })
    }
}

impl TryFrom<String> for ImageStats {
    type Error = LearnError;
    fn try_from(s: String) -> Result<Self, LearnError> {
        s.parse()
    }
}

impl From<ImageStats> for String {
    fn from(s: ImageStats) -> String {
        s.spec
    }
}

/// Reads an optional value written as a string, `""` meaning none (the release's empty paths).
pub fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => T::deserialize(s.into_deserializer()).map(Some),
    }
}
