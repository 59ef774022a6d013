//! What `patchtcga infer` takes and does: a fine-tuned classifier's (or segmentation network's)
//! map of a whole slide, or a slide-level run's prediction of a slide and its attention.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use patchtcga_loader::slides::{SlideBatchConfig, SlideJob, DEFAULT_MIN_TISSUE};
use patchtcga_model::inception::TransformInput;
use patchtcga_model::{Arch, Backbone, BackboneWeights, SegHead};
use patchtcga_slide::{PatchGeometry, Slide, SlideOptions};
use tch::{nn, Device};

use crate::run::MilRun;
use crate::run::SlideInference;
use patchtcga_engine::config::ImageStats;
use patchtcga_engine::LearnError;
use patchtcga_features::slide_map::{load_window_model, save_map, slide_map, Legend, MapOptions};

/// Options of `patchtcga infer`.
#[derive(Args)]
pub struct InferArgs {
    /// Backbone of the classifier: resnet18, resnet50, vit-s16, … (with --mil: the run's).
    #[arg(long, required_unless_present = "mil")]
    pub arch: Option<Arch>,
    /// A fine-tuned classifier with its head (`fc` / `head`): a run's model.safetensors or a .pth.
    /// With --mil: the backbone weights the run's features were made with.
    #[arg(long)]
    pub weights: PathBuf,
    /// A `patchtcga mil train` run: the slide's patches are embedded as its features were
    /// (model, weights, normalisation, µm/px, size, all checked) and its folds' models predict
    /// the slide; the heat map is their attention, and `<out>.json` holds the probabilities.
    #[arg(long, conflicts_with_all = ["seg_head", "overlap"])]
    pub mil: Option<PathBuf>,
    /// Whole-slide image.
    #[arg(long)]
    pub slide: PathBuf,
    /// Only the tissue inside this region of interest (QuPath GeoJSON: every polygon annotation).
    #[arg(long)]
    pub roi: Option<PathBuf>,
    /// Heat map PNG; the raw map goes beside it as .npy (rows × columns, NaN off tissue).
    #[arg(long)]
    pub out: PathBuf,
    /// A segmentation network's head (fcn, deeplabv3): draw its class map instead.
    #[arg(long)]
    pub seg_head: Option<SegHead>,
    /// Class whose probability is drawn (PCam200: 1 = tumour).
    #[arg(long, default_value_t = 1)]
    pub class: i64,
    /// Tile field of view in µm (the release's evaluation crop: 287 px at 0.39 µm/px).
    #[arg(long, default_value_t = 287.0 * 0.39)]
    pub field_um: f64,
    /// Model input side in pixels.
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// Windows per tile side: 2 moves the window by half a tile, 4 by a quarter; overlapping
    /// windows are averaged (probabilities; a segmentation network's class probabilities before
    /// the arg max, which needs 1, 2, 4 or 8). The map's cells become a stride wide.
    #[arg(long, default_value_t = 1)]
    pub overlap: usize,
    /// Least tissue fraction for a tile to be classified (default 0.25); with --mil, of a patch
    /// to be embedded (default `embed --slides`'s, 0.5).
    #[arg(long)]
    pub min_tissue: Option<f64>,
    /// Normalisation: imagenet, ptcga or six numbers (as in training; default: a preset's own, else
    /// imagenet).
    #[arg(long)]
    pub stats: Option<ImageStats>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = patchtcga_engine::device::parse_device)]
    pub device: Device,
    #[command(flatten)]
    pub open: SlideOptions,
}

/// A slide's map, made by [`InferArgs::map`].
pub struct MapMade {
    slide: PathBuf,
    windows: usize,
    grid_windows: usize,
    field_um: f64,
    summary: String,
    seconds: f64,
    picture: PathBuf,
    shape: (usize, usize),
    npy: PathBuf,
}

impl InferArgs {
    /// Reads every tissue window of the slide through the classifier (or segmentation network)
    /// and writes the map's picture and the raw map.
    pub fn map(&self, progress: &indicatif::ProgressBar) -> Result<MapMade, LearnError> {
        let arch = self.arch.ok_or_else(|| LearnError::Config("--arch: needed without --mil".into()))?;
        let start = Instant::now();
        let vs = nn::VarStore::new(self.device);
        let model = load_window_model(&vs, arch, &self.weights, self.seg_head, self.class, self.image_size as i64)?;
        let slide = Slide::open(&self.slide, &self.open)?;
        let stats = self.stats.clone().unwrap_or_else(|| ImageStats::of(arch));
        let options = MapOptions {
            field_um: self.field_um,
            image_size: self.image_size,
            overlap: self.overlap,
            min_tissue: self.min_tissue.unwrap_or(0.25),
            mean: stats.mean,
            std: stats.std,
            batch_size: self.batch_size,
            device: self.device,
            roi: self.roi.clone(),
            cover: false,
        };
        let map = slide_map(&slide, model.as_ref(), &options, progress)?;
        let npy = save_map(&slide, &map, Legend::of(model.as_ref()), &self.out)?;
        let scored: Vec<f32> = map.values.iter().copied().filter(|v| v.is_finite()).collect();
        Ok(MapMade {
            slide: self.slide.clone(),
            windows: map.windows,
            grid_windows: map.grid_windows,
            field_um: self.field_um,
            summary: model.summary(&scored),
            seconds: start.elapsed().as_secs_f64(),
            picture: self.out.clone(),
            shape: (map.rows, map.cols),
            npy,
        })
    }

    /// `--mil RUN`: the run, and how the slide is to be embedded for it (checked against how the
    /// run's features were made).
    pub fn open_mil(&self, run_dir: &Path) -> Result<MilInference, LearnError> {
        let start = Instant::now();
        let run = MilRun::open(run_dir)?;
        let (arch, geometry, stats) = run.embedding(self.arch, &self.weights, self.stats.clone())?;
        let weights = BackboneWeights {
            arch,
            weights: self.weights.clone(),
            prefix: None,
            allow_partial: false,
            transform_input: TransformInput::Auto,
        };
        Ok(MilInference { run, weights, geometry, stats, start })
    }
}

/// A slide-level run and the embedding a slide needs for it: [`InferArgs::open_mil`].
pub struct MilInference {
    pub run: MilRun,
    /// The backbone the run's features were made by, and its weights.
    pub weights: BackboneWeights,
    pub geometry: PatchGeometry,
    pub stats: ImageStats,
    start: Instant,
}

/// A slide's prediction by a slide-level run: [`MilInference::infer`].
pub struct MilInferred {
    slide: PathBuf,
    summary: String,
    folds: usize,
    inference: SlideInference,
    seconds: f64,
    /// The heat map's picture (painted when the run's network has attention).
    out: PathBuf,
    arch: String,
}

impl MilInference {
    /// The slide embedded by `backbone` as the run's features were, predicted by the run's folds,
    /// their attention painted over the thumbnail.
    pub fn infer(
        &self,
        a: &InferArgs,
        backbone: &Backbone,
        progress: &indicatif::ProgressBar,
    ) -> Result<MilInferred, LearnError> {
        let reading = SlideBatchConfig {
            geometry: self.geometry,
            min_tissue: a.min_tissue.unwrap_or(DEFAULT_MIN_TISSUE),
            open: a.open,
            mean: self.stats.mean,
            std: self.stats.std,
            batch_size: a.batch_size,
            workers: rayon::current_num_threads(),
            prefetch: 4,
            stain: None,
        };
        let job = SlideJob { path: a.slide.clone(), corners: None, roi: a.roi.clone(), mpp: None };
        let r = self.run.infer_slide(job, backbone, reading, a.device, &a.out, progress)?;
        progress.finish();
        let results = &self.run.results;
        Ok(MilInferred {
            slide: a.slide.clone(),
            summary: r.prediction.summary(&results.classes),
            folds: results.folds.len(),
            out: a.out.clone(),
            inference: r,
            seconds: self.start.elapsed().as_secs_f64(),
            arch: results.arch.to_string(),
        })
    }
}

/// `slide: 12 of 30 tiles on tissue (112 µm each), …, in 1.2 s` and the files written.
impl fmt::Display for MapMade {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(
            f,
            "{}: {} of {} tiles on tissue ({:.0} µm each), {}, in {:.1} s",
            self.slide.display(),
            self.windows,
            self.grid_windows,
            self.field_um,
            self.summary,
            self.seconds
        )?;
        let (rows, cols) = self.shape;
        write!(f, "map → {} (raw {rows}×{cols} map → {})", self.picture.display(), self.npy.display())
    }
}

/// `slide: tumor (normal 0.1, tumor 0.9); mean of 5 folds' models over 120 patches, …` and the
/// files written.
impl fmt::Display for MilInferred {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let pictured = match &self.inference.heatmap {
            Some(npy) => format!("{}, {} and ", self.out.display(), npy.display()),
            None => format!("(a {} run: no attention to paint) ", self.arch),
        };
        write!(
            f,
            "{}: {}; mean of {} folds' models over {} patches, in {:.1} s → {pictured}{}",
            self.slide.display(),
            self.summary,
            self.folds,
            self.inference.patches,
            self.seconds,
            self.inference.json.display()
        )
    }
}
