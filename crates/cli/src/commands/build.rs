//! `patchtcga build`: tile slides into one of the release's dataset layouts.

use anyhow::{bail, Result};
use patchtcga_dataset::BuildDataset;

/// Tiles this process's share of the slide list into the layout `dataset` names, and reports.
pub fn build(dataset: BuildDataset) -> Result<()> {
    let (task, a) = dataset.task();
    let Some(share) = a.launch.share()? else {
        println!("{} rank(s) done: {}", a.launch.nproc_per_node, a.out.display());
        return Ok(());
    };
    super::workers(a.threads(share))?;
    let slides = a.slides.clone();
    let opts = a.options(share)?;
    let rows = patchtcga_dataset::read_slides_csv(&slides)?;
    println!("{}", opts.plan(&task, rows.len()));
    let report = patchtcga_dataset::build(&task, &rows, &opts, &super::bar("slides"))?;
    println!("{}{}", share.prefix(), report.summary(&opts.out));
    for f in &report.failures {
        eprintln!("  {f}");
    }
    if !report.failures.is_empty() {
        bail!(
            "{} of {} slide(s) failed (the others are complete; re-run to retry only the failed ones)",
            report.failures.len(),
            report.slides
        );
    }
    Ok(())
}
