//! What `patchtcga info` says of a slide (size, levels, resolution, reader, tissue) and how fast
//! `patchtcga bench regions` finds its reader serving regions.

use std::fmt::{self, Write};
use std::path::PathBuf;

use clap::Args;

use crate::{Ink, PatchGeometry, Result, Slide, SlideError, SlideOptions, TissueMask, TissueParams};

/// Options of `patchtcga info`.
#[derive(Args)]
pub struct InfoArgs {
    /// Slide file.
    pub slide: PathBuf,
    #[command(flatten)]
    pub open: SlideOptions,
}

/// What the reader and the tiler make of a slide, as lines of text.
pub struct SlideInfo(String);

impl InfoArgs {
    /// Opens the slide and describes it: size, µm/px and its source, reader, levels, tissue,
    /// and the level a default patch reads.
    pub fn run(&self) -> Result<SlideInfo> {
        let s = Slide::open_unmeasured(&self.slide, &self.open)?;
        let (w, h) = s.dimensions();
        let mut t = String::new();
        let mpp = match s.measured_mpp() {
            Ok(m) => format!("{:.4} × {:.4} µm/px (from: {})", m.x, m.y, m.source),
            Err(_) => "no µm/px in the file".into(),
        };
        let _ = writeln!(t, "{}: {w} × {h} px, {mpp}", self.slide.display());
        let _ = writeln!(t, "read by: {}", s.served_by());
        if let Some((study, series)) = s.dicom_uids() {
            let _ = writeln!(t, "DICOM study {study}, series {series}");
        }
        for l in 0..s.level_count() {
            let (lw, lh) = s.level_dimensions(l);
            let _ = writeln!(t, "  level {l}: {lw} × {lh} px, downsample {:.3}", s.level_downsample(l));
        }
        let Ok(mpp) = s.measured_mpp() else {
            let _ = write!(
                t,
                "tissue and patches need µm/px: give it with --mpp-override, or in an `mpp` column of the slide list"
            );
            return Ok(SlideInfo(t));
        };
        let tissue = TissueMask::detect(&s, &TissueParams::default())?;
        let (fraction, threshold) = (100.0 * tissue.tissue_fraction(), tissue.threshold());
        let _ =
            writeln!(t, "tissue: {fraction:.1}% of the slide (saturation threshold {threshold}, pen ink taken out)");
        let _ = writeln!(t, "pen ink: {}", ink_summary(&tissue, mpp));
        let g = PatchGeometry::default();
        let (fw, _) = s.footprint(&g);
        let level = s.level_for_downsample(fw / g.size as f64);
        let _ = write!(t, "a {} px patch at {} µm/px covers {fw:.1} level-0 px and reads level {level}", g.size, g.mpp);
        Ok(SlideInfo(t))
    }
}

/// Ink area by colour in mm², or that there is none.
fn ink_summary(tissue: &TissueMask, mpp: crate::Mpp) -> String {
    let mm2 = tissue.pixel_area_um2(mpp) / 1e6;
    let found: Vec<String> = Ink::ALL
        .iter()
        .zip(tissue.ink().pixels_by_colour())
        .filter(|(_, n)| *n > 0)
        .map(|(ink, n)| format!("{} {:.3} mm²", ink.name().to_lowercase(), n as f64 * mm2))
        .collect();
    if found.is_empty() {
        "none found".into()
    } else {
        format!("{} ({:.1}% of the slide with its rim)", found.join(", "), 100.0 * tissue.ink_area_fraction())
    }
}

impl fmt::Display for SlideInfo {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Options of `patchtcga bench regions`.
#[derive(Args)]
pub struct RegionBench {
    /// Slide file.
    pub slide: PathBuf,
    #[command(flatten)]
    pub open: SlideOptions,
    /// Region side in level-0 pixels (800: a 512 px patch at 0.39 µm/px from a 40× scan).
    #[arg(long, default_value_t = 800)]
    pub size: u32,
    /// Regions to read (the grid, row by row, repeated if the slide holds fewer).
    #[arg(long, default_value_t = 200)]
    pub count: usize,
}

/// How fast regions were read: [`RegionBench::run`].
pub struct RegionTiming {
    reader: String,
    count: usize,
    size: u32,
    seconds: f64,
    checksum: u64,
}

impl RegionBench {
    /// Reads `count` regions on the slide's grid in this thread; the pixels are summed so no read
    /// can be skipped.
    pub fn run(&self) -> Result<RegionTiming> {
        let slide = Slide::open(&self.slide, &self.open)?;
        let ((w, h), side) = (slide.dimensions(), self.size);
        let grid: Vec<(u32, u32)> =
            (0..h / side).flat_map(|j| (0..w / side).map(move |i| (i * side, j * side))).collect();
        if grid.is_empty() {
            return Err(SlideError::Parameter(format!("{}: smaller than one {side} px region", self.slide.display())));
        }
        let t0 = std::time::Instant::now();
        let mut checksum = 0u64;
        for &(x, y) in grid.iter().cycle().take(self.count) {
            let region = slide.read_rgb(0, x, y, side, side)?;
            checksum += region.as_raw().iter().step_by(97).map(|&v| v as u64).sum::<u64>();
        }
        let seconds = t0.elapsed().as_secs_f64();
        Ok(RegionTiming { reader: slide.served_by().to_string(), count: self.count, size: side, seconds, checksum })
    }
}

/// `patchtcga (native): 200 regions of 800 px in 0.8 s: 250.0 regions/s (checksum 123)`.
impl fmt::Display for RegionTiming {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "patchtcga ({}): {} regions of {} px in {:.3} s: {:.1} regions/s (checksum {})",
            self.reader,
            self.count,
            self.size,
            self.seconds,
            self.count as f64 / self.seconds,
            self.checksum
        )
    }
}
