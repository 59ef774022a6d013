//! `patchtcga mil train`: slide-level multiple-instance learning on patch features.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use patchtcga_cli::commands::SlideArgs;
use patchtcga_learn::config::DeviceChoice;
use patchtcga_learn::engine::device;
use patchtcga_learn::mil::run::Progress;
use patchtcga_learn::mil::{self, InstanceCriterion, MilArch, MilOptions, MilRun};
use patchtcga_slide::Slide;

/// `patchtcga mil …`.
#[derive(Subcommand)]
pub enum MilWhat {
    /// k-fold cross-validation of ABMIL (gated attention), CLAM-SB or TransMIL by case: per-fold and mean ± sd
    /// slide-level accuracy, balanced accuracy, ROC-AUC and quadratic-weighted kappa.
    Train(TrainArgs),
    /// A slide's prediction by a `mil train` run (its folds' models averaged) and their attention
    /// over the slide's patches as a heat map on its thumbnail (the raw attention beside it, .npy).
    Heatmap(HeatmapArgs),
}

/// Options of `patchtcga mil heatmap`.
#[derive(Args)]
pub struct HeatmapArgs {
    /// The `mil train` run folder (`mil_results.json`, `fold_<k>.safetensors`).
    #[arg(long)]
    run: PathBuf,
    /// The slide's `.h5` of patch features.
    #[arg(long)]
    features: PathBuf,
    /// The slide itself (for the thumbnail and the patch footprint).
    #[arg(long)]
    slide: PathBuf,
    /// Heat map PNG; the attention (one value per patch, in the `.h5`'s order) goes beside it as .npy.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    open: SlideArgs,
}

/// Options of `patchtcga mil train`.
#[derive(Args)]
pub struct TrainArgs {
    /// A folder of `<slide>.h5` feature files (`patchtcga embed --slides`, CLAM, TRIDENT).
    #[arg(long)]
    features: PathBuf,
    /// CSV with `slide` (the .h5 stem) and `label` columns, `case` to keep a patient's slides in
    /// one fold, and `split` whose `test` rows are held out of the folds and tested by every
    /// fold's model (a benchmark's official test set; `patchtcga slide-labels` writes them).
    #[arg(long)]
    labels: PathBuf,
    /// Run folder: `mil_results.json` goes there, each fold's model and result as it finishes; a
    /// run stopped part-way resumes from its finished folds when run again with the same settings.
    #[arg(long)]
    out: PathBuf,
    /// The network: abmil (gated attention), clam-sb (plus CLAM's instance-clustering loss: k 8,
    /// bag weight 0.7, subtyping for more than two classes) or transmil (Nyström-attention
    /// Transformer with PPEG).
    #[arg(long, default_value_t = MilArch::Abmil)]
    model: MilArch,
    /// CLAM-SB's instance classifiers' loss: ce (cross-entropy) or svm (the smooth top-1 SVM,
    /// CLAM's `--inst_loss svm`).
    #[arg(long, default_value_t = InstanceCriterion::CrossEntropy)]
    inst_loss: InstanceCriterion,
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
    /// Stop a fold once this many epochs in a row have not lowered its validation loss (CLAM's
    /// early stopping uses 20); the epoch of lowest loss is kept either way.
    #[arg(long)]
    patience: Option<usize>,
    /// Leave out `.h5` files the labels do not name instead of failing.
    #[arg(long)]
    allow_unlabelled: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

/// Runs `patchtcga mil …`.
pub fn mil(what: MilWhat) -> Result<()> {
    match what {
        MilWhat::Train(a) => train(a),
        MilWhat::Heatmap(a) => heatmap(a),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let data = mil::load(&a.features, &a.labels, a.allow_unlabelled)?;
    println!(
        "{} slides, {} classes ({}), {}-wide features",
        data.bags.len(),
        data.classes.len(),
        data.classes.join(", "),
        data.width
    );
    let options = MilOptions {
        arch: a.model,
        instance_criterion: a.inst_loss,
        folds: a.folds,
        epochs: a.epochs,
        lr: a.lr,
        weight_decay: a.weight_decay,
        seed: a.seed,
        class_weights: !a.no_class_weights,
        patience: a.patience,
        device: device(a.device)?,
    };
    let mut trained = 0;
    let bar = patchtcga_cli::commands::bar("epochs");
    bar.set_length((a.folds * a.epochs) as u64);
    let cv = mil::run::train(&data, &options, &a.out, |p| match p {
        Progress::Epoch { fold, epoch, val_loss } => {
            bar.set_position((fold * a.epochs + epoch) as u64);
            bar.set_message(format!("fold {fold}: val loss {val_loss:.4}"));
        }
        Progress::Fold(r) => {
            trained += 1;
            let auc = r.test.roc_auc.map_or("n/a".into(), |v| format!("{v:.3}"));
            bar.suspend(|| println!(
                "fold {}: epoch {} selected (val loss {:.4}); test on {} slides: accuracy {:.3}, balanced accuracy {:.3}, ROC-AUC {auc}, kappa {:.3}",
                r.fold, r.selected_epoch, r.val_loss, r.test.samples, r.test.accuracy, r.test.balanced_accuracy, r.test_kappa
            ));
        }
    })?;
    bar.finish_and_clear();
    if trained < cv.folds.len() {
        println!("{} fold(s) kept from an earlier run of the same settings", cv.folds.len() - trained);
    }
    let m = |x: mil::cv::MeanSd| format!("{:.3} ± {:.3}", x.mean, x.sd);
    println!(
        "{} folds: accuracy {}, balanced accuracy {}, ROC-AUC {}, kappa {} → {}",
        cv.folds.len(),
        m(cv.accuracy),
        m(cv.balanced_accuracy),
        m(cv.roc_auc),
        m(cv.kappa),
        a.out.join(mil::run::MIL_RESULTS_FILE).display()
    );
    if let Some(h) = &cv.held_out {
        let e = &h.ensemble;
        let auc = e.roc_auc.map_or("n/a".into(), |v| format!("{v:.3}"));
        println!(
            "held-out test ({} slides): each fold's model accuracy {}, ROC-AUC {}; the folds' models together: accuracy {:.3}, balanced accuracy {:.3}, ROC-AUC {auc}, kappa {:.3}",
            h.slides.len(),
            m(h.accuracy),
            m(h.roc_auc),
            e.accuracy,
            e.balanced_accuracy,
            h.ensemble_kappa
        );
    }
    Ok(())
}

/// Paints the run's attention over the slide and prints its prediction.
fn heatmap(a: HeatmapArgs) -> Result<()> {
    let run = MilRun::open(&a.run)?;
    let prediction = run.predict(&mil::bags::read_features(&a.features)?, &a.features)?;
    let Some(attention) = &prediction.attention else {
        bail!(
            "{}: a {} run; only attention-pooling networks (abmil, clam-sb) have attention to paint",
            a.run.display(),
            run.results.arch
        )
    };
    let slide = Slide::open(&a.slide, &a.open.options())?;
    let grid = mil::heatmap::read_grid(&a.features, &slide)?;
    let npy = mil::heatmap::paint(&slide, &grid, attention, &a.out)?;
    println!(
        "{}: {}; mean of {} folds' models → {} and {}",
        a.slide.display(),
        prediction.summary(&run.results.classes),
        run.results.folds.len(),
        a.out.display(),
        npy.display()
    );
    Ok(())
}
