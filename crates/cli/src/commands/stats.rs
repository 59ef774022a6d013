//! `patchtcga stats`: counts, channel statistics and a mosaic of a dataset.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use patchtcga_dataset::{stats, Index};

use patchtcga_dataset::DatasetKind;

/// Options of `patchtcga stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// Dataset root.
    pub dataset: PathBuf,
    /// Layout (default: detected).
    #[arg(long, value_enum)]
    pub layout: Option<DatasetKind>,
    /// Measure pixels on this many random images instead of all.
    #[arg(long)]
    pub sample: Option<usize>,
    /// Write a mosaic PNG of sample patches, one row per class.
    #[arg(long)]
    pub mosaic: Option<PathBuf>,
    /// Patches per class in the mosaic.
    #[arg(long, default_value_t = 8)]
    pub per_class: usize,
    /// Seed for the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// Prints patch and slide counts per class, `image_stats`, mask class frequencies; writes the
/// mosaic.
pub fn stats(a: StatsArgs) -> Result<()> {
    super::workers(a.workers)?;
    let index = Index::scan(&a.dataset, a.layout)?;
    if !index.problems.is_empty() {
        eprintln!(
            "note: {} image file(s) have names the release's loaders skip or misread; `patchtcga verify-layout {}` \
             lists them",
            index.problems.len(),
            a.dataset.display()
        );
    }
    let s = stats::compute(&index, a.sample, a.seed, &super::bar("images"))?;
    println!(
        "{} dataset at {}: {} patches from {} slides",
        index.kind.name(),
        a.dataset.display(),
        s.patches,
        s.slides
    );
    println!("{s}");
    if let Some(path) = &a.mosaic {
        let (img, rows) = stats::mosaic(&index, a.per_class, 128, a.seed)?;
        img.save(path).with_context(|| format!("writing {}", path.display()))?;
        println!("mosaic {} (rows: {})", path.display(), rows.join(", "));
    }
    Ok(())
}
