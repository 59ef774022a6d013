//! `patchtcga-nn`: the `patchtcga` commands that run a network, the only binary that links
//! LibTorch. `patchtcga` hands these commands here with their arguments unchanged; run directly
//! it behaves the same. One file per command, each parsing its arguments and calling the crate
//! that does the work.

mod backbone;
mod bench;
mod embed;
mod embed_slides;
mod export;
mod infer;
mod mil;
mod probe;
mod segment_tissue;
mod train;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use patchtcga_cli::commands::{exit_status, start};

#[derive(Parser)]
#[command(name = "patchtcga", bin_name = "patchtcga", version, about = "patchtcga's network commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The commands; their help lines are [`patchtcga_cli::network`]'s, shared with `patchtcga`.
#[derive(Subcommand)]
enum Command {
    /// Measure throughput: `bench loader …` (data nodes), `bench step …` (training steps),
    /// `bench pretrain …` (a method's whole update).
    Bench {
        #[command(subcommand)]
        what: bench::BenchWhat,
    },
    Pretrain(patchtcga_engine::launch::RunFlags),
    Finetune(patchtcga_engine::launch::FinetuneFlags),
    Probe(probe::ProbeArgs),
    Infer(patchtcga_mil::infer::InferArgs),
    Embed(patchtcga_features::embed::EmbedArgs),
    EmbedSlides(embed_slides::EmbedSlidesArgs),
    SegmentTissue(segment_tissue::SegmentTissueArgs),
    Export(patchtcga_model::ExportArgs),
    Mil {
        #[command(subcommand)]
        what: patchtcga_mil::MilCommand,
    },
}

fn main() -> ExitCode {
    start();
    let args = match patchtcga_mil::with_config(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => return exit_status(Err(e.into())),
    };
    let matches = patchtcga_cli::network::with_help_lines(Cli::command()).get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // As destroy_process_group: the run's process group, if this process joined one, ends here.
    exit_status(run(cli).and_then(|()| patchtcga_collective::group().map_or(Ok(()), |g| Ok(g.shutdown()?))))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench { what } => bench::bench(what),
        Command::Pretrain(a) => train::pretrain(a),
        Command::Finetune(a) => train::finetune(a),
        Command::Probe(a) => probe::probe(a),
        Command::Infer(a) => infer::infer(a),
        Command::Embed(a) => embed::embed(a),
        Command::EmbedSlides(a) => embed_slides::embed_slides(a),
        Command::SegmentTissue(a) => segment_tissue::segment(a),
        Command::Export(a) => export::export(a),
        Command::Mil { what } => mil::mil(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command here has its help line (and `patchtcga` its stand-in) in the shared table,
    /// and the table names no command this binary lacks.
    #[test]
    fn the_shared_table_names_exactly_these_commands() {
        let cli = Cli::command();
        let names = |c: &clap::Command| -> Vec<String> {
            let mut n: Vec<String> = c.get_subcommands().map(|s| s.get_name().to_owned()).collect();
            n.sort();
            n
        };
        let table = |t: &[(&str, &str)]| -> Vec<String> {
            let mut n: Vec<String> = t.iter().map(|&(name, _)| name.to_owned()).collect();
            n.sort();
            n
        };
        let mut top = table(&patchtcga_cli::network::COMMANDS);
        top.push("bench".into());
        top.sort();
        assert_eq!(names(&cli), top);
        let bench = cli.find_subcommand("bench").expect("bench");
        assert_eq!(names(bench), table(&patchtcga_cli::network::BENCHES));
    }
}
