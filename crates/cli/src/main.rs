//! `patchtcga`: build pathology patch datasets from whole-slide images in the PatchTCGA
//! release's layouts, split them by slide, check downloads, summarise datasets, look at slides.
//! The commands that run a network (train, fine-tune, embed, probe, infer, export, their
//! benchmarks) are served by `patchtcga-nn` beside this binary, the one that links LibTorch:
//! this one never loads it, so the data commands start at once and stay small.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use patchtcga_cli::commands::*;

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

/// The arguments of a network command, handed to `patchtcga-nn` as they are.
#[derive(Args)]
struct Network {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

#[derive(Subcommand)]
enum Command {
    /// Tile slides into patches in one of the release's dataset layouts.
    Build {
        #[command(subcommand)]
        dataset: build::BuildDataset,
    },
    /// Slide-level train/val/test splits (JSON and the release's pickle), or check existing ones.
    Split(split::SplitArgs),
    /// Check files against an MD5 list (md5sum format).
    Verify(verify::VerifyArgs),
    /// Report what in a dataset folder the release's loaders would skip or misread: image names
    /// whose extension, read from the first '.', is not .jpg .JPG .JPEG .png; segPANDA200 names
    /// containing `mask` or images without their mask; unknown class folders. Exit status 1 if any.
    VerifyLayout(verify_layout::VerifyLayoutArgs),
    /// Join a split download (PTCGA200_p_*) and unpack the .tar.gz safely.
    Extract(extract::ExtractArgs),
    /// Patch and slide counts per class, channel mean/std for `image_stats`, and a mosaic.
    Stats(stats::StatsArgs),
    /// Show a slide's size, levels, resolution, reader and tissue.
    Info(info::InfoArgs),
    /// A slide-level benchmark's slide list (for `embed --slides`) and labels (for `mil train`)
    /// from your download: Camelyon16 with its official test set, or PANDA's ISUP grades.
    SlideLabels(slide_labels::SlideLabelsArgs),
    /// One page of runs: a table of pretraining and benchmark results with intervals, curves and
    /// confusion matrices (`--out report.html`, pictures embedded, or `report.md`).
    Report(report::ReportArgs),
    /// Measure throughput: `bench regions …` (a slide reader), `bench slide-patches …`
    /// (`embed --slides` without the network), `bench loader …` (data nodes),
    /// `bench step …` (training steps), `bench pretrain …` (a method's whole update).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Train a backbone as a run config says (supervised organ classification, SimCLR, BYOL,
    /// MoCo v2, DINO, MAE).
    #[command(disable_help_flag = true)]
    Pretrain(Network),
    /// Fine-tune on a benchmark (PCam200): full or linear probe, best validation epoch, test
    /// report with accuracy interval, balanced accuracy, ROC-AUC, F1 and confusion matrix.
    #[command(disable_help_flag = true)]
    Finetune(Network),
    /// Logistic-regression probe and k-NN classifier on embedded splits (from `embed`): a
    /// checkpoint compared in seconds.
    #[command(disable_help_flag = true)]
    Probe(Network),
    /// Slide a fine-tuned classifier over a whole slide's tissue: a probability heat map over the
    /// thumbnail, and the raw map; or (`--mil RUN`) a slide-level run's prediction and attention.
    #[command(disable_help_flag = true)]
    Infer(Network),
    /// Backbone features of a folder of patches (.npy), or of slides' tissue grids (one .h5 per
    /// slide, CLAM / TRIDENT layout), from any backbone and PyTorch weights.
    #[command(disable_help_flag = true)]
    Embed(Network),
    /// Write a backbone's weights for PyTorch (.pth or .safetensors, torchvision / timm names).
    #[command(disable_help_flag = true)]
    Export(Network),
    /// Slide-level multiple-instance learning on patch features: `mil train` (ABMIL, CLAM-SB or
    /// TransMIL, k-fold cross-validation by case), `mil heatmap` (a slide's attention).
    #[command(disable_help_flag = true)]
    Mil(Network),
}

#[derive(Subcommand)]
enum Bench {
    /// Read square level-0 regions of a slide on a grid, in one thread, with the reader asked
    /// for; prints regions/s and peak memory.
    Regions(regions::RegionArgs),
    /// Read slides' tissue-grid patches into normalised batches as `embed --slides` does, without
    /// the network; prints patches/s and peak memory.
    SlidePatches(slide_patches::SlidePatchArgs),
    /// Decode + augment + batch images of a dataset with a view recipe; prints images/s.
    #[command(disable_help_flag = true)]
    Loader(Network),
    /// Time training steps (forward, backward, update) on synthetic images; prints images/s.
    #[command(disable_help_flag = true)]
    Step(Network),
    /// Time a pretraining method's update on synthetic views of its recipe; prints images/s.
    #[command(disable_help_flag = true)]
    Pretrain(Network),
}

fn main() -> ExitCode {
    start();
    exit_status(run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build { dataset } => build::build(dataset),
        Command::Split(a) => split::split_cmd(a),
        Command::Verify(a) => verify::verify(a),
        Command::VerifyLayout(a) => verify_layout::verify_layout(a),
        Command::Extract(a) => extract::extract(a),
        Command::Stats(a) => stats::stats(a),
        Command::Info(a) => info::info(a),
        Command::SlideLabels(a) => slide_labels::slide_labels(a),
        Command::Report(a) => report::report(a),
        Command::Bench { what: Bench::Regions(a) } => regions::bench_regions(a),
        Command::Bench { what: Bench::SlidePatches(a) } => slide_patches::bench_slide_patches(a),
        Command::Bench { what: Bench::Loader(_) | Bench::Step(_) | Bench::Pretrain(_) }
        | Command::Pretrain(_)
        | Command::Finetune(_)
        | Command::Probe(_)
        | Command::Infer(_)
        | Command::Embed(_)
        | Command::Export(_)
        | Command::Mil(_) => network(),
    }
}

/// Replaces this process with `patchtcga-nn` (beside this binary) on the same arguments.
fn network() -> Result<()> {
    let nn = std::env::current_exe()?.with_file_name("patchtcga-nn");
    let e = std::process::Command::new(&nn).args(std::env::args_os().skip(1)).exec();
    anyhow::bail!(
        "{}: cannot start the network commands' binary ({e}); build it with `cargo build -p patchtcga-cli`",
        nn.display()
    )
}
