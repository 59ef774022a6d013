//! `patchtcga probe`: linear and k-NN probes on embedded splits.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use patchtcga_downstream::probe::{probe as run_probe, ProbeOptions};

/// Options of `patchtcga probe`.
#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    options: ProbeOptions,
    /// Where to write the reports (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A logistic-regression probe and a k-NN classifier on embedded splits.
pub fn probe(a: ProbeArgs) -> Result<()> {
    let report = run_probe(&a.options)?;
    println!("{report}");
    if let Some(out) = &a.out {
        patchtcga_engine::write_atomic(out, &serde_json::to_vec_pretty(&report.to_json())?)?;
        println!("reports → {}", out.display());
    }
    Ok(())
}
