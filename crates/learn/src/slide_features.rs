//! Patch features straight from slides: the tissue grid of a slide read at a resolution, embedded
//! in batches (patches never written), saved as one `.h5` per slide in the layout CLAM and TRIDENT
//! write (`features` N × D, `coords` N × 2 level-0 x, y, attributes), which MIL code reads as is.

use std::path::Path;

use image::RgbImage;
use patchtcga_model::Backbone;
use patchtcga_slide::{PatchGeometry, Sampler, Sampling, Slide, TissueMask, TissueParams};
use rayon::prelude::*;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

use crate::LearnError;

/// How a slide's patches are made and embedded.
#[derive(Debug, Clone)]
pub struct SlideEmbedding {
    /// Patch side (the network's input) and resolution.
    pub geometry: PatchGeometry,
    /// Least tissue fraction of a patch's footprint.
    pub min_tissue: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub batch_size: usize,
    pub device: Device,
    /// Store the features as float16 (half the disk; h5py reads them as numpy float16).
    pub float16: bool,
}

/// What the `.h5` records about how its features were made (its attributes).
#[derive(Debug, Clone)]
pub struct Provenance {
    /// Backbone name.
    pub model: String,
    /// MD5 of the weights file.
    pub weights_md5: String,
    /// Normalisation and input, e.g. `imagenet, 224 px`.
    pub preprocessing: String,
}

/// The features of one slide.
pub struct SlideFeatures {
    /// (N, D) on the CPU.
    pub features: Tensor,
    /// Level-0 top-left corner of each patch.
    pub coords: Vec<[i64; 2]>,
    /// Pyramid level read.
    pub level: u32,
}

/// Embeds every tissue patch of `slide` on its grid.
pub fn embed_slide(
    slide: &Slide,
    backbone: &Backbone,
    o: &SlideEmbedding,
    progress: &indicatif::ProgressBar,
) -> Result<SlideFeatures, LearnError> {
    let tissue = TissueMask::detect(slide, &TissueParams::default())?;
    let footprint = slide.footprint(&o.geometry);
    let sampler = Sampler { sampling: Sampling::Grid, min_tissue: o.min_tissue, seed: 0 };
    let mut grid = sampler.candidates("", slide.dimensions(), footprint, &tissue, None)?;
    // Row-major order, as CLAM's coordinates are written (the sampler draws its own order).
    grid.sort_by_key(|c| (c.y, c.x));
    let level = slide.level_for_downsample(footprint.0.min(footprint.1) / o.geometry.size as f64);
    progress.set_length(grid.len() as u64);
    // The next batches are read and decoded while the network runs on this one.
    let batch = o.batch_size.max(1);
    let chunks = std::thread::scope(|scope| -> Result<Vec<Tensor>, LearnError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let grid = &grid;
        scope.spawn(move || {
            for chunk in grid.chunks(batch) {
                let at: Vec<(u32, u32)> = chunk.iter().map(|c| (c.x, c.y)).collect();
                if tx.send(patch_batch(slide, &o.geometry, &at, o.mean, o.std)).is_err() {
                    break; // the network side stopped on an error
                }
            }
        });
        let mut chunks = Vec::new();
        for x in rx {
            let x = x?.to_device(o.device);
            let f = tch::no_grad(|| backbone.forward_t(&x, false)).to_device(Device::Cpu);
            progress.inc(f.size()[0] as u64);
            chunks.push(f.to_kind(Kind::Float));
        }
        Ok(chunks)
    })?;
    let features =
        if chunks.is_empty() { Tensor::zeros([0, 0], (Kind::Float, Device::Cpu)) } else { Tensor::cat(&chunks, 0) };
    let coords = grid.iter().map(|c| [c.x as i64, c.y as i64]).collect();
    Ok(SlideFeatures { features, coords, level })
}

/// The normalised (N, 3, s, s) batch, on the CPU, of the patches of `geometry` at the level-0
/// corners `at`, read in parallel (the slide-level commands' input).
pub fn patch_batch(
    slide: &Slide,
    geometry: &PatchGeometry,
    at: &[(u32, u32)],
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Tensor, LearnError> {
    let patches: Vec<RgbImage> =
        at.par_iter().map(|&(x, y)| slide.read_patch(geometry, x, y)).collect::<Result<_, _>>()?;
    let s = geometry.size as usize;
    let mut data = Vec::with_capacity(patches.len() * 3 * s * s);
    for p in &patches {
        for ch in 0..3 {
            data.extend(p.pixels().map(|px| (px.0[ch] as f32 / 255.0 - mean[ch]) / std[ch]));
        }
    }
    Ok(Tensor::from_slice(&data).reshape([patches.len() as i64, 3, s as i64, s as i64]))
}

/// Writes `path` (atomically: a slide is done only when its file is whole): datasets
/// `features` and `coords` (with CLAM's `patch_size` and `patch_level` attributes on it), and
/// the file's attributes `mpp`, `patch_size`, `level`, `model`, `weights_md5`, `preprocessing`.
pub fn write_h5(path: &Path, f: &SlideFeatures, o: &SlideEmbedding, p: &Provenance) -> Result<(), LearnError> {
    let bad = |e: hdf5_metno::Error| LearnError::Config(format!("{}: cannot write: {e}", path.display()));
    let write = |tmp: &Path| -> Result<(), LearnError> {
        let file = hdf5_metno::File::create(tmp).map_err(bad)?;
        let n = f.coords.len();
        let d = if n == 0 { 0 } else { f.features.size()[1] as usize };
        let v = Vec::<f32>::try_from(f.features.reshape([-1]))?;
        if o.float16 {
            features(&file, (n, d), v.iter().map(|&x| half::f16::from_f32(x)).collect()).map_err(bad)?;
        } else {
            features(&file, (n, d), v).map_err(bad)?;
        }
        let c = ndarray::Array2::from_shape_vec((n, 2), f.coords.concat()).expect("N × 2 values");
        let coords = file.new_dataset_builder().with_data(&c).create("coords").map_err(bad)?;
        let size = o.geometry.size as i64;
        coords.new_attr::<i64>().create("patch_size").and_then(|a| a.write_scalar(&size)).map_err(bad)?;
        coords.new_attr::<i64>().create("patch_level").and_then(|a| a.write_scalar(&(f.level as i64))).map_err(bad)?;
        file.new_attr::<f64>().create("mpp").and_then(|a| a.write_scalar(&o.geometry.mpp)).map_err(bad)?;
        file.new_attr::<i64>().create("patch_size").and_then(|a| a.write_scalar(&size)).map_err(bad)?;
        file.new_attr::<i64>().create("level").and_then(|a| a.write_scalar(&(f.level as i64))).map_err(bad)?;
        for (name, value) in [("model", &p.model), ("weights_md5", &p.weights_md5), ("preprocessing", &p.preprocessing)]
        {
            let v: hdf5_metno::types::VarLenUnicode = value.parse().map_err(|e| LearnError::Config(format!("{e}")))?;
            file.new_attr::<hdf5_metno::types::VarLenUnicode>()
                .create(name)
                .and_then(|a| a.write_scalar(&v))
                .map_err(bad)?;
        }
        Ok(())
    };
    patchtcga_atomic::write_with(path, write, |e| LearnError::io(path, e))
}

/// The `features` dataset, N × D values of one HDF5 type.
fn features<T: hdf5_metno::H5Type>(
    file: &hdf5_metno::File,
    shape: (usize, usize),
    values: Vec<T>,
) -> hdf5_metno::Result<()> {
    let a = ndarray::Array2::from_shape_vec(shape, values).expect("N × D values");
    file.new_dataset_builder().with_data(&a).create("features").map(drop)
}
