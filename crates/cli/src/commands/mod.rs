//! The commands of `patchtcga`, one file each, and what they share: worker threads, progress
//! bars, the dataset layout option.

pub mod backbone;
pub mod bench;
pub mod build;
pub mod embed;
pub mod export;
pub mod extract;
pub mod finetune;
pub mod infer;
pub mod info;
pub mod pretrain;
pub mod probe;
pub mod report;
pub mod run;
pub mod split;
pub mod stats;
pub mod verify;
pub mod verify_layout;

use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use patchtcga_dataset::DatasetKind;

#[derive(Clone, Copy, ValueEnum)]
pub enum Layout {
    Ptcga200,
    Pcam200,
    Segpanda200,
}

impl Layout {
    fn kind(self) -> DatasetKind {
        match self {
            Layout::Ptcga200 => DatasetKind::Ptcga200,
            Layout::Pcam200 => DatasetKind::Pcam200,
            Layout::Segpanda200 => DatasetKind::SegPanda200,
        }
    }
}

pub fn workers(n: Option<usize>) -> Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global().context("starting worker threads")?;
    }
    Ok(())
}

pub fn bar(unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} {{msg}} (eta {{eta}})");
    pb.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    pb
}

pub fn bytes_bar() -> ProgressBar {
    let pb = ProgressBar::new(0);
    let t = "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {bytes_per_sec} (eta {eta})";
    pb.set_style(ProgressStyle::with_template(t).expect("valid template"));
    pb
}

/// Writes `path` atomically: `write` makes the file at a temporary path beside it, which is then
/// renamed over it.
pub fn write_file(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    patchtcga_atomic::write_with(path, write, anyhow::Error::from)
        .with_context(|| format!("{}: cannot write", path.display()))
}
