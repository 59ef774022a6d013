//! `patchtcga`: build pathology patch datasets from whole-slide images in the PatchTCGA
//! release's layouts, split them by slide, check downloads, summarise datasets, train backbones
//! and embed patches. One file per command under `commands/`, each parsing its arguments and
//! calling the crate that does the work.

mod commands;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use commands::*;

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
    /// Measure throughput: `patchtcga bench loader …` (data nodes), `patchtcga bench step …`
    /// (training steps), `patchtcga bench pretrain …` (a method's whole update).
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
    /// Logistic-regression probe and k-NN classifier on embedded splits (from `embed`): a
    /// checkpoint compared in seconds.
    Probe(probe::ProbeArgs),
    /// Slide a fine-tuned classifier over a whole slide's tissue: a probability heat map over the
    /// thumbnail, and the raw map.
    Infer(infer::InferArgs),
    /// One page of runs: a table of pretraining and benchmark results with intervals, curves and
    /// confusion matrices (`--out report.html`, pictures embedded, or `report.md`).
    Report(report::ReportArgs),
    /// Backbone features of a folder of patches, from any backbone and PyTorch weights, as .npy.
    Embed(embed::EmbedArgs),
    /// Write a backbone's weights for PyTorch (.pth or .safetensors, torchvision / timm names).
    Export(export::ExportArgs),
    /// Show a slide's size, levels, resolution and tissue.
    Info(info::InfoArgs),
}

fn main() -> ExitCode {
    // LibTorch reports failures inside a network's passes (out of memory, a peer lost during a
    // synchronised batch norm) as panics: print them as one error line, not a crash report.
    std::panic::set_hook(Box::new(|info| {
        let p = info.payload();
        let msg = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied());
        eprintln!("error: {}", msg.unwrap_or("internal failure"));
    }));
    // As destroy_process_group: the run's process group, if this process joined one, ends here.
    let done = run(Cli::parse()).and_then(|()| patchtcga_dist::group().map_or(Ok(()), |g| Ok(g.shutdown()?)));
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The context chain, without repeating a cause a message already quotes.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1).map(ToString::to_string) {
                if !msg.contains(&cause) {
                    msg = format!("{msg}: {cause}");
                }
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build { dataset } => build::build(dataset),
        Command::Split(a) => split::split_cmd(a),
        Command::Verify(a) => verify::verify(a),
        Command::VerifyLayout(a) => verify_layout::verify_layout(a),
        Command::Extract(a) => extract::extract(a),
        Command::Stats(a) => stats::stats(a),
        Command::Bench { what: bench::BenchWhat::Step(a) } => bench::bench_step(a),
        Command::Bench { what: bench::BenchWhat::Pretrain(a) } => bench::bench_method(a),
        Command::Bench { what: bench::BenchWhat::Loader(a) } => bench::bench_loader(a),
        Command::Pretrain(a) => pretrain::pretrain(a),
        Command::Finetune(a) => finetune::finetune(a),
        Command::Probe(a) => probe::probe(a),
        Command::Infer(a) => infer::infer(a),
        Command::Report(a) => report::report(a),
        Command::Embed(a) => embed::embed(a),
        Command::Export(a) => export::export(a),
        Command::Info(a) => info::info(a),
    }
}
