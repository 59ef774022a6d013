//! Patch features straight from slides: the tissue grid of a slide read at a resolution, embedded
//! in batches (patches never written), saved as one `.h5` per slide in the layout CLAM and TRIDENT
//! write (`features` N × D, `coords` N × 2 level-0 x, y, attributes), which MIL code reads as is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use patchtcga_dataset::SlideRow;
use patchtcga_loader::slides::{SlideBatchConfig, SlideBatches, SlideEvent, SlideJob};
use patchtcga_model::Backbone;
use patchtcga_slide::{PatchGeometry, Slide};
use rayon::prelude::*;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

pub use patchtcga_metrics::mil::{FeatureSource, Provenance};

use patchtcga_engine::config::ImageStats;
use patchtcga_engine::LearnError;

use crate::qupath::save_detections;

pub use patchtcga_loader::slides::DEFAULT_MIN_TISSUE;

/// How patches are embedded and their features stored.
#[derive(Debug, Clone)]
pub struct SlideEmbedding {
    /// Patch side (the network's input) and resolution.
    pub geometry: PatchGeometry,
    /// Where the network runs.
    pub device: Device,
    /// Store the features as float16 (half the disk; h5py reads them as numpy float16).
    pub float16: bool,
    /// Run the network under float16 autocast (CUDA).
    pub autocast: bool,
}

/// The provenance of features made by `model` with the weights at `weights` (a file is hashed,
/// streamed; a folder of sharded or snapshot weights is named), normalised by `stats`, from
/// patches of `geometry`.
pub fn provenance(
    model: &str,
    weights: &Path,
    stats: &ImageStats,
    geometry: &PatchGeometry,
) -> Result<Provenance, LearnError> {
    let weights_md5 = if weights.is_file() {
        patchtcga_dataset::archive::md5_file(weights, &indicatif::ProgressBar::hidden())?
    } else {
        format!("folder {}", weights.display())
    };
    let preprocessing =
        format!("{} normalisation, {} px at {} µm/px", String::from(stats.clone()), geometry.size, geometry.mpp);
    Ok(Provenance { model: model.to_owned(), weights_md5, preprocessing })
}

/// The [`FeatureSource`] an `.h5` file records; `None` when it lacks the attributes (files of
/// CLAM, TRIDENT or other tools).
pub fn read_source(path: &Path) -> Result<Option<FeatureSource>, LearnError> {
    let file = hdf5_metno::File::open(path)
        .map_err(|e| LearnError::Config(format!("{}: not a readable HDF5 file ({e})", path.display())))?;
    let text = |name: &str| {
        file.attr(name).and_then(|a| a.read_scalar::<hdf5_metno::types::VarLenUnicode>()).ok().map(|v| v.to_string())
    };
    let mpp = file.attr("mpp").and_then(|a| a.read_scalar::<f64>()).ok();
    let size = file.attr("patch_size").and_then(|a| a.read_scalar::<i64>()).ok();
    Ok(match (text("model"), text("weights_md5"), text("preprocessing"), mpp, size) {
        (Some(model), Some(weights_md5), Some(preprocessing), Some(mpp), Some(size)) => Some(FeatureSource {
            made_by: Provenance { model, weights_md5, preprocessing },
            mpp,
            patch_size: size as u32,
        }),
        _ => None,
    })
}

/// The features of one slide.
pub struct SlideFeatures {
    /// (N, D) on the CPU.
    pub features: Tensor,
    /// Level-0 top-left corner of each patch.
    pub coords: Vec<[i64; 2]>,
    /// Pyramid level read.
    pub level: u32,
    /// A patch's side in level-0 pixels (TRIDENT's `patch_size_level0`).
    pub footprint: u32,
}

/// Embeds the patches of every slide that `batches` reads, the next batch read and staged while
/// the network runs on this one. Each slide's features (or why it failed) go to `done` with its
/// position in the job list, on a thread of their own (it writes files while the network goes
/// on).
pub fn embed_slides(
    batches: SlideBatches,
    backbone: &Backbone,
    o: &SlideEmbedding,
    progress: &indicatif::ProgressBar,
    mut done: impl FnMut(usize, Result<SlideFeatures, LearnError>) + Send,
) -> Result<(), LearnError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<SlideFeatures, LearnError>)>();
        let writer = scope.spawn(move || rx.into_iter().for_each(|(i, r)| done(i, r)));
        let mut run = Run { backbone, o, progress, tx, open: HashMap::new(), in_flight: None, ends: Vec::new() };
        batches.for_each(|event| run.event(event));
        run.settle();
        run.abandon();
        drop(run);
        writer.join().map_err(|_| LearnError::Config("the feature-writing thread panicked".into()))
    })
}

/// The features of one slide's patches (its tissue grid, or `corners`), held in memory.
pub fn embed_slide(
    job: SlideJob,
    reading: SlideBatchConfig,
    backbone: &Backbone,
    o: &SlideEmbedding,
    progress: &indicatif::ProgressBar,
) -> Result<SlideFeatures, LearnError> {
    let mut made = None;
    embed_slides(SlideBatches::start(vec![job], reading)?, backbone, o, progress, |_, r| made = Some(r))?;
    made.unwrap_or_else(|| Err(LearnError::Config("the slide was never read".into())))
}

/// A slide whose patches are being embedded.
struct Open {
    coords: Vec<[i64; 2]>,
    level: u32,
    footprint: u32,
    chunks: Vec<Tensor>,
}

/// The network side of [`embed_slides`].
struct Run<'a> {
    backbone: &'a Backbone,
    o: &'a SlideEmbedding,
    progress: &'a indicatif::ProgressBar,
    tx: std::sync::mpsc::Sender<(usize, Result<SlideFeatures, LearnError>)>,
    open: HashMap<usize, Open>,
    /// Features of the last batch, still on the device, and whose rows they are.
    in_flight: Option<(Tensor, Vec<(usize, usize)>)>,
    /// Slides that end once the batch in flight is back.
    ends: Vec<usize>,
}

impl Run<'_> {
    fn event(&mut self, event: SlideEvent) {
        match event {
            SlideEvent::Begin { slide, corners, level, footprint } => {
                self.progress.inc_length(corners.len() as u64);
                let coords = corners.iter().map(|&(x, y)| [x as i64, y as i64]).collect();
                self.open.insert(slide, Open { coords, level, footprint, chunks: Vec::new() });
            }
            SlideEvent::Batch { values, rows } => {
                // The batch is staged while the device still runs the previous one, whose
                // features then come back, and the device gets this one at once.
                let staged = self.stage(&values);
                self.settle();
                self.in_flight = Some((self.forward(&staged), rows));
            }
            SlideEvent::End { slide } => match &self.in_flight {
                Some((_, rows)) if rows.iter().any(|r| r.0 == slide) => self.ends.push(slide),
                _ => self.finish(slide),
            },
            SlideEvent::Failed { slide, error } => {
                self.open.remove(&slide);
                self.report(slide, Err(error.into()));
            }
        }
    }

    /// The batch as a host tensor: in pinned memory for a GPU (copied without blocking).
    fn stage(&self, values: &[f32]) -> Tensor {
        let s = self.o.geometry.size as i64;
        let shape = [values.len() as i64 / (3 * s * s), 3, s, s];
        if !self.o.device.is_cuda() {
            return Tensor::from_slice(values).reshape(shape);
        }
        let strides = [3 * s * s, s * s, s, 1];
        // SAFETY: the tensor borrows `values` only for the copy into pinned memory on the next
        // line, which is synchronous.
        let host = unsafe { Tensor::from_blob(values.as_ptr().cast(), &shape, &strides, Kind::Float, Device::Cpu) };
        host.pin_memory(self.o.device)
    }

    /// Starts the network on a staged batch; the features stay on the device.
    fn forward(&self, staged: &Tensor) -> Tensor {
        let x = staged.to_device_(self.o.device, Kind::Float, true, false);
        tch::no_grad(|| tch::autocast(self.o.autocast, || self.backbone.forward_t(&x, false)))
    }

    /// Brings the batch in flight back and hands its rows to their slides; ends the slides
    /// that were waiting for it.
    fn settle(&mut self) {
        if let Some((f, rows)) = self.in_flight.take() {
            let f = f.to_device(Device::Cpu).to_kind(Kind::Float);
            let mut start = 0;
            for (slide, n) in rows {
                if let Some(open) = self.open.get_mut(&slide) {
                    open.chunks.push(f.narrow(0, start, n as i64));
                }
                start += n as i64;
            }
            self.progress.inc(start as u64);
        }
        for slide in std::mem::take(&mut self.ends) {
            self.finish(slide);
        }
    }

    fn finish(&mut self, slide: usize) {
        let Some(open) = self.open.remove(&slide) else { return };
        let features = if open.chunks.is_empty() {
            Tensor::zeros([0, 0], (Kind::Float, Device::Cpu))
        } else {
            Tensor::cat(&open.chunks, 0)
        };
        self.report(
            slide,
            Ok(SlideFeatures { features, coords: open.coords, level: open.level, footprint: open.footprint }),
        );
    }

    /// Fails the slides whose reading began but never ended (the reading stopped early).
    fn abandon(&mut self) {
        let mut left: Vec<usize> = self.open.keys().copied().collect();
        left.sort_unstable();
        for slide in left {
            self.open.remove(&slide);
            self.report(slide, Err(LearnError::Config("the reading stopped before the slide's end".into())));
        }
    }

    fn report(&self, slide: usize, r: Result<SlideFeatures, LearnError>) {
        // The writer ends only after this run is dropped.
        let _ = self.tx.send((slide, r));
    }
}

/// The normalised (N, 3, s, s) batch, on the CPU, of the patches of `geometry` at the level-0
/// corners `at`, each read and normalised (as training normalises) in parallel straight into the
/// batch (the slide-level commands' input).
pub fn patch_batch(
    slide: &Slide,
    geometry: &PatchGeometry,
    at: &[(u32, u32)],
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Tensor, LearnError> {
    let s = geometry.size as usize;
    let mut data = vec![0f32; at.len() * 3 * s * s];
    data.par_chunks_mut(3 * s * s).zip(at).try_for_each(|(out, &(x, y))| -> Result<(), LearnError> {
        let patch = slide.read_patch(geometry, x, y)?;
        Ok(patchtcga_augment::normalize(&patch, mean, std, out)?)
    })?;
    Ok(Tensor::from_slice(&data).reshape([at.len() as i64, 3, s as i64, s as i64]))
}

/// Writes `path` (atomically: a slide is done only when its file is whole): datasets
/// `features` and `coords` (with CLAM's `patch_size` and `patch_level` attributes on it, and
/// TRIDENT's `patch_size_level0`), and
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
        let footprint = f.footprint as i64;
        coords.new_attr::<i64>().create("patch_size_level0").and_then(|a| a.write_scalar(&footprint)).map_err(bad)?;
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

/// The level-0 patch corners a coordinates file gives: the `coords` dataset (N × 2: x, y) of an
/// `.h5` file (CLAM's patching output, or a feature file), or the `x` and `y` columns of a `.csv`.
pub fn read_coords(path: &Path) -> Result<Vec<(u32, u32)>, LearnError> {
    if path.extension().is_some_and(|e| e == "csv") {
        return read_coords_csv(path);
    }
    let bad = |what: String| LearnError::Config(format!("{}: {what}", path.display()));
    let file = hdf5_metno::File::open(path).map_err(|e| bad(format!("not a readable HDF5 file ({e})")))?;
    let ds = file.dataset("coords").map_err(|_| bad("no `coords` dataset".into()))?;
    if ds.ndim() != 2 || ds.shape()[1] != 2 {
        return Err(bad(format!("`coords` is {:?}, not N × 2", ds.shape())));
    }
    let flat: Vec<i64> = ds.read_raw().map_err(|e| bad(format!("`coords`: {e}")))?;
    flat.chunks_exact(2)
        .map(|c| match (u32::try_from(c[0]), u32::try_from(c[1])) {
            (Ok(x), Ok(y)) => Ok((x, y)),
            _ => Err(bad(format!("`coords` holds ({}, {}), outside any slide", c[0], c[1]))),
        })
        .collect()
}

fn read_coords_csv(path: &Path) -> Result<Vec<(u32, u32)>, LearnError> {
    let bad = |what: String| LearnError::Config(format!("{}: {what}", path.display()));
    let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(x), Some(y)) = (col("x"), col("y")) else { return Err(bad("needs `x` and `y` columns".into())) };
    reader
        .records()
        .enumerate()
        .map(|(i, r)| {
            let r = r.map_err(|e| bad(format!("row {}: {e}", i + 2)))?;
            let at = |c: usize| r.get(c).unwrap_or("").trim().parse::<u32>();
            match (at(x), at(y)) {
                (Ok(x), Ok(y)) => Ok((x, y)),
                _ => Err(bad(format!("row {}: x and y must be level-0 pixels (whole numbers ≥ 0)", i + 2))),
            }
        })
        .collect()
}

/// The coordinates file of slide `id` in `dir`: `<id>.h5`, else `<id>.csv`.
fn coords_file(dir: &Path, id: &str) -> PathBuf {
    let h5 = dir.join(format!("{id}.h5"));
    if h5.is_file() {
        h5
    } else {
        dir.join(format!("{id}.csv"))
    }
}

/// A slide list to embed into a folder of `<id>.h5` files.
pub struct SlideList<'a> {
    /// This process's share of the list.
    pub rows: &'a [SlideRow],
    /// The folder of `.h5` files; slides with a file there are skipped.
    pub out: &'a Path,
    /// A folder of `<id>.h5` (or `<id>.csv`) files whose coordinates give each slide's patches
    /// (else its tissue grid).
    pub coords: Option<&'a Path>,
    pub reading: SlideBatchConfig,
    pub embedding: SlideEmbedding,
    pub provenance: Provenance,
}

/// How a slide list's embedding went.
pub struct SlideListReport {
    /// Slides written this run, and slides skipped as already done.
    pub done: usize,
    pub skipped: usize,
    /// Each failed slide and why.
    pub failures: Vec<(PathBuf, String)>,
    /// Slides never read because the reading stopped early (failed too).
    pub unreached: usize,
    /// Patches embedded and slides attempted this run, and the seconds it took.
    pub patches: u64,
    pub attempted: usize,
    pub seconds: f64,
}

/// The patches of a slide's `.h5` as QuPath detections, beside it (`<id>.geojson`).
fn write_patch_grid(
    slide: &Path,
    open: &patchtcga_slide::SlideOptions,
    geometry: &PatchGeometry,
    coords: &[[i64; 2]],
    h5: &Path,
) -> Result<(), LearnError> {
    let slide = Slide::open(slide, open)?;
    let footprint = slide.footprint(geometry);
    let tiles: Vec<_> = coords
        .iter()
        .map(|&[x, y]| patchtcga_slide::tile_object((x as f64, y as f64), footprint, None, Vec::new()))
        .collect();
    save_detections(&slide, &tiles, h5)?;
    Ok(())
}

/// Embeds every slide of `list` without a finished file into `<out>/<id>.h5` (and its patch grid
/// for QuPath, `<id>.geojson`), each written atomically as soon as its last batch is through; `on_slide` hears of each slide written (its
/// file and patch count) or failed. One slide's failure leaves the others to finish.
pub fn embed_slide_list(
    list: SlideList,
    backbone: &Backbone,
    progress: &indicatif::ProgressBar,
    mut on_slide: impl FnMut(&SlideRow, &Result<(PathBuf, usize), String>) + Send,
) -> Result<SlideListReport, LearnError> {
    let file = |row: &SlideRow, dir: &Path| dir.join(format!("{}.h5", row.id));
    let todo: Vec<&SlideRow> = list.rows.iter().filter(|r| !file(r, list.out).is_file()).collect();
    let jobs = todo
        .iter()
        .map(|r| {
            Ok(SlideJob {
                path: r.slide.clone(),
                corners: list.coords.map(|d| read_coords(&coords_file(d, &r.id))).transpose()?,
                roi: r.roi.clone(),
                mpp: r.mpp,
            })
        })
        .collect::<Result<Vec<_>, LearnError>>()?;
    std::fs::create_dir_all(list.out).map_err(|e| LearnError::io(list.out, e))?;
    let (mut done, mut failures) = (0, Vec::new());
    let start = std::time::Instant::now();
    let (o, p, open) = (&list.embedding, &list.provenance, list.reading.open);
    embed_slides(SlideBatches::start(jobs, list.reading)?, backbone, o, progress, |i, made| {
        let (row, out) = (todo[i], file(todo[i], list.out));
        let written = made.and_then(|f| {
            // The grid first: the `.h5` is what marks the slide done.
            write_patch_grid(&row.slide, &open.for_slide(row.mpp), &o.geometry, &f.coords, &out)?;
            write_h5(&out, &f, o, p)?;
            Ok(f.coords.len())
        });
        let outcome = written.map(|n| (out, n)).map_err(|e| e.to_string());
        on_slide(row, &outcome);
        match outcome {
            Ok(_) => done += 1,
            Err(e) => failures.push((row.slide.clone(), e)),
        }
    })?;
    Ok(SlideListReport {
        unreached: todo.len() - done - failures.len(),
        done,
        skipped: list.rows.len() - todo.len(),
        failures,
        patches: progress.position(),
        attempted: todo.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl SlideListReport {
    /// Slides that failed, unread ones included.
    pub fn failed(&self) -> usize {
        self.failures.len() + self.unreached
    }
}

/// `embedded 5120 patches of 3 slide(s) in 40.2 s: 127.36 patches/s, 0.075 slides/s` and a line
/// of slides embedded, already done and failed.
impl std::fmt::Display for SlideListReport {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (n, s) = (self.patches as f64, self.seconds);
        let slides = self.done + self.skipped + self.failed();
        writeln!(
            f,
            "embedded {} patches of {} slide(s) in {s:.1} s: {:.2} patches/s, {:.3} slides/s",
            self.patches,
            self.attempted,
            n / s,
            self.attempted as f64 / s
        )?;
        write!(f, "{slides} slide(s): {} embedded, {} already done, {} failed", self.done, self.skipped, self.failed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_come_from_a_csv_beside_h5_files_and_bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s1.csv"), "y,x,note\n300,100,a\n0,2048,b\n").unwrap();
        let file = coords_file(dir.path(), "s1");
        assert_eq!(read_coords(&file).unwrap(), [(100, 300), (2048, 0)]);
        std::fs::write(dir.path().join("s2.csv"), "x,y\n5,6\n-1,3\n").unwrap();
        let e = read_coords(&coords_file(dir.path(), "s2")).unwrap_err().to_string();
        assert!(e.contains("s2.csv") && e.contains("row 3"), "{e}");
        std::fs::write(dir.path().join("s3.csv"), "col,row\n1,2\n").unwrap();
        assert!(read_coords(&dir.path().join("s3.csv")).unwrap_err().to_string().contains("`x` and `y`"));
    }
}
