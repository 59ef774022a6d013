//! `patchtcga verify`, `verify-layout`, `stats` and `extract`: the data commands that report
//! problems apart from their results.

use anyhow::{bail, Result};
use patchtcga_dataset::archive::{ExtractArgs, VerifyArgs};
use patchtcga_dataset::stats::StatsArgs;
use patchtcga_dataset::VerifyLayoutArgs;

/// Checks every listed file: the failed ones on stderr, the counts, an error if any failed.
pub fn verify(a: VerifyArgs) -> Result<()> {
    let report = patchtcga_dataset::archive::verify(&a.list, a.root.as_deref(), &super::bytes_bar())?;
    eprint!("{}", report.problems());
    println!("{report}");
    if !report.passed() {
        bail!("{}: {} file(s) failed the check", a.list.display(), report.mismatched.len() + report.missing.len());
    }
    Ok(())
}

/// Prints what the release's loaders would skip or misread in a dataset; an error if anything.
pub fn verify_layout(a: VerifyLayoutArgs) -> Result<()> {
    let check = a.run()?;
    println!("{check}");
    if !check.passed() {
        bail!(
            "{}: the release's loaders would skip or misread what is listed above (patches an earlier patchtcga \
             named so are renamed in place by re-running the dataset's `patchtcga build` command)",
            a.dataset.display()
        );
    }
    Ok(())
}

/// Prints patch and slide counts per class, `image_stats`, mask class frequencies; writes the
/// mosaic. Names the release's loaders would misread are noted on stderr.
pub fn stats(a: StatsArgs) -> Result<()> {
    super::workers(a.workers)?;
    let run = a.run(&super::bar("images"))?;
    if run.problems > 0 {
        eprintln!(
            "note: {} image file(s) have names the release's loaders skip or misread; `patchtcga verify-layout {}` \
             lists them",
            run.problems,
            a.dataset.display()
        );
    }
    super::say(run)
}

/// Joins the parts, checks them, unpacks, and says what it did.
pub fn extract(a: ExtractArgs) -> Result<()> {
    let report = a.run(&super::bytes_bar(), |parts| {
        let names: Vec<String> = parts.iter().map(|p| p.display().to_string()).collect();
        println!("joining {} part(s): {}", parts.len(), names.join(", "));
    })?;
    super::say(format!("unpacked {} files ({} bytes) into {}", report.files, report.bytes, a.out.display()))
}
