//! `patchtcga slide-labels`: a slide-level benchmark's slide list and labels from its download.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use patchtcga_dataset::slide_tasks::{write_layout, SlideBenchmark};

/// Options of `patchtcga slide-labels`.
#[derive(Args)]
pub struct SlideLabelsArgs {
    /// camelyon16 (normal / tumor, the official test set held out) or panda (ISUP grade 0–5).
    #[arg(value_enum)]
    pub benchmark: BenchmarkArg,
    /// The benchmark's folder as downloaded (CAMELYON16/ with training/ and testing/, or PANDA's
    /// folder with train.csv and train_images/).
    #[arg(long)]
    pub root: PathBuf,
    /// Where slides.csv (for `embed --slides`) and labels.csv (for `mil train`) go.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BenchmarkArg {
    Camelyon16,
    Panda,
}

/// Lists the benchmark's slides and writes the two files.
pub fn slide_labels(a: SlideLabelsArgs) -> Result<()> {
    let benchmark = match a.benchmark {
        BenchmarkArg::Camelyon16 => SlideBenchmark::Camelyon16,
        BenchmarkArg::Panda => SlideBenchmark::Panda,
    };
    let slides = benchmark.slides(&a.root)?;
    write_layout(&slides, &a.out)?;
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for s in &slides {
        *counts.entry((if s.split.is_empty() { "cross-validation" } else { "test" }, &s.label)).or_default() += 1;
    }
    let shown: Vec<String> = counts.iter().map(|((split, label), n)| format!("{split} {label}: {n}")).collect();
    println!("{} slides ({}) → {}/slides.csv, labels.csv", slides.len(), shown.join(", "), a.out.display());
    Ok(())
}
