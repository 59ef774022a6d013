//! `patchtcga bench`: measure throughput: the loader, a training step, a method's update.

use anyhow::Result;
use clap::Subcommand;
use patchtcga_cli::commands::peak_rss_mib;
use patchtcga_loader::bench::LoaderBench;
use patchtcga_methods::bench::{MethodStep, SupervisedStep};

// The benchmarks that run here; their help lines are `patchtcga_cli::network::BENCHES`.
#[derive(Subcommand)]
pub enum BenchWhat {
    Step(SupervisedStep),
    Pretrain(MethodStep),
    Loader(LoaderBench),
}

/// Runs the benchmark and prints its rate and the peak memory.
pub fn bench(what: BenchWhat) -> Result<()> {
    match what {
        BenchWhat::Step(a) => println!("{}, peak host memory {:.0} MiB", a.run()?, peak_rss_mib()),
        BenchWhat::Pretrain(a) => println!("{}, peak host memory {:.0} MiB", a.run()?, peak_rss_mib()),
        BenchWhat::Loader(a) => println!("{}, peak memory {:.0} MiB", a.run()?, peak_rss_mib()),
    }
    Ok(())
}
