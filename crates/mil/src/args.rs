//! What `patchtcga mil train` and `mil heatmap` take: their flags, a preset file read as flags,
//! and the heat map of one slide by a run.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use patchtcga_slide::{Slide, SlideOptions};

use crate::cv::MilOptions;
use crate::run::MilRun;
use patchtcga_engine::LearnError;

/// `patchtcga mil …`.
#[derive(Subcommand)]
pub enum MilCommand {
    /// k-fold cross-validation of ABMIL (gated attention), CLAM-SB or TransMIL by case: per-fold and mean ± sd
    /// slide-level accuracy, balanced accuracy, ROC-AUC and quadratic-weighted kappa.
    #[command(args_override_self = true)]
    Train(TrainArgs),
    /// A slide's prediction by a `mil train` run (its folds' models averaged) and their attention
    /// over the slide's patches as a heat map on its thumbnail (the raw attention beside it, .npy).
    Heatmap(HeatmapArgs),
}

/// Options of `patchtcga mil train`.
#[derive(Args)]
pub struct TrainArgs {
    /// A TOML file of settings named as these flags are (`model = "clam-sb"`, `lr = 2e-4`,
    /// `patience = 20`, `no-class-weights = true`; presets in configs/mil/); flags given on
    /// the command line override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A folder of `<slide>.h5` feature files (`patchtcga embed --slides`, CLAM, TRIDENT).
    #[arg(long)]
    pub features: PathBuf,
    /// CSV with `slide` (the .h5 stem) and `label` columns, `case` to keep a patient's slides in
    /// one fold, and `split` whose `test` rows are held out of the folds and tested by every
    /// fold's model (a benchmark's official test set; `patchtcga slide-labels` writes them).
    #[arg(long)]
    pub labels: PathBuf,
    /// Run folder: `mil_results.json` goes there, each fold's model and result as it finishes; a
    /// run stopped part-way resumes from its finished folds when run again with the same settings.
    #[arg(long)]
    pub out: PathBuf,
    /// Leave out `.h5` files the labels do not name instead of failing.
    #[arg(long)]
    pub allow_unlabelled: bool,
    #[command(flatten)]
    pub options: MilOptions,
}

/// Options of `patchtcga mil heatmap`.
#[derive(Args)]
pub struct HeatmapArgs {
    /// The `mil train` run folder (`mil_results.json`, `fold_<k>.safetensors`).
    #[arg(long)]
    pub run: PathBuf,
    /// The slide's `.h5` of patch features.
    #[arg(long)]
    pub features: PathBuf,
    /// The slide itself (for the thumbnail and the patch footprint).
    #[arg(long)]
    pub slide: PathBuf,
    /// Heat map PNG; the attention (one value per patch, in the `.h5`'s order) goes beside it as .npy.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub open: SlideOptions,
}

/// A heat map painted by [`HeatmapArgs::run`]: the slide's prediction and the files written.
pub struct Heatmap {
    slide: PathBuf,
    summary: String,
    folds: usize,
    picture: PathBuf,
    npy: PathBuf,
}

impl HeatmapArgs {
    /// Predicts the slide by the run's folds and paints their attention over its thumbnail.
    pub fn run(&self) -> Result<Heatmap, LearnError> {
        let run = MilRun::open(&self.run)?;
        let prediction = run.predict(&crate::bags::read_features(&self.features)?, &self.features)?;
        let Some(attention) = &prediction.attention else {
            return Err(LearnError::Config(format!(
                "{}: a {} run; only attention-pooling networks (abmil, clam-sb) have attention to paint",
                self.run.display(),
                run.results.arch
            )));
        };
        let slide = Slide::open(&self.slide, &self.open)?;
        let grid = crate::heatmap::read_grid(&self.features, &slide)?;
        let npy = crate::heatmap::paint(&slide, &grid, attention, &self.out)?;
        Ok(Heatmap {
            slide: self.slide.clone(),
            summary: prediction.summary(&run.results.classes),
            folds: run.results.folds.len(),
            picture: self.out.clone(),
            npy,
        })
    }
}

impl fmt::Display for Heatmap {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: {}; mean of {} folds' models → {} and {}",
            self.slide.display(),
            self.summary,
            self.folds,
            self.picture.display(),
            self.npy.display()
        )
    }
}

/// The command line with `mil train --config F`'s settings as flags placed before the command
/// line's own (`mil train` takes a flag's last value, so those given override the file's); any
/// other command line as it is. `args[0]` is the program.
pub fn with_config(mut args: Vec<OsString>) -> Result<Vec<OsString>, LearnError> {
    if args.get(1..3) != Some(&["mil".into(), "train".into()]) {
        return Ok(args);
    }
    let given = args.iter().position(|a| a == "--config").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let equals = args.iter().find_map(|a| a.to_str()?.strip_prefix("--config=").map(PathBuf::from));
    let Some(path) = given.or(equals) else { return Ok(args) };
    let flags = preset_flags(&path)?;
    args.splice(3..3, flags);
    Ok(args)
}

/// A `mil train` preset's keys as flags, each checked to be one.
fn preset_flags(path: &Path) -> Result<Vec<OsString>, LearnError> {
    let text = std::fs::read_to_string(path).map_err(|e| LearnError::io(path, e))?;
    let refused = |cause: String| LearnError::Config(format!("{}: {cause}", path.display()));
    let table: toml::Table = text.parse().map_err(|e| refused(format!("not TOML: {e}")))?;
    let command = TrainArgs::augment_args(clap::Command::new("train"));
    let known: Vec<&str> = command.get_arguments().filter_map(|a| a.get_long()).collect();
    let mut flags: Vec<OsString> = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        if !known.contains(&long.as_str()) {
            return Err(refused(format!("{key} is not a setting of `mil train` (they are: {})", known.join(", "))));
        }
        let flag = OsString::from(format!("--{long}"));
        match value {
            toml::Value::Boolean(true) => flags.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => flags.extend([flag, s.into()]),
            toml::Value::Integer(_) | toml::Value::Float(_) => flags.extend([flag, value.to_string().into()]),
            other => return Err(refused(format!("{key} = {other}: a string, a number or true/false"))),
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        mil: Mil,
    }

    #[derive(Subcommand)]
    enum Mil {
        Mil {
            #[command(subcommand)]
            what: MilCommand,
        },
    }

    /// `mil train --config F`: each preset in configs/mil/ is read as flags, the flags given
    /// override it, and a key that is no flag is refused naming the file.
    #[test]
    fn mil_settings_come_from_a_preset_and_flags_override_them() {
        let presets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/mil");
        let parse = |file: &Path, extra: &[&str]| -> Result<TrainArgs, Box<dyn std::error::Error>> {
            let mut args: Vec<OsString> = ["patchtcga-nn", "mil", "train", "--config"].map(Into::into).into();
            args.push(file.into());
            args.extend(["--features", "f", "--labels", "l", "--out", "o"].iter().chain(extra).map(Into::into));
            let matches = <Cli as clap::CommandFactory>::command().try_get_matches_from(with_config(args)?)?;
            match Cli::from_arg_matches(&matches)?.mil {
                Mil::Mil { what: MilCommand::Train(a) } => Ok(a),
                Mil::Mil { what: MilCommand::Heatmap(_) } => Err("not mil train".into()),
            }
        };
        let mut n = 0;
        for entry in std::fs::read_dir(&presets).unwrap() {
            let file = entry.unwrap().path();
            let a = parse(&file, &[]).unwrap();
            let stem = file.file_stem().unwrap().to_str().unwrap().replace('_', "-");
            assert_eq!(a.options.arch.to_string(), stem, "{} trains its own network", file.display());
            assert_eq!(a.options.lr, 2e-4);
            n += 1;
        }
        assert_eq!(n, 3);
        let a = parse(&presets.join("clam_sb.toml"), &["--epochs", "3", "--lr", "0.01"]).unwrap();
        let o = &a.options;
        assert_eq!((o.epochs, o.lr, o.folds, o.patience), (3, 0.01, 10, Some(20)), "flags over the file's");
        assert_eq!(o.instance_criterion.to_string(), "svm");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "model = \"abmil\"\nlearning_rate = 0.1\n").unwrap();
        let e = parse(&bad, &[]).err().expect("refused").to_string();
        assert!(e.contains("bad.toml") && e.contains("learning_rate is not a setting"), "{e}");
    }
}
