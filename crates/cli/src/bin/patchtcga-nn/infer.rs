//! `patchtcga infer`: a fine-tuned classifier (or segmentation network) slid over the tissue of
//! a whole slide at the training resolution, drawn as a class-probability heat map (or a class
//! map) over the slide's thumbnail.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use patchtcga_learn::config::ImageStats;
use patchtcga_learn::mil::MilRun;
use patchtcga_learn::slide_features::DEFAULT_MIN_TISSUE;
use patchtcga_learn::slide_map::{load_window_model, save_map, slide_map, Legend, MapOptions};
use patchtcga_loader::slides::SlideBatchConfig;
use patchtcga_model::{Arch, BackboneWeights, SegHead};
use patchtcga_slide::{Slide, SlideOptions};
use tch::{nn, Device};

/// Options of `patchtcga infer`.
#[derive(Args)]
pub struct InferArgs {
    /// Backbone of the classifier: resnet18, resnet50, vit-s16, … (with --mil: the run's).
    #[arg(long, required_unless_present = "mil")]
    arch: Option<Arch>,
    /// A fine-tuned classifier with its head (`fc` / `head`): a run's model.safetensors or a .pth.
    /// With --mil: the backbone weights the run's features were made with.
    #[arg(long)]
    weights: PathBuf,
    /// A `patchtcga mil train` run: the slide's patches are embedded as its features were
    /// (model, weights, normalisation, µm/px, size, all checked) and its folds' models predict
    /// the slide; the heat map is their attention, and `<out>.json` holds the probabilities.
    #[arg(long, conflicts_with_all = ["seg_head", "overlap"])]
    mil: Option<PathBuf>,
    /// Whole-slide image.
    #[arg(long)]
    slide: PathBuf,
    /// Heat map PNG; the raw map goes beside it as .npy (rows × columns, NaN off tissue).
    #[arg(long)]
    out: PathBuf,
    /// A segmentation network's head (fcn, deeplabv3): draw its class map instead.
    #[arg(long)]
    seg_head: Option<SegHead>,
    /// Class whose probability is drawn (PCam200: 1 = tumour).
    #[arg(long, default_value_t = 1)]
    class: i64,
    /// Tile field of view in µm (the release's evaluation crop: 287 px at 0.39 µm/px).
    #[arg(long, default_value_t = 287.0 * 0.39)]
    field_um: f64,
    /// Model input side in pixels.
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    /// Windows per tile side: 2 moves the window by half a tile, 4 by a quarter; overlapping
    /// windows are averaged (probabilities; a segmentation network's class probabilities before
    /// the arg max, which needs 1, 2, 4 or 8). The map's cells become a stride wide.
    #[arg(long, default_value_t = 1)]
    overlap: usize,
    /// Least tissue fraction for a tile to be classified (default 0.25); with --mil, of a patch
    /// to be embedded (default `embed --slides`'s, 0.5).
    #[arg(long)]
    min_tissue: Option<f64>,
    /// Normalisation: imagenet, ptcga or six numbers (as in training; default: a preset's own, else
    /// imagenet).
    #[arg(long)]
    stats: Option<ImageStats>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = patchtcga_learn::engine::parse_device)]
    device: Device,
    #[command(flatten)]
    open: SlideOptions,
}

/// Reads every tissue window of the slide and writes the map's picture and the raw map.
pub fn infer(a: InferArgs) -> Result<()> {
    if let Some(run) = &a.mil {
        return infer_mil(&a, run);
    }
    let arch = a.arch.expect("clap requires --arch without --mil");
    let start = Instant::now();
    let vs = nn::VarStore::new(a.device);
    let model = load_window_model(&vs, arch, &a.weights, a.seg_head, a.class, a.image_size as i64)?;
    let slide = Slide::open(&a.slide, &a.open)?;
    let stats = a.stats.clone().unwrap_or_else(|| ImageStats::of(arch));
    let options = MapOptions {
        field_um: a.field_um,
        image_size: a.image_size,
        overlap: a.overlap,
        min_tissue: a.min_tissue.unwrap_or(0.25),
        mean: stats.mean,
        std: stats.std,
        batch_size: a.batch_size,
        device: a.device,
    };
    let map = slide_map(&slide, model.as_ref(), &options, &patchtcga_cli::commands::bar("tiles"))?;
    let npy = save_map(&slide, &map, Legend::of(model.as_ref()), &a.out)?;
    let scored: Vec<f32> = map.values.iter().copied().filter(|v| v.is_finite()).collect();
    println!(
        "{}: {} of {} tiles on tissue ({:.0} µm each), {}, in {:.1} s",
        a.slide.display(),
        map.windows,
        map.grid_windows,
        a.field_um,
        model.summary(&scored),
        start.elapsed().as_secs_f64()
    );
    println!("map → {} (raw {}×{} map → {})", a.out.display(), map.rows, map.cols, npy.display());
    Ok(())
}

/// `--mil RUN`: the slide embedded as the run's features were, predicted by the run's folds, their
/// attention painted over the thumbnail.
fn infer_mil(a: &InferArgs, run_dir: &Path) -> Result<()> {
    let start = Instant::now();
    let run = MilRun::open(run_dir)?;
    let (arch, geometry, stats) = run.embedding(a.arch, &a.weights, a.stats.clone())?;
    let weights = BackboneWeights { arch, weights: a.weights.clone(), prefix: None, allow_partial: false };
    let (_vs, backbone) = crate::backbone::load(&weights, geometry.size as i64, a.device)?;
    let reading = SlideBatchConfig {
        geometry,
        min_tissue: a.min_tissue.unwrap_or(DEFAULT_MIN_TISSUE),
        open: a.open,
        mean: stats.mean,
        std: stats.std,
        batch_size: a.batch_size,
        workers: rayon::current_num_threads(),
        prefetch: 4,
    };
    let bar = patchtcga_cli::commands::bar("patches");
    let r = run.infer_slide(&a.slide, &backbone, reading, a.device, &a.out, &bar)?;
    bar.finish();
    let pictured = match &r.heatmap {
        Some(npy) => format!("{}, {} and ", a.out.display(), npy.display()),
        None => format!("(a {} run: no attention to paint) ", run.results.arch),
    };
    println!(
        "{}: {}; mean of {} folds' models over {} patches, in {:.1} s → {pictured}{}",
        a.slide.display(),
        r.prediction.summary(&run.results.classes),
        run.results.folds.len(),
        r.patches,
        start.elapsed().as_secs_f64(),
        r.json.display()
    );
    Ok(())
}
