//! `patchtcga mil train`: slide-level multiple-instance learning on patch features.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use patchtcga_learn::config::DeviceChoice;
use patchtcga_learn::engine::device;
use patchtcga_learn::mil::{self, FoldResult, MilOptions};

/// `patchtcga mil …`.
#[derive(Subcommand)]
pub enum MilWhat {
    /// k-fold cross-validation of ABMIL (gated attention) by case: per-fold and mean ± sd
    /// slide-level accuracy, balanced accuracy, ROC-AUC and quadratic-weighted kappa.
    Train(TrainArgs),
}

/// Options of `patchtcga mil train`.
#[derive(Args)]
pub struct TrainArgs {
    /// A folder of `<slide>.h5` feature files (`patchtcga embed --slides`, CLAM, TRIDENT).
    #[arg(long)]
    features: PathBuf,
    /// CSV with `slide` (the .h5 stem) and `label` columns, and `case` to keep a patient's slides
    /// in one fold.
    #[arg(long)]
    labels: PathBuf,
    /// Run folder: `mil_results.json` goes there.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 5)]
    folds: usize,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Adam's learning rate (CLAM's 2e-4).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    #[arg(long, default_value_t = 1e-5)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Do not weigh each class's loss by the inverse of its share of training slides.
    #[arg(long)]
    no_class_weights: bool,
    /// Leave out `.h5` files the labels do not name instead of failing.
    #[arg(long)]
    allow_unlabelled: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

/// Runs `patchtcga mil …`.
pub fn mil(what: MilWhat) -> Result<()> {
    let MilWhat::Train(a) = what;
    let data = mil::load(&a.features, &a.labels, a.allow_unlabelled)?;
    println!(
        "{} slides, {} classes ({}), {}-wide features",
        data.bags.len(),
        data.classes.len(),
        data.classes.join(", "),
        data.width
    );
    let options = MilOptions {
        folds: a.folds,
        epochs: a.epochs,
        lr: a.lr,
        weight_decay: a.weight_decay,
        seed: a.seed,
        class_weights: !a.no_class_weights,
        device: device(a.device)?,
    };
    let show = |r: &FoldResult| {
        let auc = r.test.roc_auc.map_or("n/a".into(), |v| format!("{v:.3}"));
        println!(
            "fold {}: epoch {} selected (val loss {:.4}); test on {} slides: accuracy {:.3}, balanced accuracy {:.3}, ROC-AUC {auc}, kappa {:.3}",
            r.fold,
            r.selected_epoch,
            r.val_loss,
            r.test.samples,
            r.test.accuracy,
            r.test.balanced_accuracy,
            r.test_kappa
        );
    };
    let cv = mil::cross_validate(&data, &options, show)?;
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join("mil_results.json");
    let text = serde_json::to_vec_pretty(&cv)?;
    patchtcga_cli::commands::write_file(&path, |tmp| Ok(std::fs::write(tmp, &text)?))?;
    let m = |x: mil::cv::MeanSd| format!("{:.3} ± {:.3}", x.mean, x.sd);
    println!(
        "{} folds: accuracy {}, balanced accuracy {}, ROC-AUC {}, kappa {} → {}",
        cv.folds.len(),
        m(cv.accuracy),
        m(cv.balanced_accuracy),
        m(cv.roc_auc),
        m(cv.kappa),
        path.display()
    );
    Ok(())
}
