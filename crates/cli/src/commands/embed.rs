//! `patchtcga embed`: backbone features of a folder of patches.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use patchtcga_augment::Recipe;
use patchtcga_learn::config::{DeviceChoice, ImageStats};
use patchtcga_learn::engine::device;
use patchtcga_learn::supervised::images;
use patchtcga_loader::{ImageSource, Loader, LoaderConfig, OnBadInput, Sample};
use patchtcga_model::Arch;
use tch::nn::ModuleT;
use tch::Tensor;

use super::backbone::BackboneArgs;

/// Options of `patchtcga embed`.
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    backbone: BackboneArgs,
    /// A folder of patches (searched recursively) or a dataset root.
    #[arg(long)]
    images: PathBuf,
    /// Output (N, D) float32 .npy; `<stem>.csv` beside it names each row's image.
    #[arg(long)]
    out: PathBuf,
    /// `eval` (the release's CenterCrop 287 → Resize 224) or `none` (images already at model size).
    #[arg(long, default_value = "eval")]
    preprocess: String,
    /// Model input side.
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    /// Normalisation: imagenet, ptcga, or m0,m1,m2,s0,s1,s2.
    #[arg(long, default_value = "imagenet")]
    stats: ImageStats,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Decoding threads.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

/// Writes backbone features of every image under `--images` to `--out`.
pub fn embed(a: EmbedArgs) -> Result<()> {
    if !matches!(a.preprocess.as_str(), "eval" | "none") {
        bail!("--preprocess {:?}: eval or none", a.preprocess);
    }
    a.backbone.arch.parse::<Arch>()?;
    let device = device(a.device)?;
    let files = patchtcga_dataset::images_under(&a.images)?;
    if files.is_empty() {
        bail!("{}: no images (.jpg, .JPG, .JPEG, .png)", a.images.display());
    }
    let (_vs, backbone) = a.backbone.load(a.image_size as i64, device)?;
    let (mean, std) = (a.stats.mean, a.stats.std);
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
    let bar = super::bar("images");
    bar.set_length(files.len() as u64);
    let mut chunks = Vec::new();
    for batch in loader.epoch(0) {
        let batch = batch?;
        let x = images(&batch, 0, device);
        chunks.push(tch::no_grad(|| backbone.forward_t(&x, false)).to_device(tch::Device::Cpu));
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish();
    let feats = Tensor::cat(&chunks, 0).to_kind(tch::Kind::Float).contiguous();
    super::write_file(&a.out, |tmp| Ok(feats.write_npy(tmp)?))?;
    let csv = a.out.with_extension("csv");
    let mut text = b"row,image\n".to_vec();
    for (i, f) in files.iter().enumerate() {
        let rel = f.strip_prefix(&a.images).unwrap_or(f).display().to_string();
        let quoted = if rel.contains([',', '"']) { format!("\"{}\"", rel.replace('"', "\"\"")) } else { rel };
        writeln!(text, "{i},{quoted}")?;
    }
    super::write_file(&csv, |tmp| Ok(std::fs::write(tmp, text)?))?;
    println!(
        "{} × {} features → {} (rows named in {})",
        feats.size()[0],
        feats.size()[1],
        a.out.display(),
        csv.display()
    );
    Ok(())
}
