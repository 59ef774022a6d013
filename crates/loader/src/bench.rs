//! How fast the loader serves a dataset with a view recipe (`patchtcga bench loader`), timed as
//! `bench/loader_torchvision.py` times torchvision's loader; and how fast slides' patches are read
//! into batches (`patchtcga bench slide-patches`).

use std::path::PathBuf;

use patchtcga_augment::{Preset, Recipe};
use patchtcga_dataset::Index;

use crate::slides::{SlideBatches, SlideEvent, SlideJob, SlideReading};
use crate::{samples, Loader, LoaderConfig, LoaderError, Result};

/// A loader benchmark: which data, which recipe, how many workers, for how long.
#[derive(Debug, Clone, clap::Args)]
pub struct LoaderBench {
    /// Dataset root (any of the release's layouts).
    #[arg(long)]
    pub dataset: PathBuf,
    /// View recipe.
    #[arg(long, value_enum, default_value_t = Preset::SimClr)]
    pub recipe: Preset,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Side of the (global) views.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// DINO local views.
    #[arg(long, default_value_t = 10)]
    pub local_crops: usize,
}

/// What a loader benchmark measured.
#[derive(Debug, Clone)]
pub struct LoaderTiming {
    pub recipe: Preset,
    /// Views per image.
    pub views: usize,
    pub workers: usize,
    pub images: usize,
    pub seconds: f64,
}

/// `simclr: 1280 images (2 views each) in 10.02 s with 2 worker(s): 127.7 images/s`.
impl std::fmt::Display for LoaderTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{}: {} images ({} views each) in {:.2} s with {} worker(s): {:.1} images/s",
            self.recipe,
            self.images,
            self.views,
            self.seconds,
            self.workers,
            self.images as f64 / self.seconds
        )
    }
}

impl LoaderBench {
    /// Shuffled batches of the whole dataset for about `seconds`.
    pub fn run(&self) -> Result<LoaderTiming> {
        let config_error = |e: &dyn std::fmt::Display| LoaderError::Config(e.to_string());
        let index = Index::scan(&self.dataset, None).map_err(|e| config_error(&e))?;
        let recipe = Recipe::preset(self.recipe, self.size, self.local_crops);
        let config = LoaderConfig {
            batch_size: self.batch_size,
            shuffle: true,
            workers: self.workers,
            ..LoaderConfig::default()
        };
        let views = recipe.views.len();
        let loader = Loader::new(samples(&index, None)?, recipe, config)?;
        let (images, seconds) = loader.throughput(self.seconds)?;
        Ok(LoaderTiming { recipe: self.recipe, views, workers: self.workers, images, seconds })
    }
}

/// Options of `patchtcga bench slide-patches`: the reading path of `embed --slides` alone (tissue
/// grid, reading, resampling, normalising into batches), no network.
#[derive(Debug, Clone, clap::Args)]
pub struct SlidePatchBench {
    /// A slide list (CSV with a `slide` column), as `embed --slides` takes.
    #[arg(long)]
    pub slides: PathBuf,
    #[command(flatten)]
    pub reading: SlideReading,
}

/// What a slide-reading benchmark measured.
#[derive(Debug, Clone)]
pub struct SlidePatchTiming {
    pub patches: usize,
    pub slides: usize,
    pub seconds: f64,
    pub workers: usize,
    /// A sum over the values read, so no read can be skipped.
    pub checksum: f64,
}

impl SlidePatchBench {
    /// Reads every slide's tissue-grid patches into normalised batches as `embed --slides` does.
    pub fn run(&self) -> Result<SlidePatchTiming> {
        let rows = patchtcga_dataset::read_slides_csv(&self.slides).map_err(|e| LoaderError::Config(e.to_string()))?;
        let jobs: Vec<SlideJob> =
            rows.into_iter().map(|r| SlideJob { path: r.slide, corners: None, roi: r.roi, mpp: r.mpp }).collect();
        let slides = jobs.len();
        let config = self.reading.config([0.5; 3], [0.25; 3]);
        let t0 = std::time::Instant::now();
        let (mut patches, mut checksum) = (0usize, 0f64);
        for event in SlideBatches::start(jobs, config)? {
            match event {
                SlideEvent::Batch { values, rows } => {
                    patches += rows.iter().map(|r| r.1).sum::<usize>();
                    checksum += values.iter().step_by(97).map(|&v| v as f64).sum::<f64>();
                }
                SlideEvent::Failed { error, .. } => return Err(LoaderError::Config(error.to_string())),
                SlideEvent::Begin { .. } | SlideEvent::End { .. } => {}
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        Ok(SlidePatchTiming { patches, slides, seconds, workers: self.reading.workers, checksum })
    }
}

/// `patchtcga: 900 patches of 4 slide(s) in 1.00 s: 900.0 patches/s with 2 thread(s) (checksum 1.0)`.
impl std::fmt::Display for SlidePatchTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "patchtcga: {} patches of {} slide(s) in {:.2} s: {:.1} patches/s with {} thread(s) (checksum {:.1})",
            self.patches,
            self.slides,
            self.seconds,
            self.patches as f64 / self.seconds,
            self.workers,
            self.checksum
        )
    }
}
