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
    /// Number of trials.
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
    /// Fraction of each organ's slides for validation (rounded up).
    #[arg(long, default_value_t = 0.02)]
    pub val_fraction: f64,
    /// Fraction of each organ's slides for test (rounded up).
    #[arg(long, default_value_t = 0.01)]
    pub test_fraction: f64,
    /// Seed of the draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Treat every N consecutive files of an organ as one slide (for names that do not carry the slide).
    #[arg(long)]
    pub patches_per_slide: Option<usize>,
}

pub fn split_cmd(a: SplitArgs) -> Result<()> {
    let index = Index::scan(&a.dataset, Some(DatasetKind::Ptcga200))?;
    let params = split::SplitParams {
        trials: a.trials,
        val_fraction: a.val_fraction,
        test_fraction: a.test_fraction,
        seed: a.seed,
        patches_per_slide: a.patches_per_slide,
    };
    let out_dir = a.out_dir.unwrap_or_else(|| a.dataset.clone());
    let json = out_dir.join("splits.json");
    let pickle = out_dir.join("3fold_dict_idx_filenames.pickle");
    let (splits, source): (split::Splits, &Path) = match (&a.from_pickle, &a.from_json) {
        (Some(p), _) => (split::read_pickle(p)?, p),
        (_, Some(j)) => (split::read_json(j)?, j),
        _ => (split::make(&index, &params)?, &a.dataset),
    };
    let counts = split::check(&index, &splits, &params, source)?;
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
