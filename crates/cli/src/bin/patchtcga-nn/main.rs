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
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use patchtcga_cli::commands::{exit_status, start};
use patchtcga_learn::launch::{RunFlags, Started};
use patchtcga_learn::Config;

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
    Pretrain(pretrain::PretrainArgs),
    Finetune(finetune::FinetuneArgs),
    Probe(probe::ProbeArgs),
    Infer(infer::InferArgs),
    Embed(embed::EmbedArgs),
    Export(export::ExportArgs),
    Mil {
        #[command(subcommand)]
        what: mil::MilWhat,
    },
}

fn main() -> ExitCode {
    start();
    // As destroy_process_group: the run's process group, if this process joined one, ends here.
    let args = match mil::with_config(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => return exit_status(Err(e)),
    };
    let matches = patchtcga_cli::network::with_help_lines(Cli::command()).get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    exit_status(run(cli).and_then(|()| patchtcga_dist::group().map_or(Ok(()), |g| Ok(g.shutdown()?))))
}

/// The config a training command runs with in this process, or `None` once the ranks it started
/// are done (their run folder, holding `contents`, said).
fn start_run(run: &RunFlags, extra: &[String], contents: &str) -> Result<Option<Config>> {
    Ok(match run.start(extra)? {
        Started::Here(config) => Some(*config),
        Started::Ranks { run_dir } => {
            println!("run folder: {} ({contents})", run_dir.display());
            None
        }
    })
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

    /// `mil train --config F`: each preset in configs/mil/ is read as flags, the flags given
    /// override it, and a key that is no flag is refused naming the file.
    #[test]
    fn mil_settings_come_from_a_preset_and_flags_override_them() {
        let presets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/mil");
        let parse = |file: &std::path::Path, extra: &[&str]| {
            let mut args: Vec<std::ffi::OsString> = ["patchtcga-nn", "mil", "train", "--config"].map(Into::into).into();
            args.push(file.into());
            args.extend(["--features", "f", "--labels", "l", "--out", "o"].iter().chain(extra).map(Into::into));
            let matches = Cli::command().try_get_matches_from(mil::with_config(args)?)?;
            anyhow::Ok(Cli::from_arg_matches(&matches)?.command)
        };
        let mut n = 0;
        for entry in std::fs::read_dir(&presets).unwrap() {
            let file = entry.unwrap().path();
            let Command::Mil { what: mil::MilWhat::Train(a) } = parse(&file, &[]).unwrap() else { panic!("mil train") };
            let stem = file.file_stem().unwrap().to_str().unwrap().replace('_', "-");
            assert_eq!(a.options.arch.to_string(), stem, "{} trains its own network", file.display());
            assert_eq!(a.options.lr, 2e-4);
            n += 1;
        }
        assert_eq!(n, 3);
        let clam = presets.join("clam_sb.toml");
        let Command::Mil { what: mil::MilWhat::Train(a) } = parse(&clam, &["--epochs", "3", "--lr", "0.01"]).unwrap()
        else {
            panic!("mil train")
        };
        let o = &a.options;
        assert_eq!((o.epochs, o.lr, o.folds, o.patience), (3, 0.01, 10, Some(20)), "flags over the file's");
        assert_eq!(o.instance_criterion.to_string(), "svm");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "model = \"abmil\"\nlearning_rate = 0.1\n").unwrap();
        let e = parse(&bad, &[]).err().expect("refused").to_string();
        assert!(e.contains("bad.toml") && e.contains("learning_rate is not a setting"), "{e}");
    }
}
