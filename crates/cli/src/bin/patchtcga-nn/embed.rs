//! `patchtcga embed`: backbone features of a folder of patches, or of slides' tissue grids.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use patchtcga_augment::Recipe;
use patchtcga_launch::Node;
use patchtcga_learn::config::ImageStats;
use patchtcga_learn::patch_features::{embed_images, write_features};
use patchtcga_learn::slide_features::{embed_slide_list, provenance, SlideEmbedding, SlideList};
use patchtcga_loader::slides::SlideReading;
use patchtcga_loader::LoaderConfig;
use patchtcga_model::BackboneWeights;
use tch::Device;

/// Options of `patchtcga embed`.
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    backbone: BackboneWeights,
    /// A folder of patches (searched recursively) or a dataset root.
    #[arg(long, required_unless_present = "slides", conflicts_with = "slides")]
    images: Option<PathBuf>,
    /// A slide list (CSV with a `slide` column, optional `id`): each slide's tissue grid is read
    /// at `--mpp` in `--image-size` patches and embedded, patches never written, into
    /// `<out>/<id>.h5` (CLAM / TRIDENT layout: `features`, `coords`, attributes).
    #[arg(long)]
    slides: Option<PathBuf>,
    /// With --images: the (N, D) float32 .npy (`<stem>.csv` beside it names each row's image).
    /// With --slides: the folder of `.h5` files (slides already there are skipped).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    reading: SlideReading,
    /// With --slides: a folder of `<id>.h5` files whose `coords` (N × 2, level-0 x, y; CLAM's
    /// patching output), or `<id>.csv` files with `x` and `y` columns, give each slide's patches
    /// instead of the tissue grid.
    #[arg(long, requires = "slides")]
    coords: Option<PathBuf>,
    /// Run the network under float16 autocast (CUDA; features are stored as float32 unless
    /// --float16).
    #[arg(long)]
    autocast: bool,
    /// With --slides: store features as float16 (half the disk; h5py reads numpy float16).
    #[arg(long)]
    float16: bool,
    /// With --slides: processes sharing the slide list (rank r embeds slides r, r + world, …).
    #[command(flatten)]
    launch: Node,
    /// `eval` (the release's CenterCrop 287 → Resize 224) or `none` (images already at model size).
    #[arg(long, default_value = "eval", value_parser = ["eval", "none"])]
    preprocess: String,
    /// Normalisation: imagenet, ptcga, or m0,m1,m2,s0,s1,s2 (default: a preset's own, else imagenet).
    #[arg(long)]
    stats: Option<ImageStats>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = patchtcga_learn::engine::parse_device)]
    device: Device,
}

/// Writes backbone features of every image under `--images` to `--out`, or of every slide of
/// `--slides` into it.
pub fn embed(a: EmbedArgs) -> Result<()> {
    let Some(folder) = &a.images else { return slides(&a) };
    let files = patchtcga_dataset::images_under(folder)?;
    if files.is_empty() {
        bail!("{}: no images (.jpg, .JPG, .JPEG, .png)", folder.display());
    }
    let (_vs, backbone) = crate::backbone::load(&a.backbone, a.reading.image_size as i64, a.device)?;
    let stats = a.stats.clone().unwrap_or_else(|| ImageStats::of(a.backbone.arch));
    let (batch_size, workers) = (a.reading.batch_size, a.reading.workers);
    let config =
        LoaderConfig { batch_size, workers, mean: stats.mean, std: stats.std, prefetch: 4, ..LoaderConfig::default() };
    let recipe = Recipe::preset(&a.preprocess, a.reading.image_size, 0)?;
    let bar = patchtcga_cli::commands::bar("images");
    let start = std::time::Instant::now();
    let feats = embed_images(&files, &backbone, recipe, config, a.device, &bar)?;
    bar.finish();
    let seconds = start.elapsed().as_secs_f64();
    let csv = write_features(&a.out, &feats, &files, folder)?;
    let (n, d) = (feats.size()[0], feats.size()[1]);
    println!("{n} × {d} features → {} (rows named in {})", a.out.display(), csv.display());
    println!("embedded in {seconds:.1} s: {:.2} images/s", n as f64 / seconds);
    Ok(())
}

/// `--slides`: one `.h5` of features per slide of the list (this process's share of it); slides
/// already done are skipped, a slide that fails is reported and the others still complete.
fn slides(a: &EmbedArgs) -> Result<()> {
    let list = a.slides.as_ref().expect("--slides or --images");
    let Some(share) = a.launch.share()? else {
        println!("{} rank(s) done: {}", a.launch.nproc_per_node, a.out.display());
        return Ok(());
    };
    let rows: Vec<_> = patchtcga_dataset::read_slides_csv(list)?
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| share.takes(i).then_some(r))
        .collect();
    let (_vs, backbone) = crate::backbone::load(&a.backbone, a.reading.image_size as i64, a.device)?;
    let stats = a.stats.clone().unwrap_or_else(|| ImageStats::of(a.backbone.arch));
    let geometry = a.reading.geometry();
    let autocast = a.autocast && a.device.is_cuda();
    let list = SlideList {
        rows: &rows,
        out: &a.out,
        coords: a.coords.as_deref(),
        reading: a.reading.config(stats.mean, stats.std),
        embedding: SlideEmbedding { geometry, device: a.device, float16: a.float16, autocast },
        provenance: provenance(&a.backbone.arch.to_string(), &a.backbone.weights, &stats, &geometry)?,
    };
    let bar = patchtcga_cli::commands::bar("patches");
    let r = embed_slide_list(list, &backbone, &bar, |row, outcome| match outcome {
        Ok((file, n)) => bar.suspend(|| println!("{}: {n} patches → {}", row.slide.display(), file.display())),
        Err(e) => bar.suspend(|| eprintln!("failed: {}: {e}", row.slide.display())),
    })?;
    bar.finish();
    if r.unreached > 0 {
        eprintln!("failed: {} slide(s) never read (the reading stopped early)", r.unreached);
    }
    println!("{r}");
    if r.failed() > 0 {
        bail!("{} of {} slide(s) failed (the others are complete; re-run to retry only those)", r.failed(), rows.len());
    }
    Ok(())
}
