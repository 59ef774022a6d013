//! `patchtcga mil train`: slide-level multiple-instance learning on patch features.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use patchtcga_learn::mil::run::Progress;
use patchtcga_learn::mil::{self, MilOptions, MilRun};
use patchtcga_slide::{Slide, SlideOptions};

/// `patchtcga mil …`.
#[derive(Subcommand)]
pub enum MilWhat {
    /// k-fold cross-validation of ABMIL (gated attention), CLAM-SB or TransMIL by case: per-fold and mean ± sd
    /// slide-level accuracy, balanced accuracy, ROC-AUC and quadratic-weighted kappa.
    #[command(args_override_self = true)]
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
    open: SlideOptions,
}

/// Options of `patchtcga mil train`.
#[derive(Args)]
pub struct TrainArgs {
    /// A TOML file of settings named as these flags are (`model = "clam-sb"`, `lr = 2e-4`,
    /// `patience = 20`, `no-class-weights = true`; presets in configs/mil/); flags given on
    /// the command line override it.
    #[arg(long)]
    config: Option<PathBuf>,
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
    /// Leave out `.h5` files the labels do not name instead of failing.
    #[arg(long)]
    allow_unlabelled: bool,
    #[command(flatten)]
    pub(crate) options: MilOptions,
}

/// Runs `patchtcga mil …`.
pub fn mil(what: MilWhat) -> Result<()> {
    match what {
        MilWhat::Train(a) => train(a),
        MilWhat::Heatmap(a) => heatmap(a),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    if let Some(config) = &a.config {
        println!("settings: {} (and the flags given)", config.display());
    }
    let data = mil::load(&a.features, &a.labels, a.allow_unlabelled)?;
    let classes = data.classes.join(", ");
    println!("{} slides, {} classes ({classes}), {}-wide features", data.bags.len(), data.classes.len(), data.width);
    let (mut trained, epochs) = (0, a.options.epochs);
    let bar = patchtcga_cli::commands::bar("epochs");
    bar.set_length((a.options.folds * epochs) as u64);
    let cv = mil::run::train(&data, &a.options, &a.out, |p| match p {
        Progress::Epoch { fold, epoch, losses } => {
            bar.set_position((fold * epochs + epoch) as u64);
            bar.set_message(format!("fold {fold}: train loss {:.4}, val loss {:.4}", losses.train, losses.val));
        }
        Progress::Fold(r) => {
            trained += 1;
            bar.suspend(|| println!("{r}"));
        }
    })?;
    bar.finish_and_clear();
    if trained < cv.folds.len() {
        println!("{} fold(s) kept from an earlier run of the same settings", cv.folds.len() - trained);
    }
    println!("{cv}\nresults → {}", a.out.join(mil::run::MIL_RESULTS_FILE).display());
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
    let slide = Slide::open(&a.slide, &a.open)?;
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

/// The command line with `mil train --config F`'s settings as flags placed before the command
/// line's own (`mil train` takes a flag's last value, so those given override the file's); any
/// other command line as it is.
pub fn with_config(mut args: Vec<OsString>) -> Result<Vec<OsString>> {
    if args.get(1..3) != Some(&["mil".into(), "train".into()]) {
        return Ok(args);
    }
    let given = args.iter().position(|a| a == "--config").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let equals = args.iter().find_map(|a| a.to_str()?.strip_prefix("--config=").map(PathBuf::from));
    let Some(path) = given.or(equals) else { return Ok(args) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{}: not TOML", path.display()))?;
    let command = TrainArgs::augment_args(clap::Command::new("train"));
    let known: Vec<&str> = command.get_arguments().filter_map(|a| a.get_long()).collect();
    let mut flags: Vec<OsString> = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        if !known.contains(&long.as_str()) {
            bail!("{}: {key} is not a setting of `mil train` (they are: {})", path.display(), known.join(", "));
        }
        let flag = OsString::from(format!("--{long}"));
        match value {
            toml::Value::Boolean(true) => flags.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => flags.extend([flag, s.into()]),
            toml::Value::Integer(_) | toml::Value::Float(_) => flags.extend([flag, value.to_string().into()]),
            other => bail!("{}: {key} = {other}: a string, a number or true/false", path.display()),
        }
    }
    args.splice(3..3, flags);
    Ok(args)
}
