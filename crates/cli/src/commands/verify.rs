//! `patchtcga verify`: checks files against an MD5 list (md5sum format).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use patchtcga_dataset::archive;

/// Options of `patchtcga verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The MD5 list, e.g. MD5SUMS.
    pub list: PathBuf,
    /// Folder the listed paths are relative to (default: the list's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// Checks every listed file; an error naming the count when any is missing or differs.
pub fn verify(a: VerifyArgs) -> Result<()> {
    let report = archive::verify(&a.list, a.root.as_deref(), &super::bytes_bar())?;
    for p in &report.mismatched {
        eprintln!("MISMATCH {}", p.display());
    }
    for p in &report.missing {
        eprintln!("MISSING  {}", p.display());
    }
    println!("{} ok, {} mismatched, {} missing", report.ok, report.mismatched.len(), report.missing.len());
    if !report.passed() {
        bail!("{}: {} file(s) failed the check", a.list.display(), report.mismatched.len() + report.missing.len());
    }
    Ok(())
}
