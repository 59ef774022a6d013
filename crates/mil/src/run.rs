//! A `mil train` run folder: written as the folds finish (`fold_<k>.safetensors`, then
//! `mil_results.json`), and read back as one predictor, the mean of its folds' models.

use std::path::{Path, PathBuf};

use patchtcga_loader::slides::{SlideBatchConfig, SlideJob};
use patchtcga_model::{Arch, Backbone};
use patchtcga_slide::{PatchGeometry, Slide};
use tch::{nn, Kind, Tensor};

use crate::bags::Bags;
use crate::cv::{cross_validate, CrossValidation, EpochLosses, FoldResult, FoldStore, LrSchedule, MilOptions};
use crate::heatmap::{paint, PatchGrid};
use crate::model::MilNet;
use patchtcga_engine::config::ImageStats;
use patchtcga_engine::config::Optim;
use patchtcga_engine::tensorboard::EventWriter;
use patchtcga_engine::LearnError;
use patchtcga_features::slide_features::{embed_slide, provenance, SlideEmbedding};

pub use patchtcga_metrics::mil::MIL_RESULTS_FILE;

/// What a run tells as it goes.
pub enum Progress<'a> {
    /// A fold finished an epoch (its checkpoint written).
    Epoch { fold: usize, epoch: usize, losses: EpochLosses },
    /// A fold finished (its model and result written).
    Fold(&'a FoldResult),
}

/// Cross-validates `data` into the run folder `out`: each fold's state after every epoch
/// (`fold_<k>.checkpoint.safetensors`), its parameters and result as it finishes
/// (`fold_<k>.safetensors`, `fold_<k>.json`), then `mil_results.json`, all written atomically;
/// `tell` hears of each epoch and fold, and each fold's losses go to a TensorBoard event file
/// (`tensorboard/fold_<k>/`: `train/loss`, `val/loss` by epoch). Resumable: a run folder whose `mil_settings.json` records
/// the same settings and slides keeps the folds it finished and resumes a fold at its last epoch;
/// one with other settings is refused.
pub fn train(
    data: &Bags,
    options: &MilOptions,
    out: &Path,
    tell: impl FnMut(Progress),
) -> Result<CrossValidation, LearnError> {
    std::fs::create_dir_all(out).map_err(|e| LearnError::io(out, e))?;
    check_settings(&out.join(SETTINGS), &settings(data, options))?;
    let cv = cross_validate(data, options, &mut RunFolder { out, tell, events: None })?;
    let path = out.join(MIL_RESULTS_FILE);
    let text = serde_json::to_vec_pretty(&cv).map_err(|e| LearnError::Config(format!("{}: {e}", path.display())))?;
    patchtcga_engine::write_atomic(&path, &text)?;
    Ok(cv)
}

/// A run folder as the place a cross-validation keeps its work.
struct RunFolder<'a, F> {
    out: &'a Path,
    tell: F,
    /// The event file of the fold training now.
    events: Option<(usize, EventWriter)>,
}

impl<F> RunFolder<'_, F> {
    fn file(&self, k: usize, ext: &str) -> PathBuf {
        self.out.join(format!("fold_{k}.{ext}"))
    }
}

impl<F: FnMut(Progress)> FoldStore for RunFolder<'_, F> {
    fn finished(&self, k: usize) -> Option<FoldResult> {
        let result = std::fs::read(self.file(k, "json")).ok()?;
        serde_json::from_slice::<FoldResult>(&result).ok().filter(|_| self.file(k, "safetensors").is_file())
    }

    fn checkpoint(&self, k: usize) -> Option<PathBuf> {
        Some(self.file(k, "checkpoint.safetensors"))
    }

    fn epoch_done(&mut self, fold: usize, epoch: usize, losses: EpochLosses) -> Result<(), LearnError> {
        if self.events.as_ref().is_none_or(|(k, _)| *k != fold) {
            let dir = self.out.join("tensorboard").join(format!("fold_{fold}"));
            std::fs::create_dir_all(&dir).map_err(|e| LearnError::io(&dir, e))?;
            // A fold resumed at this epoch supersedes what an earlier process logged past its
            // checkpoint.
            self.events = Some((fold, EventWriter::create(&dir, Some(epoch - 1))?));
        }
        let (_, events) = self.events.as_mut().expect("opened above");
        events.scalars(epoch, &[("train/loss".into(), losses.train), ("val/loss".into(), losses.val)])?;
        (self.tell)(Progress::Epoch { fold, epoch, losses });
        Ok(())
    }

    fn finish(&mut self, r: &FoldResult, vs: &nn::VarStore) -> Result<(), LearnError> {
        crate::checkpoint::save_model(vs, &self.file(r.fold, "safetensors"))?;
        let text = serde_json::to_vec_pretty(r).map_err(|e| LearnError::Config(e.to_string()))?;
        patchtcga_engine::write_atomic(&self.file(r.fold, "json"), &text)?;
        let checkpoint = self.file(r.fold, "checkpoint.safetensors");
        std::fs::remove_file(&checkpoint).or_else(absent).map_err(|e| LearnError::io(&checkpoint, e))?;
        (self.tell)(Progress::Fold(r));
        Ok(())
    }
}

/// A file already gone is as good as removed.
fn absent(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// The record of what a run trains on and how, which a resumed run must match.
const SETTINGS: &str = "mil_settings.json";

fn settings(data: &Bags, o: &MilOptions) -> serde_json::Value {
    let slides: Vec<(&str, &str, &str, bool)> = data
        .bags
        .iter()
        .map(|b| (b.slide.as_str(), b.case.as_str(), data.classes[b.label].as_str(), b.held_out))
        .collect();
    let mut settings = serde_json::json!({
        "arch": o.arch.to_string(), "instance_loss": o.instance_criterion.to_string(), "folds": o.folds,
        "epochs": o.epochs, "lr": o.lr, "weight_decay": o.weight_decay, "seed": o.seed,
        "class_weights": o.class_weights, "patience": o.patience, "width": data.width, "slides": slides,
    });
    // Recorded when they differ from the only choice earlier runs had, so those still resume.
    if o.optim != Optim::Adam {
        settings["optim"] = serde_json::json!(o.optim);
    }
    if o.schedule != LrSchedule::Constant {
        settings["schedule"] = "cosine".into();
        settings["warmup_epochs"] = o.warmup_epochs.into();
    }
    settings
}

/// Writes `path` with `settings`, or checks that the run already there has the same.
fn check_settings(path: &Path, settings: &serde_json::Value) -> Result<(), LearnError> {
    match std::fs::read(path) {
        Ok(text) => {
            let earlier: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| LearnError::Config(format!("{}: {e}", path.display())))?;
            let differ: Vec<&str> = settings
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| earlier.get(k.as_str()) != Some(v))
                .map(|(k, _)| k.as_str())
                .collect();
            if differ.is_empty() {
                Ok(())
            } else {
                Err(LearnError::Config(format!(
                    "{}: the run folder holds a run with other {} (resume it with the same, or train into a new --out)",
                    path.display(),
                    differ.join(", ")
                )))
            }
        }
        Err(_) => {
            let text = serde_json::to_vec_pretty(settings).map_err(|e| LearnError::Config(e.to_string()))?;
            patchtcga_engine::write_atomic(path, &text)
        }
    }
}

/// A slide's prediction by a run: the folds' class probabilities averaged, and their attention
/// over the slide's patches averaged (for attention-pooling networks).
pub struct SlidePrediction {
    pub probabilities: Vec<f32>,
    pub attention: Option<Vec<f32>>,
}

impl SlidePrediction {
    /// The most probable class's index.
    pub fn class(&self) -> usize {
        let p = &self.probabilities;
        (0..p.len()).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap_or(0)
    }

    /// `tumor (normal 0.123, tumor 0.877)`: the class and every class's probability.
    pub fn summary(&self, classes: &[String]) -> String {
        let each: Vec<String> = classes.iter().zip(&self.probabilities).map(|(c, p)| format!("{c} {p:.3}")).collect();
        format!("{} ({})", classes[self.class()], each.join(", "))
    }

    /// Writes the prediction of `slide` as JSON (`slide`, `prediction`, `classes`,
    /// `probabilities`), atomically.
    pub fn write_json(&self, path: &Path, slide: &Path, classes: &[String]) -> Result<(), LearnError> {
        let json = serde_json::json!({
            "slide": slide,
            "prediction": classes[self.class()],
            "classes": classes,
            "probabilities": self.probabilities,
        });
        patchtcga_engine::write_atomic(path, serde_json::to_string_pretty(&json).expect("JSON").as_bytes())
    }
}

/// What [`MilRun::infer_slide`] made: the prediction, over how many patches, its JSON file and the
/// attention's `.npy` (beside the heat map) when the network has attention.
pub struct SlideInference {
    pub prediction: SlidePrediction,
    pub patches: usize,
    pub json: PathBuf,
    pub heatmap: Option<PathBuf>,
}

/// A run folder's results and its folds' models, on the CPU.
pub struct MilRun {
    pub dir: PathBuf,
    pub results: CrossValidation,
    folds: Vec<(nn::VarStore, MilNet)>,
}

impl MilRun {
    /// Reads `dir/mil_results.json` and builds and loads every fold's model.
    pub fn open(dir: &Path) -> Result<Self, LearnError> {
        let path = dir.join(MIL_RESULTS_FILE);
        let text = std::fs::read(&path).map_err(|e| {
            LearnError::Config(format!("{}: {e} (a `patchtcga mil train` run folder?)", path.display()))
        })?;
        let results: CrossValidation =
            serde_json::from_slice(&text).map_err(|e| LearnError::Config(format!("{}: {e}", path.display())))?;
        let folds = (0..results.folds.len())
            .map(|k| {
                let mut vs = nn::VarStore::new(tch::Device::Cpu);
                let net = MilNet::new(&vs.root(), results.arch, results.width, results.classes.len() as i64);
                let file = dir.join(format!("fold_{k}.safetensors"));
                vs.load(&file).map_err(|e| LearnError::Config(format!("{}: {e}", file.display())))?;
                Ok((vs, net))
            })
            .collect::<Result<_, LearnError>>()?;
        Ok(Self { dir: dir.to_path_buf(), results, folds })
    }

    /// How a new slide is to be embedded for this run, as its features were: the backbone, the
    /// patches' geometry and the normalisation (`stats`, or the backbone's own). Refused, in one
    /// message, for a run whose features did not record how they were made, another `arch` than
    /// theirs, other weights (by MD5) or another normalisation.
    pub fn embedding(
        &self,
        arch: Option<Arch>,
        weights: &Path,
        stats: Option<ImageStats>,
    ) -> Result<(Arch, PatchGeometry, ImageStats), LearnError> {
        let dir = self.dir.display();
        let Some(source) = &self.results.features else {
            return Err(LearnError::Config(format!(
                "{dir}: the run's feature files did not record how they were made (not from `patchtcga embed \
                 --slides`); embed the slide as they were and use `patchtcga mil heatmap`"
            )));
        };
        let made: Arch = source.made_by.model.parse().map_err(|e| LearnError::Config(format!("{dir}: model {e}")))?;
        if let Some(given) = arch.filter(|&a| a != made) {
            return Err(LearnError::Config(format!("--arch {given}: the run's features were made by {made}")));
        }
        let geometry = PatchGeometry { mpp: source.mpp, size: source.patch_size };
        let stats = stats.unwrap_or_else(|| ImageStats::of(made));
        let now = provenance(&source.made_by.model, weights, &stats, &geometry)?;
        for (what, now, then) in [
            ("weights (MD5)", &now.weights_md5, &source.made_by.weights_md5),
            ("preprocessing", &now.preprocessing, &source.made_by.preprocessing),
        ] {
            if now != then {
                return Err(LearnError::Config(format!(
                    "{}: {what} {now:?}, but the run's features were made with {then:?}",
                    weights.display()
                )));
            }
        }
        Ok((made, geometry, stats))
    }

    /// A new slide through the run: its patches read as `reading` says (the run's geometry and
    /// normalisation: [`embedding`](Self::embedding)) and embedded by `backbone`, the folds' models'
    /// prediction written to `<out>.json` and, for attention-pooling networks, their attention
    /// painted over the thumbnail into `out` (the raw values beside it, `.npy`). `job` names the
    /// slide and, with its `roi`, the region (QuPath GeoJSON) whose tissue alone is embedded.
    pub fn infer_slide(
        &self,
        job: SlideJob,
        backbone: &Backbone,
        reading: SlideBatchConfig,
        device: tch::Device,
        out: &Path,
        progress: &indicatif::ProgressBar,
    ) -> Result<SlideInference, LearnError> {
        let (geometry, open) = (reading.geometry, reading.open);
        let embedding = SlideEmbedding { geometry, device, float16: false, autocast: false };
        let path = job.path.clone();
        let slide = path.as_path();
        let features = embed_slide(job, reading, backbone, &embedding, progress)?;
        let prediction = self.predict(&features.features, slide)?;
        let json = out.with_extension("json");
        prediction.write_json(&json, slide, &self.results.classes)?;
        let heatmap = match &prediction.attention {
            Some(attention) => {
                let slide = Slide::open(slide, &open)?;
                let footprint = geometry.size as f64 * geometry.mpp / slide.mpp().x;
                let grid = PatchGrid { coords: features.coords.clone(), footprint };
                Some(paint(&slide, &grid, attention, out)?)
            }
            None => None,
        };
        Ok(SlideInference { prediction, patches: features.coords.len(), json, heatmap })
    }

    /// Predicts the slide whose patch features (N × width, from `source`) are `features`.
    pub fn predict(&self, features: &Tensor, source: &Path) -> Result<SlidePrediction, LearnError> {
        let width = features.size()[1];
        if width != self.results.width {
            return Err(LearnError::Config(format!(
                "{}: {width}-wide features; the run's models ({}) take {}",
                source.display(),
                self.dir.display(),
                self.results.width
            )));
        }
        let (mut probs, mut attention) = (Vec::new(), Vec::new());
        for (_, net) in &self.folds {
            let (logits, weights) = tch::no_grad(|| net.predict(features, false));
            probs.push(logits.softmax(-1, Kind::Float).squeeze_dim(0));
            attention.extend(weights);
        }
        let mean = |v: &[Tensor]| Vec::<f32>::try_from(Tensor::stack(v, 0).mean_dim(0, false, None));
        let attention = if attention.len() == probs.len() { Some(mean(&attention)?) } else { None };
        Ok(SlidePrediction { probabilities: mean(&probs)?, attention })
    }
}
