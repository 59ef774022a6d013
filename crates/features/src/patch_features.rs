//! Backbone features of a folder of patch images: an (N, D) float32 `.npy`, with a CSV beside it
//! naming each row's image.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use patchtcga_augment::Recipe;
use patchtcga_loader::{ImageSource, Loader, LoaderConfig, Sample};
use patchtcga_model::Backbone;
use tch::nn::ModuleT;
use tch::{Device, Tensor};

use patchtcga_engine::data::images;
use patchtcga_engine::{write_atomic, LearnError};

/// The features of `files` in order, (N, D) float32 on the CPU: decoded and transformed by
/// `recipe` through the loader, embedded in its batches.
pub fn embed_images(
    files: &[PathBuf],
    backbone: &Backbone,
    recipe: Recipe,
    config: LoaderConfig,
    device: Device,
    progress: &indicatif::ProgressBar,
) -> Result<Tensor, LearnError> {
    let samples = files.iter().map(|f| Sample { image: ImageSource::File(f.clone()), label: 0, mask: None }).collect();
    let loader = Loader::new(samples, recipe, LoaderConfig { shuffle: false, drop_last: false, ..config })?;
    progress.set_length(files.len() as u64);
    let mut chunks = Vec::new();
    for batch in loader.epoch(0) {
        let batch = batch?;
        let x = images(&batch, 0, device);
        chunks.push(tch::no_grad(|| backbone.forward_t(&x, false)).to_device(Device::Cpu));
        progress.inc(batch.labels.len() as u64);
    }
    Ok(Tensor::cat(&chunks, 0).to_kind(tch::Kind::Float).contiguous())
}

/// Writes `features` to `out` (.npy) and `<out stem>.csv` (`row,image`, paths relative to
/// `root`), each atomically; returns the CSV's path.
pub fn write_features(out: &Path, features: &Tensor, files: &[PathBuf], root: &Path) -> Result<PathBuf, LearnError> {
    let failed = |path: &Path, e: String| LearnError::Config(format!("{}: cannot write ({e})", path.display()));
    patchtcga_atomic::write_with(
        out,
        |tmp| features.write_npy(tmp).map_err(|e| failed(out, e.to_string())),
        |e| LearnError::io(out, e),
    )?;
    let csv = out.with_extension("csv");
    let mut text = String::from("row,image\n");
    for (i, f) in files.iter().enumerate() {
        let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
        let quoted = if rel.contains([',', '"']) { format!("\"{}\"", rel.replace('"', "\"\"")) } else { rel };
        let _ = writeln!(text, "{i},{quoted}");
    }
    write_atomic(&csv, text.as_bytes())?;
    Ok(csv)
}
