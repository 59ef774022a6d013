//! Candidate patch positions: a grid over the slide or random positions over tissue, in a seeded order.

use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Result, SlideError, TissueMask};

/// How candidate patch positions are laid over the tissue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sampling {
    /// Non-overlapping cells of a regular grid anchored at the slide's origin.
    Grid,
    /// Positions drawn uniformly over the tissue (patches may overlap; needs a per-slide cap).
    Random,
}

/// Proposes patch positions for one slide, deterministically from a seed and the slide's name.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Sampler {
    /// Candidate positions: non-overlapping grid cells, or random positions over tissue.
    #[arg(long, value_enum, default_value_t = Sampling::Grid)]
    pub sampling: Sampling,
    /// Minimum tissue fraction of a patch's footprint (by the tissue mask).
    #[arg(long, default_value_t = 0.5)]
    pub min_tissue: f64,
    /// Seed of the sampling and the split assignment; each slide's stream also depends on its
    /// name, not on the order of slides.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A proposed patch: level-0 top-left corner and the tissue fraction of its footprint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Level-0 x of the top-left corner.
    pub x: u32,
    /// Level-0 y of the top-left corner.
    pub y: u32,
    /// Tissue-mask fraction of the footprint.
    pub tissue: f64,
}

/// The candidate positions of a slide, and how many positions with enough tissue were left out
/// for holding too much pen ink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidates {
    /// Positions in the order they should be tried.
    pub kept: Vec<Candidate>,
    /// Positions with enough tissue whose footprint held more ink than `--max-ink`.
    pub inked: usize,
}

impl Sampler {
    /// Candidate positions for a slide of level-0 size `dims` and a patch footprint of
    /// `footprint` level-0 pixels, in the order they should be tried (a per-slide cap takes the
    /// first accepted ones). `cap` bounds how many random positions are drawn.
    pub fn candidates(
        &self,
        slide_key: &str,
        dims: (u32, u32),
        footprint: (f64, f64),
        mask: &TissueMask,
        cap: Option<usize>,
    ) -> Result<Candidates> {
        let (fw, fh) = footprint;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ fnv1a(slide_key.as_bytes()));
        let inked = std::cell::Cell::new(0usize);
        let keep = |x: u32, y: u32| {
            let tissue = mask.fraction(x as f64, y as f64, fw, fh);
            if tissue < self.min_tissue {
                return None;
            }
            if mask.too_inky(x as f64, y as f64, fw, fh) {
                inked.set(inked.get() + 1);
                return None;
            }
            Some(Candidate { x, y, tissue })
        };
        let kept = match self.sampling {
            Sampling::Grid => {
                let cols = (dims.0 as f64 / fw).floor() as u32;
                let rows = (dims.1 as f64 / fh).floor() as u32;
                let mut out: Vec<Candidate> = (0..rows)
                    .flat_map(|j| (0..cols).map(move |i| (i, j)))
                    .filter_map(|(i, j)| keep((i as f64 * fw).round() as u32, (j as f64 * fh).round() as u32))
                    .collect();
                out.shuffle(&mut rng);
                out
            }
            Sampling::Random => {
                let cap = cap.ok_or_else(|| {
                    SlideError::Parameter("random sampling needs a per-slide cap (--per-slide)".into())
                })?;
                let m = mask.mask();
                let tissue_px: Vec<(u32, u32)> =
                    m.enumerate_pixels().filter(|(_, _, p)| p.0[0] != 0).map(|(x, y, _)| (x, y)).collect();
                let (max_x, max_y) = ((dims.0 as f64 - fw).max(0.0), (dims.1 as f64 - fh).max(0.0));
                let want = cap.saturating_mul(4);
                let mut out = Vec::with_capacity(want);
                let mut seen = std::collections::HashSet::new();
                for _ in 0..want.saturating_mul(20) {
                    if out.len() >= want || tissue_px.is_empty() {
                        break;
                    }
                    let (px, py) = tissue_px[rng.gen_range(0..tissue_px.len())];
                    let d = mask.downsample();
                    let cx = (px as f64 + rng.gen::<f64>()) * d;
                    let cy = (py as f64 + rng.gen::<f64>()) * d;
                    let x = (cx - fw / 2.0).clamp(0.0, max_x).round() as u32;
                    let y = (cy - fh / 2.0).clamp(0.0, max_y).round() as u32;
                    if seen.insert((x, y)) {
                        out.extend(keep(x, y));
                    }
                }
                out
            }
        };
        Ok(Candidates { kept, inked: inked.get() })
    }
}

/// FNV-1a: a hash whose value never changes across Rust versions, so seeds stay reproducible.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// A slide's tissue grid at a patch geometry: the level-0 corners of the non-overlapping
/// patches whose footprint holds at least `min_tissue` tissue, row by row (the order CLAM
/// writes `coords` in), and the pyramid level they are read from.
#[derive(Debug, Clone, PartialEq)]
pub struct TissueGrid {
    /// Level-0 top-left corners, row by row.
    pub corners: Vec<(u32, u32)>,
    /// The level patches of this geometry are resampled from.
    pub level: u32,
}

impl TissueGrid {
    /// Finds the tissue of `slide` (default parameters; only inside `roi` when given) and lays the
    /// grid over it.
    pub fn of(
        slide: &crate::Slide,
        geometry: &crate::PatchGeometry,
        min_tissue: f64,
        roi: Option<&crate::Roi>,
    ) -> Result<Self> {
        let mut tissue = TissueMask::detect(slide, &crate::TissueParams::default())?;
        if let Some(roi) = roi {
            tissue = tissue.within(roi);
        }
        let footprint = slide.footprint(geometry);
        let sampler = Sampler { sampling: Sampling::Grid, min_tissue, seed: 0 };
        let mut grid = sampler.candidates("", slide.dimensions(), footprint, &tissue, None)?.kept;
        grid.sort_by_key(|c| (c.y, c.x));
        Ok(Self { corners: grid.iter().map(|c| (c.x, c.y)).collect(), level: Self::level(slide, geometry) })
    }

    /// The level patches of `geometry` are resampled from (the one just finer than its µm/px).
    pub fn level(slide: &crate::Slide, geometry: &crate::PatchGeometry) -> u32 {
        let footprint = slide.footprint(geometry);
        slide.level_for_downsample(footprint.0.min(footprint.1) / geometry.size as f64)
    }
}
