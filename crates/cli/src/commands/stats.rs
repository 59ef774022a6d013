//! `patchtcga stats`: counts, channel statistics and a mosaic of a dataset.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use patchtcga_dataset::{stats, Index};

use super::Layout;

/// Options of `patchtcga stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// Dataset root.
    pub dataset: PathBuf,
    /// Layout (default: detected).
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
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
    let index = Index::scan(&a.dataset, a.layout.map(Layout::kind))?;
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
    println!("{:<20} {:>5} {:>10} {:>8}", "class", "id", "patches", "slides");
    for c in &s.classes {
        println!("{:<20} {:>5} {:>10} {:>8}", c.name, c.label, c.patches, c.slides);
    }
    println!("pixels of {} image(s), RGB in [0, 1]:", s.measured);
    println!("image_stats mean = ({:.4}, {:.4}, {:.4})", s.mean[0], s.mean[1], s.mean[2]);
    println!("image_stats std  = ({:.4}, {:.4}, {:.4})", s.std[0], s.std[1], s.std[2]);
    if let Some(m) = s.mask_pixels {
        let total = m.iter().sum::<u64>().max(1) as f64;
        for (k, n) in m.iter().enumerate() {
            println!("mask class {k} ({}): {:.2}%", patchtcga_slide::SEGPANDA_CLASSES[k], 100.0 * *n as f64 / total);
        }
    }
    if let Some(path) = &a.mosaic {
        let (img, rows) = stats::mosaic(&index, a.per_class, 128, a.seed)?;
        img.save(path).with_context(|| format!("writing {}", path.display()))?;
        println!("mosaic {} (rows: {})", path.display(), rows.join(", "));
    }
    Ok(())
}
