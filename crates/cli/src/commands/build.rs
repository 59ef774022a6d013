//! `patchtcga build`: tile slides into one of the release's dataset layouts.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use patchtcga_dataset::{BuildOptions, ImageFormat, Task};
use patchtcga_launch::Node;
use patchtcga_slide::{AnnotationGroups, GeometryFlags, QualityCheck, Sampler, SlideOptions, TissueParams};

#[derive(Subcommand)]
pub enum BuildDataset {
    /// Organ-labelled patches: <out>/<organ>/<slide>_<x>_<y>.jpg. CSV columns: slide, organ [, id].
    Ptcga200 {
        #[command(flatten)]
        common: BuildArgs,
    },
    /// Tumour/normal patches from Camelyon16: <out>/{train,val,test}/{normal,tumor}/<case>/….
    /// CSV columns: slide, annotation (ASAP XML; empty for normal slides) [, case, split, id].
    Pcam200 {
        #[command(flatten)]
        common: BuildArgs,
        /// A patch is tumour when this fraction of its centre region lies in tumour polygons.
        #[arg(long, default_value_t = 0.5)]
        tumor_threshold: f64,
        /// Side of the centre region, as a fraction of the patch side.
        #[arg(long, default_value_t = 0.5)]
        centre: f64,
        #[command(flatten)]
        groups: AnnotationGroups,
    },
    /// Patches with 6-class label masks from PANDA: <out>/{train,val,test}/<grade>/<case>/…
    /// and <stem>_mask.png beside each. CSV columns: slide, mask, data_provider, isup_grade
    /// [, gleason_score, case, split, id].
    Segpanda200 {
        #[command(flatten)]
        common: BuildArgs,
    },
}

#[derive(Args)]
pub struct BuildArgs {
    /// CSV of slides (header; paths relative to the CSV or absolute).
    #[arg(long)]
    slides: PathBuf,
    /// Dataset folder to write (re-running resumes it).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    geometry: GeometryFlags,
    /// Most patches per slide (per class for pcam200); default: every accepted position.
    #[arg(long)]
    per_slide: Option<usize>,
    #[command(flatten)]
    sampler: Sampler,
    /// Worker threads (default: all cores, shared among this node's processes).
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    launch: Node,
    #[command(flatten)]
    tissue: TissueParams,
    #[command(flatten)]
    quality: QualityCheck,
    #[command(flatten)]
    open: SlideOptions,
    /// Patch image format.
    #[arg(long, value_enum, default_value_t = FormatArg::Jpg)]
    format: FormatArg,
    /// JPEG quality (1-100).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    jpeg_quality: u8,
    /// Fraction of cases sent to val when the CSV has no split column (pcam200, segpanda200).
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Fraction of cases sent to test when the CSV has no split column.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Jpg,
    Png,
}

/// Tiles the slides of the list into the layout `dataset` names, and reports.
pub fn build(dataset: BuildDataset) -> Result<()> {
    let (task, a) = match dataset {
        BuildDataset::Ptcga200 { common } => (Task::Ptcga200, common),
        BuildDataset::Pcam200 { common, tumor_threshold, centre, groups } => {
            (Task::Pcam200 { groups, tumor_threshold, centre }, common)
        }
        BuildDataset::Segpanda200 { common } => (Task::SegPanda200, common),
    };
    let Some(share) = a.launch.share()? else {
        println!("{} rank(s) done: {}", a.launch.nproc_per_node, a.out.display());
        return Ok(());
    };
    // A rank started with others on this node takes its part of the cores (OMP_NUM_THREADS).
    let threads = std::env::var("OMP_NUM_THREADS").ok().and_then(|t| t.parse().ok());
    super::workers(a.workers.or(threads.filter(|_| share.world > 1)))?;
    let opts = BuildOptions {
        geometry: a.geometry.resolve()?,
        format: match a.format {
            FormatArg::Jpg => ImageFormat::Jpeg { quality: a.jpeg_quality },
            FormatArg::Png => ImageFormat::Png,
        },
        out: a.out,
        tissue: a.tissue,
        quality: a.quality,
        sampler: a.sampler,
        per_slide: a.per_slide,
        slide: a.open,
        val_fraction: a.val_fraction,
        test_fraction: a.test_fraction,
        share,
    };
    let rows = patchtcga_dataset::read_slides_csv(&a.slides)?;
    let rank = if share.world > 1 { format!("rank {} of {}: ", share.rank, share.world) } else { String::new() };
    let g = opts.geometry;
    println!(
        "{rank}{}: {} slide(s) → {} ({} px at {} µm/px, {:.1} µm field)",
        task.kind().name(),
        rows.len(),
        opts.out.display(),
        g.size,
        g.mpp,
        g.field_um()
    );
    let report = patchtcga_dataset::build(&task, &rows, &opts, &super::bar("slides"))?;
    if report.renamed > 0 {
        println!(
            "renamed {} patch(es) of an earlier build to names the release's loaders list (slide ids without '.'); \
             split files drawn before name the old files: draw them again with `patchtcga split`",
            report.renamed
        );
    }
    println!("{rank}{}", report.summary(&opts.out));
    for f in &report.failures {
        eprintln!("  {f}");
    }
    if !report.failures.is_empty() {
        bail!(
            "{} of {} slide(s) failed (the others are complete; re-run to retry only the failed ones)",
            report.failures.len(),
            report.slides
        );
    }
    Ok(())
}
