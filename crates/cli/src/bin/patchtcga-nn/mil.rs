//! `patchtcga mil train`: slide-level multiple-instance learning on patch features.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use patchtcga_cli::commands::SlideArgs;
use patchtcga_learn::config::DeviceChoice;
use patchtcga_learn::engine::device;
use patchtcga_learn::mil::{self, CrossValidation, FoldResult, MilArch, MilNet, MilOptions};
use patchtcga_learn::slide_map::{draw, Legend};
use patchtcga_slide::Slide;
use tch::{nn, Kind, Tensor};

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
    /// CSV with `slide` (the .h5 stem) and `label` columns, and `case` to keep a patient's slides
    /// in one fold.
    #[arg(long)]
    labels: PathBuf,
    /// Run folder: `mil_results.json` goes there.
    #[arg(long)]
    out: PathBuf,
    /// The network: abmil (gated attention), clam-sb (plus CLAM's instance-clustering loss: k 8,
    /// bag weight 0.7, subtyping for more than two classes) or transmil (Nyström-attention
    /// Transformer with PPEG).
    #[arg(long, default_value_t = MilArch::Abmil)]
    model: MilArch,
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
        folds: a.folds,
        epochs: a.epochs,
        lr: a.lr,
        weight_decay: a.weight_decay,
        seed: a.seed,
        class_weights: !a.no_class_weights,
        device: device(a.device)?,
    };
    std::fs::create_dir_all(&a.out)?;
    let out = a.out.clone();
    let show = |r: &FoldResult, vs: &nn::VarStore| {
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
        let path = out.join(format!("fold_{}.safetensors", r.fold));
        patchtcga_learn::mil::save(vs, &path)
    };
    let cv = mil::cross_validate(&data, &options, show)?;
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

/// Paints the run's attention over the slide and prints its prediction.
fn heatmap(a: HeatmapArgs) -> Result<()> {
    let results = a.run.join("mil_results.json");
    let cv: CrossValidation = serde_json::from_slice(
        &std::fs::read(&results)
            .map_err(|e| anyhow::anyhow!("{}: {e} (a `patchtcga mil train` run folder?)", results.display()))?,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", results.display()))?;
    let features = mil::bags::read_features(&a.features)?;
    if features.size()[1] != cv.width {
        anyhow::bail!(
            "{}: {}-wide features; the run's models take {}",
            a.features.display(),
            features.size()[1],
            cv.width
        );
    }
    let (mut probs, mut attention) = (Vec::new(), Vec::new());
    for k in 0..cv.folds.len() {
        let mut vs = nn::VarStore::new(tch::Device::Cpu);
        let model = MilNet::new(&vs.root(), cv.arch, cv.width, cv.classes.len() as i64);
        vs.load(a.run.join(format!("fold_{k}.safetensors")))?;
        let (logits, weights) = tch::no_grad(|| model.predict(&features, false));
        let Some(weights) = weights else {
            anyhow::bail!(
                "{}: a {} run; only attention-pooling networks (abmil, clam-sb) have attention to paint",
                results.display(),
                cv.arch
            )
        };
        probs.push(logits.softmax(-1, Kind::Float).squeeze_dim(0));
        attention.push(weights);
    }
    let (probs, attention) =
        (Tensor::stack(&probs, 0).mean_dim(0, false, None), Tensor::stack(&attention, 0).mean_dim(0, false, None));
    let slide = Slide::open(&a.slide, &a.open.options())?;
    let grid = mil::heatmap::read_grid(&a.features, &slide)?;
    if grid.coords.len() as i64 != features.size()[0] {
        anyhow::bail!("{}: {} coords for {} feature rows", a.features.display(), grid.coords.len(), features.size()[0]);
    }
    let values = Vec::<f32>::try_from(&attention)?;
    let map = mil::heatmap::attention_map(&slide, &grid, &values);
    let picture = draw(&slide, &map, Legend::Attention)?;
    patchtcga_cli::commands::write_file(&a.out, |tmp| Ok(picture.save_with_format(tmp, image::ImageFormat::Png)?))?;
    let npy = a.out.with_extension("npy");
    patchtcga_cli::commands::write_file(&npy, |tmp| Ok(attention.write_npy(tmp)?))?;
    let p = Vec::<f32>::try_from(&probs)?;
    let best = (0..p.len()).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap_or(0);
    let shown: Vec<String> = cv.classes.iter().zip(&p).map(|(c, v)| format!("{c} {v:.3}")).collect();
    println!(
        "{}: {} ({}; mean of {} folds' models) → {} and {}",
        a.slide.display(),
        cv.classes[best],
        shown.join(", "),
        cv.folds.len(),
        a.out.display(),
        npy.display()
    );
    Ok(())
}
