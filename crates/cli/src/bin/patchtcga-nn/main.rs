//! `patchtcga-nn`: the `patchtcga` commands that run a network, the only binary that links
//! LibTorch. `patchtcga` hands these commands here with their arguments unchanged; run directly
//! it behaves the same. One file per command, each parsing its arguments and calling the crate
//! that does the work.

mod backbone;
mod bench;
mod embed;
mod export;
mod finetune;
mod infer;
mod mil;
mod pretrain;
mod probe;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use patchtcga_cli::commands::{exit_status, start};

#[derive(Parser)]
#[command(name = "patchtcga", bin_name = "patchtcga", version, about = "patchtcga's network commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure throughput: `bench loader …` (data nodes), `bench step …` (training steps),
    /// `bench pretrain …` (a method's whole update).
    Bench {
        #[command(subcommand)]
        what: bench::BenchWhat,
    },
    /// Train a backbone as a run config says (supervised organ classification, SimCLR, BYOL,
    /// MoCo v2, DINO, MAE).
    Pretrain(pretrain::PretrainArgs),
    /// Fine-tune on a benchmark (PCam200): full or linear probe, best validation epoch, test
    /// report with accuracy interval, balanced accuracy, ROC-AUC, F1 and confusion matrix.
    Finetune(finetune::FinetuneArgs),
    /// Logistic-regression probe and k-NN classifier on embedded splits (from `embed`).
    Probe(probe::ProbeArgs),
    /// Slide a fine-tuned classifier over a whole slide's tissue: a probability heat map over the
    /// thumbnail, and the raw map; or (`--mil RUN`) a slide-level run's prediction and attention.
    Infer(infer::InferArgs),
    /// Backbone features of a folder of patches (.npy), or of slides' tissue grids (one .h5 per
    /// slide, CLAM / TRIDENT layout).
    Embed(embed::EmbedArgs),
    /// Write a backbone's weights for PyTorch (.pth or .safetensors, torchvision / timm names).
    Export(export::ExportArgs),
    /// Slide-level multiple-instance learning on patch features: `mil train` (ABMIL, CLAM-SB or
    /// TransMIL, k-fold cross-validation by case), `mil heatmap` (a slide's attention).
    Mil {
        #[command(subcommand)]
        what: mil::MilWhat,
    },
}

fn main() -> ExitCode {
    start();
    // As destroy_process_group: the run's process group, if this process joined one, ends here.
    exit_status(run(Cli::parse()).and_then(|()| patchtcga_dist::group().map_or(Ok(()), |g| Ok(g.shutdown()?))))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench { what: bench::BenchWhat::Step(a) } => bench::bench_step(a),
        Command::Bench { what: bench::BenchWhat::Pretrain(a) } => bench::bench_method(a),
        Command::Bench { what: bench::BenchWhat::Loader(a) } => bench::bench_loader(a),
        Command::Pretrain(a) => pretrain::pretrain(a),
        Command::Finetune(a) => finetune::finetune(a),
        Command::Probe(a) => probe::probe(a),
        Command::Infer(a) => infer::infer(a),
        Command::Embed(a) => embed::embed(a),
        Command::Export(a) => export::export(a),
        Command::Mil { what } => mil::mil(what),
    }
}
