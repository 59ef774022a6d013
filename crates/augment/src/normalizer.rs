//! The stain normalisers by name: a method, fitted to a target, applied to patches (what `build
//! --stain-normalize` records and applies), and `patchtcga bench stain`.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use image::RgbImage;

use crate::stain::{Macenko, Normalized, Reinhard};
use crate::vahadane::Vahadane;

/// A normaliser of each kind, fitted to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StainMethod {
    /// Reinhard et al. 2001: LAB channel means and standard deviations.
    Reinhard,
    /// Macenko et al. 2009: H&E vectors and concentrations in optical density.
    Macenko,
    /// Vahadane et al. 2016: H&E vectors by non-negative sparse dictionary learning.
    Vahadane,
}

/// A stain normaliser fitted to a target image: what `build --stain-normalize` applies to every
/// patch (and records in the dataset's settings).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum StainNormalizer {
    Reinhard(Reinhard),
    Macenko(Macenko),
    Vahadane(Vahadane),
}

impl StainNormalizer {
    /// `method` fitted to `target`; `None` when the target holds too little stain for it.
    pub fn fit(method: StainMethod, target: &RgbImage) -> Option<Self> {
        match method {
            StainMethod::Reinhard => {
                let r = Reinhard::fit(target);
                (r.stds.iter().all(|&s| s >= 1e-6)).then_some(Self::Reinhard(r))
            }
            StainMethod::Macenko => Macenko::fit(target).map(Self::Macenko),
            StainMethod::Vahadane => Vahadane::fit(target).map(Self::Vahadane),
        }
    }

    /// `image` in the target's stain, or [`Normalized::Unchanged`].
    pub fn normalize(&self, image: &RgbImage) -> Normalized {
        match self {
            Self::Reinhard(r) => r.normalize(image),
            Self::Macenko(m) => m.normalize(image),
            Self::Vahadane(v) => v.normalize(image),
        }
    }

    /// `image` in the target's stain, or as it is when it holds too little stain.
    pub fn apply(&self, image: RgbImage) -> RgbImage {
        match self.normalize(&image) {
            Normalized::Image(out) => out,
            Normalized::Unchanged => image,
        }
    }
}

/// The stain-normalisation flags of the commands that make patches (`build`, `embed --slides`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StainFlags {
    /// Normalise every patch's stain to `--stain-target`'s: reinhard (LAB mean and spread),
    /// macenko (H&E vectors, as torchstain) or vahadane (H&E vectors by sparse dictionary
    /// learning).
    #[arg(long, value_enum, requires = "stain_target")]
    pub stain_normalize: Option<StainMethod>,
    /// The image whose stain patches are normalised to (a typical H&E patch of the target site).
    #[arg(long, requires = "stain_normalize")]
    pub stain_target: Option<PathBuf>,
}

impl StainFlags {
    /// The normaliser the flags ask for, fitted to the target; the target and why refused in
    /// words when it cannot be.
    pub fn fitted(&self) -> Result<Option<StainNormalizer>, (PathBuf, String)> {
        let (Some(method), Some(target)) = (self.stain_normalize, &self.stain_target) else { return Ok(None) };
        let bad = |cause: String| (target.clone(), cause);
        let image = image::open(target).map_err(|e| bad(format!("not a readable image: {e}")))?;
        StainNormalizer::fit(method, &image.to_rgb8())
            .map(Some)
            .ok_or_else(|| bad("too little stain to fit a stain normaliser to (glass or a blank image?)".into()))
    }

    /// How the patches' stain is normalised, for a provenance record (empty without).
    pub fn describe(&self) -> String {
        match (
            self.stain_normalize.and_then(|m| m.to_possible_value()),
            self.stain_target.as_deref().and_then(Path::file_name),
        ) {
            (Some(m), Some(t)) => format!(", stain {} to {}", m.get_name(), t.to_string_lossy()),
            _ => String::new(),
        }
    }
}

/// Options of `patchtcga bench stain`: one core normalising one patch over and over.
#[derive(clap::Args)]
pub struct StainBench {
    /// Normaliser.
    #[arg(long, value_enum)]
    pub method: StainMethod,
    /// Image it is fitted to.
    #[arg(long)]
    pub target: std::path::PathBuf,
    /// Patch normalised.
    #[arg(long)]
    pub image: std::path::PathBuf,
    /// Seconds to run.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
}

/// Patches normalised per second by [`StainBench::run`].
pub struct StainTiming {
    pub method: StainMethod,
    pub side: (u32, u32),
    pub per_second: f64,
}

impl StainBench {
    /// Fits the normaliser, then normalises the patch for `seconds` on this thread.
    pub fn run(&self) -> Result<StainTiming, String> {
        let open = |p: &std::path::Path| {
            image::open(p).map(|i| i.to_rgb8()).map_err(|e| format!("{}: not a readable image: {e}", p.display()))
        };
        let (target, patch) = (open(&self.target)?, open(&self.image)?);
        let normalizer = StainNormalizer::fit(self.method, &target)
            .ok_or_else(|| format!("{}: too little stain to fit to", self.target.display()))?;
        let start = std::time::Instant::now();
        let mut n = 0u64;
        while n == 0 || start.elapsed().as_secs_f64() < self.seconds {
            std::hint::black_box(normalizer.normalize(&patch));
            n += 1;
        }
        Ok(StainTiming {
            method: self.method,
            side: patch.dimensions(),
            per_second: n as f64 / start.elapsed().as_secs_f64(),
        })
    }
}

impl std::fmt::Display for StainTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{:?}: {:.1} patches/s of {} × {} px on one core",
            self.method, self.per_second, self.side.0, self.side.1
        )
    }
}
