//! `patchtcga finetune`: fine-tune on a benchmark.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use patchtcga_metrics::run::Task;

use crate::run::RunArgs;

/// Options of `patchtcga finetune`.
#[derive(Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    run: RunArgs,
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
    let Some(config) = a.run.start(&init, contents)? else { return Ok(()) };
    let o = patchtcga_learn::finetune::finetune(&config, a.run.resume)?;
    if patchtcga_dist::group().is_some_and(|g| g.rank() != 0) {
        return Ok(());
    }
    let by = if o.task == Task::Segmentation { "mean IoU" } else { "accuracy" };
    println!("selected epoch {} (best validation {by})", o.selected_epoch);
    for (set, r) in [("val", &o.val), ("test", &o.test)] {
        match r {
            Some(Report::Classification(r)) => {
                let auc = r.roc_auc.map_or("n/a".to_owned(), |v| format!("{v:.4}"));
                println!(
                    "{set}: accuracy {:.2} % (95 % CI {:.2}–{:.2}), balanced accuracy {:.2} %, ROC-AUC {auc}, F1 {:.4}, {} images",
                    100.0 * r.accuracy,
                    100.0 * r.accuracy_ci[0],
                    100.0 * r.accuracy_ci[1],
                    100.0 * r.balanced_accuracy,
                    r.f1,
                    r.samples
                );
            }
            Some(Report::Segmentation(r)) => {
                let per_class: Vec<String> =
                    r.per_class_iou.iter().map(|v| v.map_or("–".into(), |v| format!("{:.1}", 100.0 * v))).collect();
                println!(
                    "{set}: mIoU {:.2} %, micro IoU {:.2} %, mean Dice {:.2} %, micro Dice {:.2} %, mean pixel accuracy {:.2} %; IoU per class {}",
                    100.0 * r.mean_iou,
                    100.0 * r.micro_iou,
                    100.0 * r.mean_dice,
                    100.0 * r.micro_dice,
                    100.0 * r.mean_pixel_accuracy,
                    per_class.join(" / ")
                );
            }
            None => {}
        }
    }
    println!("run folder: {} ({contents})", o.run_dir.display());
    Ok(())
}
