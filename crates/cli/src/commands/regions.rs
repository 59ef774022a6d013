//! `patchtcga bench regions`: how fast a reader serves square level-0 regions of a slide.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use patchtcga_slide::Slide;

use patchtcga_slide::SlideOptions;

use super::peak_rss_mib;

/// Options of `patchtcga bench regions`.
#[derive(Args)]
pub struct RegionArgs {
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

/// Reads `count` regions on the slide's grid and prints the rate; the pixels are summed so no
/// read can be skipped.
pub fn bench_regions(a: RegionArgs) -> Result<()> {
    let slide = Slide::open(&a.slide, &a.open)?;
    let (w, h) = slide.dimensions();
    let grid: Vec<(u32, u32)> =
        (0..h / a.size).flat_map(|j| (0..w / a.size).map(move |i| (i * a.size, j * a.size))).collect();
    anyhow::ensure!(!grid.is_empty(), "{}: smaller than one {} px region", a.slide.display(), a.size);
    let t0 = std::time::Instant::now();
    let mut sum = 0u64;
    for &(x, y) in grid.iter().cycle().take(a.count) {
        sum += slide.read_rgb(0, x, y, a.size, a.size)?.as_raw().iter().step_by(97).map(|&v| v as u64).sum::<u64>();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "patchtcga ({}): {} regions of {} px in {secs:.3} s: {:.1} regions/s, peak memory {:.0} MiB (checksum {sum})",
        slide.served_by(),
        a.count,
        a.size,
        a.count as f64 / secs,
        peak_rss_mib()
    );
    Ok(())
}
