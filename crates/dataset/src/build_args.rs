//! The flags of `patchtcga build`: which layout, from which slides, how; turned into the build's
//! task and options.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use patchtcga_launch::{Node, Share};
use patchtcga_slide::{AnnotationGroups, GeometryFlags, QualityCheck, Sampler, SlideOptions, TissueParams};

use patchtcga_augment::StainFlags;

use crate::build::{BuildOptions, ImageFormat, Task};
use crate::{DatasetError, Result};

/// `patchtcga build <dataset>`: the layout to write and its own flags.
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

impl BuildDataset {
    /// The task this layout builds, and the flags every layout shares.
    pub fn task(self) -> (Task, BuildArgs) {
        match self {
            Self::Ptcga200 { common } => (Task::Ptcga200, common),
            Self::Pcam200 { common, tumor_threshold, centre, groups } => {
                (Task::Pcam200 { groups, tumor_threshold, centre }, common)
            }
            Self::Segpanda200 { common } => (Task::SegPanda200, common),
        }
    }
}

/// The flags every layout's build takes.
#[derive(Args)]
pub struct BuildArgs {
    /// CSV of slides (header; paths relative to the CSV or absolute).
    #[arg(long)]
    pub slides: PathBuf,
    /// Dataset folder to write (re-running resumes it).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub geometry: GeometryFlags,
    /// Most patches per slide (per class for pcam200); default: every accepted position.
    #[arg(long)]
    pub per_slide: Option<usize>,
    #[command(flatten)]
    pub sampler: Sampler,
    /// Worker threads (default: all cores, shared among this node's processes).
    #[arg(long)]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub launch: Node,
    #[command(flatten)]
    pub tissue: TissueParams,
    #[command(flatten)]
    pub quality: QualityCheck,
    #[command(flatten)]
    pub open: SlideOptions,
    /// Patch image format.
    #[arg(long, value_enum, default_value_t = FormatName::Jpg)]
    pub format: FormatName,
    /// JPEG quality (1-100).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
    /// Fraction of cases sent to val when the CSV has no split column (pcam200, segpanda200).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Fraction of cases sent to test when the CSV has no split column.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    #[command(flatten)]
    pub stain: StainFlags,
}

/// Patch image formats by name.
#[derive(Clone, Copy, ValueEnum)]
pub enum FormatName {
    Jpg,
    Png,
}

impl BuildArgs {
    /// Worker threads for this process: `--workers`, or its part of the node's cores when
    /// started with others (`OMP_NUM_THREADS`, as the launcher sets it); `None`: all cores.
    pub fn threads(&self, share: Share) -> Option<usize> {
        let given = std::env::var("OMP_NUM_THREADS").ok().and_then(|t| t.parse().ok());
        self.workers.or(given.filter(|_| share.world > 1))
    }

    /// The build's options for this process's `share` of the slide list.
    pub fn options(self, share: Share) -> Result<BuildOptions> {
        let stain = self.stain.fitted().map_err(|(target, cause)| DatasetError::invalid(target, cause))?;
        Ok(BuildOptions {
            stain,
            geometry: self.geometry.resolve()?,
            format: match self.format {
                FormatName::Jpg => ImageFormat::Jpeg { quality: self.jpeg_quality },
                FormatName::Png => ImageFormat::Png,
            },
            out: self.out,
            tissue: self.tissue,
            quality: self.quality,
            sampler: self.sampler,
            per_slide: self.per_slide,
            slide: self.open,
            val_fraction: self.val_fraction,
            test_fraction: self.test_fraction,
            share,
        })
    }
}
