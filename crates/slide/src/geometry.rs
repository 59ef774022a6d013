//! Patch geometry: size and µm/px, and the field of view they fix.

use crate::{Result, SlideError};

/// Default target resolution of the PatchTCGA datasets, µm per pixel.
pub const DEFAULT_MPP: f64 = 0.39;
/// Default patch side in pixels (0.39 µm/px × 512 px ≈ 200 µm field of view).
pub const DEFAULT_PATCH_SIZE: u32 = 512;

/// The shape of a patch: side in pixels at a target resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchGeometry {
    /// Target µm per pixel.
    pub mpp: f64,
    /// Patch side in pixels at `mpp`.
    pub size: u32,
}

impl Default for PatchGeometry {
    fn default() -> Self {
        Self { mpp: DEFAULT_MPP, size: DEFAULT_PATCH_SIZE }
    }
}

/// A patch's shape as the tiling commands take it: any two of µm/px, side and field of view.
#[derive(Debug, Clone, Copy, PartialEq, Default, clap::Args)]
pub struct GeometryFlags {
    /// Target resolution, µm per pixel (default 0.39).
    #[arg(long)]
    pub mpp: Option<f64>,
    /// Patch side in pixels (default 512).
    #[arg(long)]
    pub size: Option<u32>,
    /// Field of view in µm (with --mpp or --size, fixes the other).
    #[arg(long)]
    pub field_um: Option<f64>,
}

impl GeometryFlags {
    /// The geometry these fix ([`PatchGeometry::resolve`]).
    pub fn resolve(&self) -> Result<PatchGeometry> {
        PatchGeometry::resolve(self.mpp, self.size, self.field_um)
    }
}

impl PatchGeometry {
    /// Resolves the geometry from any two of µm/px, pixels and field of view (µm); absent
    /// values take the defaults (0.39 µm/px, 512 px), and a field of view given alone keeps
    /// the default µm/px. All three given must agree within half a pixel.
    pub fn resolve(mpp: Option<f64>, size: Option<u32>, field_um: Option<f64>) -> Result<Self> {
        let bad = |what: &str, v: f64| {
            if !(v.is_finite() && v > 0.0) {
                Err(SlideError::Parameter(format!("{what} must be positive, got {v}")))
            } else {
                Ok(())
            }
        };
        if let Some(v) = mpp {
            bad("--mpp", v)?;
        }
        if let Some(v) = size {
            bad("--size", v as f64)?;
        }
        if let Some(v) = field_um {
            bad("--field-um", v)?;
        }
        let g = match (mpp, size, field_um) {
            (m, s, None) => Self { mpp: m.unwrap_or(DEFAULT_MPP), size: s.unwrap_or(DEFAULT_PATCH_SIZE) },
            (None, Some(s), Some(f)) => Self { mpp: f / s as f64, size: s },
            (m, None, Some(f)) => {
                let m = m.unwrap_or(DEFAULT_MPP);
                Self { mpp: m, size: (f / m).round().max(1.0) as u32 }
            }
            (Some(m), Some(s), Some(f)) => {
                if ((f / m) - s as f64).abs() > 0.5 {
                    return Err(SlideError::Parameter(format!(
                        "--mpp {m} × --size {s} = {} µm, which disagrees with --field-um {f}",
                        m * s as f64
                    )));
                }
                Self { mpp: m, size: s }
            }
        };
        Ok(g)
    }

    /// Field of view in µm.
    pub fn field_um(&self) -> f64 {
        self.mpp * self.size as f64
    }
}
