//! `patchtcga report`: the report page of a set of runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

/// Options of `patchtcga report`.
#[derive(Args)]
pub struct ReportArgs {
    /// Run folders, or folders of run folders (e.g. `runs`).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// `.html` (self-contained) or `.md`.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
}

/// Writes the report of `paths` (run folders, or folders holding them) to `out`.
pub fn report(a: ReportArgs) -> Result<()> {
    let (paths, out) = (&a.runs, a.out.as_path());
    let dirs = patchtcga_report::run_folders(paths)?;
    let runs = dirs.iter().map(|d| patchtcga_report::Run::read(d)).collect::<Result<Vec<_>, _>>()?;
    let text = match out.extension().and_then(|e| e.to_str()) {
        Some("md") => patchtcga_report::markdown(
            &runs,
            out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")),
        ),
        Some("html" | "htm") => patchtcga_report::html(&runs)?,
        _ => bail!("--out {}: .html or .md", out.display()),
    };
    super::write_file(out, |tmp| Ok(std::fs::write(tmp, text)?))?;
    println!("{} runs → {}", runs.len(), out.display());
    Ok(())
}
