//! `patchtcga build`: tile slides into one of the release's dataset layouts.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use patchtcga_dataset::{BuildOptions, ImageFormat, Share, Task};
use patchtcga_slide::{AnnotationGroups, PatchGeometry, QualityCheck, Sampler, Sampling, TissueParams};

use super::{LaunchArgs, SlideArgs};

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
        /// Annotation groups that mark tumour (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "Tumor,_0,_1,metastases")]
        tumor_groups: Vec<String>,
        /// Annotation groups cut out of tumour (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "_2,Exclusion")]
        exclusion_groups: Vec<String>,
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
    pub slides: PathBuf,
    /// Dataset folder to write (re-running resumes it).
    #[arg(long)]
    pub out: PathBuf,
    /// Target resolution, µm per pixel.
    #[arg(long)]
    pub mpp: Option<f64>,
    /// Patch side in pixels.
    #[arg(long)]
    pub size: Option<u32>,
    /// Field of view in µm (with --mpp or --size, fixes the other).
    #[arg(long)]
    pub field_um: Option<f64>,
    /// Most patches per slide (per class for pcam200); default: every accepted position.
    #[arg(long)]
    pub per_slide: Option<usize>,
    /// Candidate positions: non-overlapping grid cells, or random positions over tissue.
    #[arg(long, value_enum, default_value_t = SamplingArg::Grid)]
    pub sampling: SamplingArg,
    /// Seed for sampling and split assignment.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores, shared among this node's processes).
    #[arg(long)]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub launch: LaunchArgs,
    /// Minimum tissue fraction of a patch's footprint (by the tissue mask).
    #[arg(long, default_value_t = 0.5)]
    pub min_tissue: f64,
    /// Resolution of the tissue mask, µm per pixel.
    #[arg(long, default_value_t = 8.0)]
    pub tissue_mpp: f64,
    /// Fixed saturation threshold (0-255) instead of Otsu's.
    #[arg(long)]
    pub saturation_threshold: Option<u8>,
    /// Reject patches with more than this fraction of glass/black pixels.
    #[arg(long, default_value_t = 0.5)]
    pub max_background: f64,
    /// Reject patches whose variance of the Laplacian is below this (out of focus).
    #[arg(long, default_value_t = 15.0)]
    pub min_sharpness: f64,
    #[command(flatten)]
    pub open: SlideArgs,
    /// Patch image format.
    #[arg(long, value_enum, default_value_t = FormatArg::Jpg)]
    pub format: FormatArg,
    /// JPEG quality (1-100).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
    /// Fraction of cases sent to val when the CSV has no split column (pcam200, segpanda200).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Fraction of cases sent to test when the CSV has no split column.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SamplingArg {
    Grid,
    Random,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Jpg,
    Png,
}

/// Tiles the slides of the list into the layout `dataset` names, and reports.
pub fn build(dataset: BuildDataset) -> Result<()> {
    let (task, a) = match dataset {
        BuildDataset::Ptcga200 { common } => (Task::Ptcga200, common),
        BuildDataset::Pcam200 { common, tumor_threshold, centre, tumor_groups, exclusion_groups } => {
            if !(0.0..=1.0).contains(&tumor_threshold) || centre <= 0.0 || centre > 1.0 {
                bail!("--tumor-threshold must be in [0, 1] and --centre in (0, 1]");
            }
            let groups = AnnotationGroups { tumor: tumor_groups, exclusion: exclusion_groups };
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
    let mut opts = options(&a)?;
    opts.share = share;
    let rows = patchtcga_dataset::read_slides_csv(&a.slides)?;
    let rank = if share.world > 1 { format!("rank {} of {}: ", share.rank, share.world) } else { String::new() };
    println!(
        "{rank}{}: {} slide(s) → {} ({} px at {} µm/px, {:.1} µm field)",
        task.kind().name(),
        rows.len(),
        a.out.display(),
        opts.geometry.size,
        opts.geometry.mpp,
        opts.geometry.field_um()
    );
    let report = patchtcga_dataset::build(&task, &rows, &opts, &super::bar("slides"))?;
    if report.renamed > 0 {
        println!(
            "renamed {} patch(es) of an earlier build to names the release's loaders list (slide ids without '.'); \
             split files drawn before name the old files: draw them again with `patchtcga split`",
            report.renamed
        );
    }
    let counts = format!(
        "{rank}{} slide(s): {} tiled, {} already complete, {} failed; {} new patches",
        report.slides,
        report.built,
        report.skipped,
        report.failures.len(),
        report.new_patches
    );
    if report.pending == 0 {
        println!("{counts}, {} in {}", report.total_patches, a.out.join("manifest.csv").display());
    } else {
        println!(
            "{counts}; {} slide(s) of other ranks still pending: the rank that settles the last writes manifest.csv and MD5SUMS",
            report.pending
        );
    }
    if !report.failures.is_empty() {
        for f in &report.failures {
            eprintln!("  {f}");
        }
        bail!(
            "{} of {} slide(s) failed (the others are complete; re-run to retry only the failed ones)",
            report.failures.len(),
            report.slides
        );
    }
    Ok(())
}

/// The builder's options from the flags, each fraction checked.
fn options(a: &BuildArgs) -> Result<BuildOptions> {
    for (flag, v) in [
        ("--min-tissue", a.min_tissue),
        ("--max-background", a.max_background),
        ("--val-fraction", a.val_fraction),
        ("--test-fraction", a.test_fraction),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{flag} must be in [0, 1], got {v}");
        }
    }
    Ok(BuildOptions {
        out: a.out.clone(),
        geometry: PatchGeometry::resolve(a.mpp, a.size, a.field_um)?,
        tissue: TissueParams {
            mask_mpp: a.tissue_mpp,
            saturation_threshold: a.saturation_threshold,
            ..TissueParams::default()
        },
        quality: QualityCheck { max_background: a.max_background, min_sharpness: a.min_sharpness },
        sampler: Sampler {
            sampling: match a.sampling {
                SamplingArg::Grid => Sampling::Grid,
                SamplingArg::Random => Sampling::Random,
            },
            min_tissue: a.min_tissue,
            seed: a.seed,
        },
        per_slide: a.per_slide,
        format: match a.format {
            FormatArg::Jpg => ImageFormat::Jpeg { quality: a.jpeg_quality },
            FormatArg::Png => ImageFormat::Png,
        },
        slide: a.open.options(),
        val_fraction: a.val_fraction,
        test_fraction: a.test_fraction,
        share: Share::default(),
    })
}
