//! `patchtcga bench slide-patches`: the reading path of `embed --slides` alone (tissue grid,
//! reading, resampling, normalising into batches), no network.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use patchtcga_loader::slides::{SlideBatches, SlideEvent, SlideJob, SlideReading};

use super::peak_rss_mib;

/// Options of `patchtcga bench slide-patches`.
#[derive(Args)]
pub struct SlidePatchArgs {
    /// A slide list (CSV with a `slide` column), as `embed --slides` takes.
    #[arg(long)]
    pub slides: PathBuf,
    #[command(flatten)]
    pub reading: SlideReading,
}

/// Reads every slide's tissue-grid patches into normalised batches as `embed --slides` does and
/// prints patches/s and peak memory; the values are summed so no read can be skipped.
pub fn bench_slide_patches(a: SlidePatchArgs) -> Result<()> {
    let jobs: Vec<SlideJob> = patchtcga_dataset::read_slides_csv(&a.slides)?
        .into_iter()
        .map(|r| SlideJob { path: r.slide, corners: None })
        .collect();
    let slides = jobs.len();
    let config = a.reading.config([0.5; 3], [0.25; 3]);
    let t0 = std::time::Instant::now();
    let (mut patches, mut sum) = (0usize, 0f64);
    for event in SlideBatches::start(jobs, config)? {
        match event {
            SlideEvent::Batch { values, rows } => {
                patches += rows.iter().map(|r| r.1).sum::<usize>();
                sum += values.iter().step_by(97).map(|&v| v as f64).sum::<f64>();
            }
            SlideEvent::Failed { error, .. } => return Err(error.into()),
            SlideEvent::Begin { .. } | SlideEvent::End { .. } => {}
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "patchtcga: {patches} patches of {slides} slide(s) in {secs:.2} s: {:.1} patches/s with {} thread(s), \
         peak memory {:.0} MiB (checksum {sum:.1})",
        patches as f64 / secs,
        a.reading.workers,
        peak_rss_mib()
    );
    Ok(())
}
