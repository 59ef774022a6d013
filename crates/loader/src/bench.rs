//! How fast the loader serves a dataset with a view recipe (`patchtcga bench loader`), timed as
//! `bench/loader_torchvision.py` times torchvision's loader.

use std::path::PathBuf;

use patchtcga_augment::Recipe;
use patchtcga_dataset::Index;

use crate::{samples, Loader, LoaderConfig, LoaderError, Result};

/// A loader benchmark: which data, which recipe, how many workers, for how long.
#[derive(Debug, Clone, clap::Args)]
pub struct LoaderBench {
    /// Dataset root (any of the release's layouts).
    #[arg(long)]
    pub dataset: PathBuf,
    /// View recipe: supervised, eval, simclr, byol, dino, mae, segmentation.
    #[arg(long, default_value = "simclr")]
    pub recipe: String,
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
    pub recipe: String,
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
        let recipe = Recipe::preset(&self.recipe, self.size, self.local_crops).map_err(|e| config_error(&e))?;
        let config = LoaderConfig {
            batch_size: self.batch_size,
            shuffle: true,
            workers: self.workers,
            ..LoaderConfig::default()
        };
        let (name, views) = (recipe.name.clone(), recipe.views.len());
        let loader = Loader::new(samples(&index, None)?, recipe, config)?;
        let (images, seconds) = loader.throughput(self.seconds)?;
        Ok(LoaderTiming { recipe: name, views, workers: self.workers, images, seconds })
    }
}
