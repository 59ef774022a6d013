//! `patchtcga infer`: a fine-tuned classifier (or segmentation network) slid over the tissue of
//! a whole slide at the training resolution, drawn as a class-probability heat map (or a class
//! map) over the slide's thumbnail.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use patchtcga_learn::config::{DeviceChoice, ImageStats};
use patchtcga_learn::engine::device;
use patchtcga_learn::slide_map::{draw, load_window_model, slide_map, Legend, MapOptions};
use patchtcga_model::{Arch, SegHead};
use patchtcga_slide::Slide;
use tch::nn;
use tch::Tensor;

use patchtcga_cli::commands::SlideArgs;

/// Options of `patchtcga infer`.
#[derive(Args)]
pub struct InferArgs {
    /// Backbone of the classifier: resnet18, resnet50, vit-s16, ….
    #[arg(long)]
    arch: Arch,
    /// A fine-tuned classifier with its head (`fc` / `head`): a run's model.safetensors or a .pth.
    #[arg(long)]
    weights: PathBuf,
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
    /// Least tissue fraction for a tile to be classified.
    #[arg(long, default_value_t = 0.25)]
    min_tissue: f64,
    /// Normalisation: imagenet, ptcga or six numbers (as in training; default: a preset's own, else
    /// imagenet).
    #[arg(long)]
    stats: Option<ImageStats>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    #[command(flatten)]
    open: SlideArgs,
}

/// Reads every tissue window of the slide and writes the map's picture and the raw map.
pub fn infer(a: InferArgs) -> Result<()> {
    let start = Instant::now();
    let dev = device(a.device)?;
    let vs = nn::VarStore::new(dev);
    let model = load_window_model(&vs, a.arch, &a.weights, a.seg_head, a.class, a.image_size as i64)?;
    let slide = Slide::open(&a.slide, &a.open.options())?;
    let stats = a.stats.clone().unwrap_or_else(|| ImageStats::of(a.arch));
    let options = MapOptions {
        field_um: a.field_um,
        image_size: a.image_size,
        overlap: a.overlap,
        min_tissue: a.min_tissue,
        mean: stats.mean,
        std: stats.std,
        batch_size: a.batch_size,
        device: dev,
    };
    let map = slide_map(&slide, model.as_ref(), &options, &patchtcga_cli::commands::bar("tiles"))?;
    let npy = a.out.with_extension("npy");
    let shape = [map.rows as i64, map.cols as i64];
    patchtcga_cli::commands::write_file(&npy, |tmp| {
        Ok(Tensor::from_slice(&map.values).reshape(shape).write_npy(tmp)?)
    })?;
    let picture = draw(&slide, &map, Legend::of(model.as_ref()))?;
    patchtcga_cli::commands::write_file(&a.out, |tmp| Ok(picture.save(tmp)?))?;
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
