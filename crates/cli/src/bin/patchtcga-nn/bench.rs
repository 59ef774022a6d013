//! `patchtcga bench`: measure throughput: the loader, a training step, a method's update.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use patchtcga_learn::bench::SupervisedStep;
use patchtcga_learn::Config;
use patchtcga_loader::bench::LoaderBench;

// The benchmarks that run here; their help lines are `patchtcga_cli::network::BENCHES`.
#[derive(Subcommand)]
pub enum BenchWhat {
    Step(StepArgs),
    Pretrain(MethodStepArgs),
    Loader(LoaderBench),
}

/// Options of `patchtcga bench step`.
#[derive(Args)]
pub struct StepArgs {
    #[command(flatten)]
    step: SupervisedStep,
    /// Timed steps (after the warm-up ones).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// CPU threads for LibTorch (default: LibTorch's choice).
    #[arg(long)]
    threads: Option<i32>,
}

/// Times supervised training updates through the engine's own steps on one synthetic batch.
pub fn bench_step(a: StepArgs) -> Result<()> {
    time_method(&a.step.config(), a.threads, a.warmup, a.steps)
}

/// Options of `patchtcga bench pretrain`.
#[derive(Args)]
pub struct MethodStepArgs {
    /// Run config, e.g. configs/dino_vit_s16_ptcga200.toml (method, backbone, batch, recipe).
    #[arg(long)]
    config: PathBuf,
    /// Override a key: `--set batch_size=32 --set device="cpu"`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Timed updates (after the warm-up ones).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// CPU threads for LibTorch (default: LibTorch's choice).
    #[arg(long)]
    threads: Option<i32>,
}

/// Times a method's update through the engine's own steps (begin, step under autocast, backward,
/// loss scale, clipping, optimizer, momentum targets) on one synthetic batch of its recipe's views,
/// held on the host and copied to the device each step as loader batches are.
pub fn bench_method(a: MethodStepArgs) -> Result<()> {
    time_method(&Config::load(Some(&a.config), &a.set)?, a.threads, a.warmup, a.steps)
}

/// Times `config`'s method and prints images/s and peak host memory.
fn time_method(config: &Config, threads: Option<i32>, warmup: usize, steps: usize) -> Result<()> {
    if let Some(t) = threads {
        tch::set_num_threads(t);
    }
    let timing = patchtcga_learn::bench::time_method(config, warmup, steps)?;
    println!("{timing}, peak host memory {:.0} MiB", patchtcga_cli::commands::peak_rss_mib());
    Ok(())
}

/// Times the loader on a dataset with a view recipe and prints images/s and peak memory.
pub fn bench_loader(a: LoaderBench) -> Result<()> {
    let timing = a.run()?;
    println!("{timing}, peak memory {:.0} MiB", patchtcga_cli::commands::peak_rss_mib());
    Ok(())
}
