//! `patchtcga verify-layout`: what in a dataset the release's loaders would skip or misread.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use patchtcga_dataset::{Index, UnknownFolders};

use patchtcga_dataset::DatasetKind;

/// Options of `patchtcga verify-layout`.
#[derive(Args)]
pub struct VerifyLayoutArgs {
    /// Dataset root.
    pub dataset: PathBuf,
    /// Layout (default: detected).
    #[arg(long, value_enum)]
    pub layout: Option<DatasetKind>,
}

/// Prints what the release's loaders would skip or misread in a dataset; an error if anything.
pub fn verify_layout(a: VerifyLayoutArgs) -> Result<()> {
    let dataset = a.dataset.as_path();
    let index = Index::scan_with(dataset, a.layout, UnknownFolders::Skip)?;
    for f in &index.skipped_folders {
        println!(
            "FOLDER  {}: not a class folder of the {} layout; its images are not read",
            f.display(),
            index.kind.name()
        );
    }
    for p in &index.problems {
        println!("FILE    {}: {}", p.path.display(), p.cause);
    }
    println!(
        "{} layout at {}: {} image(s) listed as the release's loaders list them, {} file(s) and {} folder(s) not",
        index.kind.name(),
        dataset.display(),
        index.entries.len(),
        index.problems.len(),
        index.skipped_folders.len()
    );
    if !index.problems.is_empty() || !index.skipped_folders.is_empty() {
        bail!(
            "{}: the release's loaders would skip or misread what is listed above (patches an earlier patchtcga \
             named so are renamed in place by re-running the dataset's `patchtcga build` command)",
            dataset.display()
        );
    }
    Ok(())
}
