//! `patchtcga bench slide-patches`: the reading path of `embed --slides` alone (tissue grid,
//! reading, resampling, normalising into batches), no network.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use patchtcga_loader::slides::{SlideBatchConfig, SlideBatches, SlideEvent, SlideJob};
use patchtcga_slide::PatchGeometry;

use super::{peak_rss_mib, SlideArgs};

/// Options of `patchtcga bench slide-patches`.
#[derive(Args)]
pub struct SlidePatchArgs {
    /// A slide list (CSV with a `slide` column), as `embed --slides` takes.
    #[arg(long)]
    pub slides: PathBuf,
    #[command(flatten)]
    pub open: SlideArgs,
    /// µm per pixel the patches are read at.
    #[arg(long, default_value_t = 0.5)]
    pub mpp: f64,
    /// Patch side in pixels.
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// Least tissue fraction of a patch's footprint.
    #[arg(long, default_value_t = 0.5)]
    pub min_tissue: f64,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Decoding threads.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
}

/// Reads every slide's tissue-grid patches into normalised batches as `embed --slides` does and
/// prints patches/s and peak memory; the values are summed so no read can be skipped.
pub fn bench_slide_patches(a: SlidePatchArgs) -> Result<()> {
    let jobs: Vec<SlideJob> = patchtcga_dataset::read_slides_csv(&a.slides)?
        .into_iter()
        .map(|r| SlideJob { path: r.slide, corners: None })
        .collect();
    let slides = jobs.len();
    let config = SlideBatchConfig {
        geometry: PatchGeometry { mpp: a.mpp, size: a.image_size },
        min_tissue: a.min_tissue,
        open: a.open.options(),
        mean: [0.5; 3],
        std: [0.25; 3],
        batch_size: a.batch_size,
        workers: a.workers,
        prefetch: 4,
    };
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
        a.workers,
        peak_rss_mib()
    );
    Ok(())
}
