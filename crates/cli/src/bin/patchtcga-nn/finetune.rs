//! `patchtcga finetune`: fine-tune on a benchmark.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use patchtcga_metrics::run::Task;

use patchtcga_learn::launch::RunFlags;

/// Options of `patchtcga finetune`.
#[derive(Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    run: RunFlags,
    /// Initial backbone weights: a pretraining run's model.safetensors, any .pth (ImageNet
    /// torchvision/timm, MoCo, DINO, MAE, …), or `none` for random weights (default: the
    /// config's `pretrained`).
    #[arg(long)]
    init: Option<String>,
}

/// Fine-tunes, selects the best validation epoch and reports validation and test metrics.
pub fn finetune(a: FinetuneArgs) -> Result<()> {
    use patchtcga_learn::finetune::Report;
    let init = match a.init.as_deref() {
        Some("none") => vec!["pretrained=\"\"".to_owned()],
        Some(path) => {
            if !Path::new(path).is_file() {
                bail!("--init {path}: no such file (a .pth/.safetensors, or `none`)");
            }
            vec![format!("pretrained={path:?}")]
        }
        None => Vec::new(),
    };
    let contents = "results.json, plots/, metrics.jsonl, checkpoints/";
    let Some(config) = crate::start_run(&a.run, &init, contents)? else { return Ok(()) };
    let o = patchtcga_learn::finetune::finetune(&config, a.run.resume)?;
    if patchtcga_dist::group().is_some_and(|g| g.rank() != 0) {
        return Ok(());
    }
    let by = if o.task == Task::Segmentation { "mean IoU" } else { "accuracy" };
    println!("selected epoch {} (best validation {by})", o.selected_epoch);
    for (set, r) in [("val", &o.val), ("test", &o.test)] {
        match r {
            Some(Report::Classification(r)) => println!("{set}: {r}"),
            Some(Report::Segmentation(r)) => println!("{set}: {r}"),
            None => {}
        }
    }
    println!("run folder: {} ({contents})", o.run_dir.display());
    Ok(())
}
