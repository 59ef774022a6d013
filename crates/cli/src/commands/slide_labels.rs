//! `patchtcga slide-labels`: a slide-level benchmark's slide list and labels from its download.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use patchtcga_dataset::slide_tasks::{count_by_split, write_layout, SlideBenchmark};

/// Options of `patchtcga slide-labels`.
#[derive(Args)]
pub struct SlideLabelsArgs {
    /// camelyon16 (normal / tumor, the official test set held out) or panda (ISUP grade 0–5).
    #[arg(value_enum)]
    pub benchmark: SlideBenchmark,
    /// The benchmark's folder as downloaded (CAMELYON16/ with training/ and testing/, or PANDA's
    /// folder with train.csv and train_images/).
    #[arg(long)]
    pub root: PathBuf,
    /// Where slides.csv (for `embed --slides`) and labels.csv (for `mil train`) go.
    #[arg(long)]
    pub out: PathBuf,
}

/// Lists the benchmark's slides and writes the two files.
pub fn slide_labels(a: SlideLabelsArgs) -> Result<()> {
    let slides = a.benchmark.slides(&a.root)?;
    write_layout(&slides, &a.out)?;
    println!("{} slides ({}) → {}/slides.csv, labels.csv", slides.len(), count_by_split(&slides), a.out.display());
    Ok(())
}
