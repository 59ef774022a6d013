//! `patchtcga split`: slide-level splits, or a check of existing ones.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use patchtcga_dataset::{split, DatasetKind, Index};

#[derive(Args)]
pub struct SplitArgs {
    /// Dataset root (PTCGA200 layout).
    pub dataset: PathBuf,
    /// Folder for splits.json and 3fold_dict_idx_filenames.pickle (default: the dataset root).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Check and convert an existing split pickle (e.g. the release's) instead of drawing one.
    #[arg(long, conflicts_with = "from_json")]
    pub from_pickle: Option<PathBuf>,
    /// Check and convert an existing splits.json instead of drawing one.
    #[arg(long)]
    pub from_json: Option<PathBuf>,
    #[command(flatten)]
    pub params: split::SplitParams,
}

/// Draws (or reads and checks) the splits and writes them as JSON and the release's pickle.
pub fn split_cmd(a: SplitArgs) -> Result<()> {
    let index = Index::scan(&a.dataset, Some(DatasetKind::Ptcga200))?;
    let out_dir = a.out_dir.unwrap_or_else(|| a.dataset.clone());
    let json = out_dir.join("splits.json");
    let pickle = out_dir.join("3fold_dict_idx_filenames.pickle");
    let (splits, source): (split::Splits, &Path) = match (&a.from_pickle, &a.from_json) {
        (Some(p), _) => (split::read_pickle(p)?, p),
        (_, Some(j)) => (split::read_json(j)?, j),
        _ => (split::make(&index, &a.params)?, &a.dataset),
    };
    let counts = split::check(&index, &splits, &a.params, source)?;
    for (trial, [train, val, test]) in &counts {
        println!("trial {trial}: train {train}, val {val}, test {test} patches");
    }
    if a.from_json.is_none() {
        split::write_json(&json, &splits)?;
        println!("wrote {}", json.display());
    }
    if a.from_pickle.is_none() {
        split::write_pickle(&pickle, &splits)?;
        println!("wrote {}", pickle.display());
    }
    Ok(())
}
