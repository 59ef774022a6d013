//! `patchtcga`: build pathology patch datasets from whole-slide images in the PatchTCGA
//! release's layouts, split them by slide, check downloads, summarise datasets, look at slides.
//! The commands that run a network (train, fine-tune, embed, probe, infer, export, their
//! benchmarks) are served by `patchtcga-nn` beside this binary, the one that links LibTorch:
//! this one never loads it, so the data commands start at once and stay small.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use patchtcga_cli::commands::{build, checks, exit_status, peak_rss_mib, say, start};
use patchtcga_dataset::{archive, split, stats};

#[derive(Parser)]
#[command(
    name = "patchtcga",
    version,
    about = "Pathology patch datasets at a fixed µm/px, from whole-slide images to the PatchTCGA layouts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tile slides into patches in one of the release's dataset layouts.
    Build {
        #[command(subcommand)]
        dataset: Box<patchtcga_dataset::BuildDataset>,
    },
    /// Slide-level train/val/test splits (JSON and the release's pickle), or check existing ones.
    Split(split::SplitArgs),
    /// Check files against an MD5 list (md5sum format).
    Verify(archive::VerifyArgs),
    /// Report what in a dataset folder the release's loaders would skip or misread: image names
    /// whose extension, read from the first '.', is not .jpg .JPG .JPEG .png; segPANDA200 names
    /// containing `mask` or images without their mask; unknown class folders. Exit status 1 if any.
    VerifyLayout(patchtcga_dataset::VerifyLayoutArgs),
    /// Join a split download (PTCGA200_p_*) and unpack the .tar.gz safely.
    Extract(archive::ExtractArgs),
    /// Patch and slide counts per class, channel mean/std for `image_stats`, and a mosaic.
    Stats(stats::StatsArgs),
    /// Show a slide's size, levels, resolution, reader and tissue.
    Info(patchtcga_slide::InfoArgs),
    /// Write a slide's tissue (with holes) and pen ink as GeoJSON annotations that open in QuPath.
    Tissue(patchtcga_slide::TissueArgs),
    /// A slide-level benchmark's slide list (for `embed --slides`) and labels (for `mil train`)
    /// from your download: Camelyon16 with its official test set, or PANDA's ISUP grades.
    SlideLabels(patchtcga_dataset::slide_tasks::SlideLabelsArgs),
    /// One page of runs: a table of pretraining and benchmark results with intervals, curves and
    /// confusion matrices (`--out report.html`, pictures embedded, or `report.md`).
    Report(patchtcga_report::ReportArgs),
    /// Measure throughput: `bench regions …` (a slide reader), `bench slide-patches …`
    /// (`embed --slides` without the network), `bench stain …` (stain normalisation),
    /// `bench loader …` (data nodes),
    /// `bench step …` (training steps), `bench pretrain …` (a method's whole update).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Read square level-0 regions of a slide on a grid, in one thread, with the reader asked
    /// for; prints regions/s and peak memory.
    Regions(patchtcga_slide::RegionBench),
    /// Read slides' tissue-grid patches into normalised batches as `embed --slides` does, without
    /// the network; prints patches/s and peak memory.
    SlidePatches(patchtcga_loader::bench::SlidePatchBench),
    /// Normalise one patch's stain over and over on one core (Reinhard or Macenko); prints
    /// patches/s.
    Stain(patchtcga_augment::StainBench),
}

fn main() -> ExitCode {
    start();
    let matches = patchtcga_cli::network::with_stand_ins(Cli::command()).get_matches();
    if patchtcga_cli::network::is_network(&matches) {
        return exit_status(network());
    }
    exit_status(run(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build { dataset } => build::build(*dataset),
        Command::Split(a) => say(a.run()?.join("\n")),
        Command::Verify(a) => checks::verify(a),
        Command::VerifyLayout(a) => checks::verify_layout(a),
        Command::Extract(a) => checks::extract(a),
        Command::Stats(a) => checks::stats(a),
        Command::Info(a) => say(a.run()?),
        Command::Tissue(a) => say(a.run()?),
        Command::SlideLabels(a) => say(a.run()?),
        Command::Report(a) => say(a.run()?),
        Command::Bench { what: Bench::Regions(a) } => {
            say(format!("{}, peak memory {:.0} MiB", a.run()?, peak_rss_mib()))
        }
        Command::Bench { what: Bench::Stain(a) } => say(a.run().map_err(anyhow::Error::msg)?),
        Command::Bench { what: Bench::SlidePatches(a) } => {
            say(format!("{}, peak memory {:.0} MiB", a.run()?, peak_rss_mib()))
        }
    }
}

/// Replaces this process with `patchtcga-nn` (beside this binary) on the same arguments.
fn network() -> Result<()> {
    let nn = std::env::current_exe()?.with_file_name("patchtcga-nn");
    let e = std::process::Command::new(&nn).args(std::env::args_os().skip(1)).exec();
    anyhow::bail!(
        "{}: cannot start the network commands' binary ({e}); build it with `cargo build -p patchtcga-nn`",
        nn.display()
    )
}
