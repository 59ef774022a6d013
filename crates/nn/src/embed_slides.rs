//! `patchtcga embed-slides`: one embedding per slide from its patch features, by a slide encoder.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use patchtcga_engine::device::parse_device;
use patchtcga_slide_encoders::{embed_folder, SlideEncoder, SlideEncoderKind};
use tch::Device;

/// Options of `patchtcga embed-slides`.
#[derive(Args)]
pub struct EmbedSlidesArgs {
    /// The slide encoder (`mean`: the patch features' mean, no weights).
    #[arg(long, value_enum)]
    encoder: SlideEncoderKind,
    /// Its weights, as published (.safetensors or .pth).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The patch features: a folder of one `.h5` per slide (`embed --slides`, CLAM, TRIDENT).
    #[arg(long)]
    features: PathBuf,
    /// The slide embeddings' `.h5` (`features` S × D, `slide_ids`, how they were made).
    #[arg(long)]
    out: PathBuf,
    /// Where the encoder runs: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// A patch's side in level-0 pixels, for feature files that do not record it
    /// (`coords.attrs['patch_size_level0']`); TITAN places patches on a grid of this cell.
    #[arg(long)]
    patch_size_level0: Option<i64>,
    /// Run the encoder under float16 autocast (CUDA; embeddings are stored as float32).
    #[arg(long)]
    autocast: bool,
}

/// Embeds every slide of the folder and writes the embeddings.
pub fn embed_slides(a: EmbedSlidesArgs) -> Result<()> {
    let (encoder, report) = SlideEncoder::load(a.encoder, a.weights.as_deref(), a.device)?;
    if let Some(r) = report {
        println!("{}: {} tensors loaded (prefix {:?})", a.encoder.name(), r.loaded, r.prefix);
    }
    let progress = patchtcga_cli::commands::bar("slides");
    let autocast = a.autocast && a.device.is_cuda();
    let start = std::time::Instant::now();
    let made = tch::autocast(autocast, || {
        embed_folder((&encoder, a.encoder, a.weights.as_deref()), &a.features, a.patch_size_level0, &progress)
    })?;
    let rate = made.slides.len() as f64 / start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    made.write(&a.out)?;
    println!("{} slides × {} → {} ({rate:.4} slides/s)", made.slides.len(), made.width, a.out.display());
    Ok(())
}
