//! `patchtcga embed`: backbone features of a folder of patches.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use patchtcga_augment::Recipe;
use patchtcga_learn::config::{DeviceChoice, ImageStats};
use patchtcga_learn::engine::device;
use patchtcga_learn::slide_features::{embed_slides, read_coords, write_h5, Provenance, SlideEmbedding};
use patchtcga_learn::supervised::images;
use patchtcga_loader::slides::{SlideBatchConfig, SlideBatches, SlideJob};
use patchtcga_loader::{ImageSource, Loader, LoaderConfig, OnBadInput, Sample};
use patchtcga_slide::PatchGeometry;
use tch::nn::ModuleT;
use tch::Tensor;

use crate::backbone::BackboneArgs;
use patchtcga_cli::commands::{LaunchArgs, SlideArgs};

/// Options of `patchtcga embed`.
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    backbone: BackboneArgs,
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
    /// With --slides: µm per pixel the patches are read at.
    #[arg(long, default_value_t = 0.5)]
    mpp: f64,
    #[command(flatten)]
    open: SlideArgs,
    /// With --slides: a folder of `<id>.h5` files whose `coords` (N × 2, level-0 x, y; CLAM's
    /// patching output) give each slide's patches instead of the tissue grid.
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
    launch: LaunchArgs,
    /// With --slides: least tissue fraction of a patch's footprint.
    #[arg(long, default_value_t = 0.5)]
    min_tissue: f64,
    /// `eval` (the release's CenterCrop 287 → Resize 224) or `none` (images already at model size).
    #[arg(long, default_value = "eval")]
    preprocess: String,
    /// Model input side.
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    /// Normalisation: imagenet, ptcga, or m0,m1,m2,s0,s1,s2 (default: a preset's own, else imagenet).
    #[arg(long)]
    stats: Option<ImageStats>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Decoding threads.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

impl EmbedArgs {
    /// `--stats`, or the backbone's own normalisation.
    fn stats(&self) -> ImageStats {
        self.stats.clone().unwrap_or_else(|| ImageStats::of(self.backbone.arch))
    }
}

/// Writes backbone features of every image under `--images` to `--out`.
pub fn embed(a: EmbedArgs) -> Result<()> {
    if !matches!(a.preprocess.as_str(), "eval" | "none") {
        bail!("--preprocess {:?}: eval or none", a.preprocess);
    }
    let Some(folder) = &a.images else { return embed_slide_list(&a) };
    let device = device(a.device)?;
    let files = patchtcga_dataset::images_under(folder)?;
    if files.is_empty() {
        bail!("{}: no images (.jpg, .JPG, .JPEG, .png)", folder.display());
    }
    let (_vs, backbone) = a.backbone.load(a.image_size as i64, device)?;
    let stats = a.stats();
    let (mean, std) = (stats.mean, stats.std);
    let samples: Vec<Sample> =
        files.iter().map(|f| Sample { image: ImageSource::File(f.clone()), label: 0, mask: None }).collect();
    let config = LoaderConfig {
        batch_size: a.batch_size,
        shuffle: false,
        drop_last: false,
        seed: 0,
        rank: 0,
        world_size: 1,
        workers: a.workers,
        prefetch: 4,
        mean,
        std,
        on_bad_input: OnBadInput::Fail,
    };
    let loader = Loader::new(samples, Recipe::preset(&a.preprocess, a.image_size, 0)?, config)?;
    let bar = patchtcga_cli::commands::bar("images");
    bar.set_length(files.len() as u64);
    let mut chunks = Vec::new();
    let start = std::time::Instant::now();
    for batch in loader.epoch(0) {
        let batch = batch?;
        let x = images(&batch, 0, device);
        chunks.push(tch::no_grad(|| backbone.forward_t(&x, false)).to_device(tch::Device::Cpu));
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish();
    let seconds = start.elapsed().as_secs_f64();
    let feats = Tensor::cat(&chunks, 0).to_kind(tch::Kind::Float).contiguous();
    patchtcga_cli::commands::write_file(&a.out, |tmp| Ok(feats.write_npy(tmp)?))?;
    let csv = a.out.with_extension("csv");
    let mut text = b"row,image\n".to_vec();
    for (i, f) in files.iter().enumerate() {
        let rel = f.strip_prefix(folder).unwrap_or(f).display().to_string();
        let quoted = if rel.contains([',', '"']) { format!("\"{}\"", rel.replace('"', "\"\"")) } else { rel };
        writeln!(text, "{i},{quoted}")?;
    }
    patchtcga_cli::commands::write_file(&csv, |tmp| Ok(std::fs::write(tmp, text)?))?;
    let (n, d) = (feats.size()[0], feats.size()[1]);
    println!("{n} × {d} features → {} (rows named in {})", a.out.display(), csv.display());
    println!("embedded in {seconds:.1} s: {:.2} images/s", n as f64 / seconds);
    Ok(())
}

/// `--slides`: one `.h5` of features per slide of the list (this process's share of it); slides
/// already done are skipped, a slide that fails is reported and the others still complete.
fn embed_slide_list(a: &EmbedArgs) -> Result<()> {
    let list = a.slides.as_ref().expect("--slides or --images");
    let Some(share) = a.launch.share()? else {
        println!("{} rank(s) done: {}", a.launch.nproc_per_node, a.out.display());
        return Ok(());
    };
    let device = device(a.device)?;
    let rows: Vec<_> = patchtcga_dataset::read_slides_csv(list)?
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % share.world == share.rank)
        .map(|(_, r)| r)
        .collect();
    let (_vs, backbone) = a.backbone.load(a.image_size as i64, device)?;
    let w = &a.backbone.weights;
    let stats = a.stats();
    let provenance = Provenance {
        model: a.backbone.arch.to_string(),
        // A folder (sharded or snapshot weights) is named rather than hashed.
        weights_md5: if w.is_file() {
            patchtcga_dataset::archive::md5_file(w, &indicatif::ProgressBar::hidden())?
        } else {
            format!("folder {}", w.display())
        },
        preprocessing: format!("{} normalisation, {} px at {} µm/px", String::from(stats.clone()), a.image_size, a.mpp),
    };
    let geometry = PatchGeometry { mpp: a.mpp, size: a.image_size };
    let options = SlideEmbedding { geometry, device, float16: a.float16, autocast: a.autocast && device.is_cuda() };
    let todo: Vec<_> = rows.iter().filter(|r| !a.out.join(format!("{}.h5", r.id)).is_file()).collect();
    let skipped = rows.len() - todo.len();
    let jobs = todo
        .iter()
        .map(|r| {
            let corners = match &a.coords {
                Some(dir) => Some(read_coords(&dir.join(format!("{}.h5", r.id)))?),
                None => None,
            };
            Ok(SlideJob { path: r.slide.clone(), corners })
        })
        .collect::<Result<Vec<_>>>()?;
    let reading = SlideBatchConfig {
        geometry,
        min_tissue: a.min_tissue,
        open: a.open.options(),
        mean: stats.mean,
        std: stats.std,
        batch_size: a.batch_size,
        workers: a.workers,
        prefetch: 4,
    };
    std::fs::create_dir_all(&a.out)?;
    let bar = patchtcga_cli::commands::bar("patches");
    let (mut done, mut failed) = (0, 0);
    let start = std::time::Instant::now();
    embed_slides(SlideBatches::start(jobs, reading)?, &backbone, &options, &bar, |i, made| {
        let row = todo[i];
        let out = a.out.join(format!("{}.h5", row.id));
        match made.and_then(|f| write_h5(&out, &f, &options, &provenance).map(|()| f.coords.len())) {
            Ok(n) => {
                bar.suspend(|| println!("{}: {n} patches → {}", row.slide.display(), out.display()));
                done += 1;
            }
            Err(e) => {
                bar.suspend(|| eprintln!("failed: {}: {e:#}", row.slide.display()));
                failed += 1;
            }
        }
    })?;
    bar.finish();
    let unreached = todo.len() - done - failed;
    if unreached > 0 {
        eprintln!("failed: {unreached} slide(s) never read (the reading stopped early)");
        failed += unreached;
    }
    let seconds = start.elapsed().as_secs_f64();
    let patches = bar.position();
    println!(
        "embedded {patches} patches of {} slide(s) in {seconds:.1} s: {:.2} patches/s, {:.3} slides/s",
        todo.len(),
        patches as f64 / seconds,
        todo.len() as f64 / seconds
    );
    println!("{} slide(s): {done} embedded, {skipped} already done, {failed} failed", rows.len());
    if failed > 0 {
        bail!("{failed} of {} slide(s) failed (the others are complete; re-run to retry only those)", rows.len());
    }
    Ok(())
}
