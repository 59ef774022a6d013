//! The patch loader: decodes images and makes a recipe's views on a pool of worker threads,
//! assembles them into contiguous `f32` NCHW batches (and `u8` masks), and hands them over
//! through a bounded prefetch queue.
//!
//! Sources: the release's patch layouts (through [`patchtcga_dataset::Index`], optionally a
//! split's subset) and the original PCam HDF5 files ([`pcam_samples`]).
//!
//! Sharding follows PyTorch's `DistributedSampler`: each rank takes a disjoint, equal share of
//! an order reshuffled every epoch; in evaluation every sample goes to one rank, once. Augmentation randomness is drawn per sample from
//! (seed, epoch, sample index), so batches are bit-identical whatever the number of workers.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image::{GrayImage, RgbImage};
use patchtcga_augment::{normalize, Recipe};
use patchtcga_dataset::Index;
use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub mod bench;
pub mod slides;

/// Loader errors, naming the file and the cause.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LoaderError {
    /// An image or mask could not be used.
    #[error("{path}: {cause}")]
    BadInput { path: PathBuf, cause: String },
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, LoaderError>;

/// Where a sample's pixels are.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// An image file (JPEG or PNG).
    File(PathBuf),
    /// Image `index` of an HDF5 array `x` of shape (N, H, W, 3), `u8` (the original PCam).
    H5 {
        /// The `*_x.h5` file.
        path: PathBuf,
        /// Position along the first axis.
        index: usize,
    },
}

impl ImageSource {
    /// The file the pixels come from.
    pub fn path(&self) -> &Path {
        match self {
            Self::File(p) | Self::H5 { path: p, .. } => p,
        }
    }
}

/// One image of the dataset with its label (and label mask).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Where the image is.
    pub image: ImageSource,
    /// Class id.
    pub label: i64,
    /// Label mask (segmentation).
    pub mask: Option<PathBuf>,
}

/// The samples of a dataset index, optionally only those at `subset` positions (a split's
/// `idx` list).
pub fn samples(index: &Index, subset: Option<&[u64]>) -> Result<Vec<Sample>> {
    let make = |i: usize| {
        let e = index
            .entries
            .get(i)
            .ok_or_else(|| LoaderError::Config(format!("index {i} past the {} images", index.entries.len())))?;
        // For segPANDA200 the label is the slide's grade folder; pixel classes are in the mask.
        Ok(Sample {
            image: ImageSource::File(index.root.join(&e.path)),
            label: e.label as i64,
            mask: e.mask.as_ref().map(|m| index.root.join(m)),
        })
    };
    match subset {
        Some(idx) => idx.iter().map(|&i| make(i as usize)).collect(),
        None => (0..index.entries.len()).map(make).collect(),
    }
}

/// The split names of the original PatchCamelyon files.
pub const PCAM_SPLITS: [&str; 3] = ["train", "valid", "test"];

/// The names a PatchCamelyon file (`part` `x` or `y`) of `split` goes by: the release's short
/// one, then the official download's.
fn pcam_names(split: &str, part: &str) -> [String; 2] {
    [format!("{split}_{part}.h5"), format!("camelyonpatch_level_2_split_{split}_{part}.h5")]
}

/// The first of `names` present in `dir`, unpacked or as downloaded (`.gz`).
fn pcam_file(dir: &Path, names: &[String; 2]) -> Option<PathBuf> {
    let candidates = names.iter().flat_map(|n| [dir.join(n), dir.join(format!("{n}.gz"))]);
    candidates.into_iter().find(|p| p.is_file())
}

/// Whether `dir` holds the original PatchCamelyon images of `split` under either naming,
/// unpacked or gzipped.
pub fn pcam_has_split(dir: &Path, split: &str) -> bool {
    pcam_file(dir, &pcam_names(split, "x")).is_some()
}

/// The samples of one split of the original PatchCamelyon release: `<dir>/<split>_x.h5`
/// (dataset `x`, N×96×96×3 `u8`) and `<dir>/<split>_y.h5` (dataset `y`, N×1×1×1 labels), or the
/// official download's `camelyonpatch_level_2_split_<split>_{x,y}.h5`, with `split` one of
/// `train`, `valid`, `test`. Files still gzipped (`.h5.gz`, as downloaded) are refused with the
/// command that unpacks them. Only the labels are read here; images are read one by one as the
/// loader needs them.
pub fn pcam_samples(dir: &Path, split: &str) -> Result<Vec<Sample>> {
    let bad = |p: &Path, cause: String| LoaderError::BadInput { path: p.to_path_buf(), cause };
    let (x_names, y_names) = (pcam_names(split, "x"), pcam_names(split, "y"));
    let looked_for = |names: &[String; 2]| format!("{} or {} (or .h5.gz)", names[0], names[1]);
    let xp = pcam_file(dir, &x_names)
        .ok_or_else(|| bad(dir, format!("no PatchCamelyon {split} images: looked for {}", looked_for(&x_names))))?;
    let yp = pcam_file(dir, &y_names)
        .ok_or_else(|| bad(&xp, format!("no labels beside it: looked for {}", looked_for(&y_names))))?;
    let gzipped: Vec<String> = [&xp, &yp]
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .map(|p| p.display().to_string())
        .collect();
    if let Some(first) = gzipped.first() {
        return Err(bad(
            Path::new(first),
            format!("still gzipped as downloaded; HDF5 reads it unpacked: run `gunzip -k {}`", gzipped.join(" ")),
        ));
    }
    let open = |p: &Path, name: &str| {
        hdf5_metno::File::open(p)
            .and_then(|f| f.dataset(name))
            .map_err(|e| bad(p, format!("cannot read dataset `{name}`: {e}")))
    };
    let x = open(&xp, "x")?;
    let shape = x.shape();
    if shape.len() != 4 || shape[3] != 3 {
        return Err(bad(&xp, format!("`x` has shape {shape:?}; PCam's is (N, 96, 96, 3)")));
    }
    let y = open(&yp, "y")?;
    let labels: Vec<u8> = y.read_raw().map_err(|e| bad(&yp, format!("cannot read labels: {e}")))?;
    if labels.len() != shape[0] {
        return Err(bad(&yp, format!("{} labels for {} images in {}", labels.len(), shape[0], xp.display())));
    }
    Ok(labels
        .into_iter()
        .enumerate()
        .map(|(index, l)| Sample { image: ImageSource::H5 { path: xp.clone(), index }, label: l as i64, mask: None })
        .collect())
}

/// Reads image `index` of the array `x` in `path`.
fn read_h5(path: &Path, index: usize) -> Result<RgbImage> {
    let bad = |cause: String| LoaderError::BadInput { path: path.to_path_buf(), cause };
    let x = hdf5_metno::File::open(path).and_then(|f| f.dataset("x")).map_err(|e| bad(e.to_string()))?;
    let img: ndarray::Array3<u8> =
        x.read_slice(ndarray::s![index, .., .., ..]).map_err(|e| bad(format!("image {index}: {e}")))?;
    let (h, w, _) = img.dim();
    RgbImage::from_raw(w as u32, h as u32, img.into_raw_vec_and_offset().0)
        .ok_or_else(|| bad(format!("image {index} is not RGB")))
}

/// What to do with an image that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadInput {
    /// Leave the sample out of its batch and list it (see [`Epoch::skipped`]).
    Skip,
    /// End the epoch with an error naming the file.
    Fail,
}

/// Loader settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch on this rank.
    pub batch_size: usize,
    /// Reshuffle every epoch (training) or keep dataset order (evaluation).
    pub shuffle: bool,
    /// Drop the tail so that every rank has equal full batches; otherwise keep a last partial
    /// batch, and when shuffling pad each rank's share by repeating samples (as
    /// DistributedSampler); in dataset order (evaluation) the shares have no repeats.
    pub drop_last: bool,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Worker threads.
    pub workers: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Channel means for normalisation ([0, 1] scale).
    pub mean: [f32; 3],
    /// Channel standard deviations.
    pub std: [f32; 3],
    /// Policy for unreadable images.
    pub on_bad_input: OnBadInput,
}

impl Default for LoaderConfig {
    /// One rank reading in dataset order, 64 per batch, one worker, two batches ahead, ImageNet
    /// normalisation, failing on an unreadable image.
    fn default() -> Self {
        Self {
            batch_size: 64,
            shuffle: false,
            drop_last: false,
            seed: 0,
            rank: 0,
            world_size: 1,
            workers: 1,
            prefetch: 2,
            mean: patchtcga_augment::IMAGENET_MEAN,
            std: patchtcga_augment::IMAGENET_STD,
            on_bad_input: OnBadInput::Fail,
        }
    }
}

/// One view slot of a batch: `shape` = (N, 3, size, size), values in `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewBatch {
    /// N × 3 × H × W values, NCHW.
    pub data: Vec<f32>,
    /// (N, C, H, W).
    pub shape: [usize; 4],
}

/// A batch: one [`ViewBatch`] per view of the recipe, labels, and masks of the first view.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Views, in recipe order.
    pub views: Vec<ViewBatch>,
    /// Class ids.
    pub labels: Vec<i64>,
    /// N × H × W class ids of the first view, when the samples have masks.
    pub masks: Option<Vec<u8>>,
    /// Dataset positions of the samples.
    pub indices: Vec<usize>,
}

/// Makes batches of a recipe's views from samples.
pub struct Loader {
    samples: Arc<Vec<Sample>>,
    recipe: Arc<Recipe>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
}

impl Loader {
    /// A loader over `samples`.
    pub fn new(samples: Vec<Sample>, recipe: Recipe, config: LoaderConfig) -> Result<Self> {
        if samples.is_empty() {
            return Err(LoaderError::Config("no samples to load".into()));
        }
        if config.batch_size == 0 || config.world_size == 0 || config.rank >= config.world_size {
            return Err(LoaderError::Config(format!(
                "batch size {} with rank {} of world size {} cannot work",
                config.batch_size, config.rank, config.world_size
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers.max(1))
            .thread_name(|i| format!("patchtcga-loader-{i}"))
            .build()
            .map_err(|e| LoaderError::Config(format!("cannot start workers: {e}")))?;
        Ok(Self { samples: Arc::new(samples), recipe: Arc::new(recipe), config, pool: Arc::new(pool) })
    }

    /// The dataset positions this rank visits in `epoch`, in order.
    pub fn shard(&self, epoch: u64) -> Vec<usize> {
        shard(self.samples.len(), &self.config, epoch)
    }

    /// Number of batches this rank gets per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.shard(0).len();
        if self.config.drop_last {
            n / self.config.batch_size
        } else {
            n.div_ceil(self.config.batch_size)
        }
    }

    /// Batches an epoch prepares ahead of its consumer: once this many or fewer are left, its
    /// producer is done and the next epoch can start preparing.
    pub fn lookahead(&self) -> usize {
        self.config.prefetch.max(1)
    }

    /// Images delivered in batches over about `seconds` (epochs run back to back), and the
    /// seconds taken: the clock starts once the first batch has arrived, as
    /// `bench/loader_torchvision.py` times torchvision's loader.
    pub fn throughput(&self, seconds: f64) -> Result<(usize, f64)> {
        let (mut start, mut images, mut epoch) = (None::<std::time::Instant>, 0, 0);
        loop {
            for batch in self.epoch(epoch) {
                let n = batch?.labels.len();
                let Some(s) = start else {
                    start = Some(std::time::Instant::now());
                    continue;
                };
                images += n;
                if s.elapsed().as_secs_f64() >= seconds {
                    return Ok((images, s.elapsed().as_secs_f64()));
                }
            }
            epoch += 1;
        }
    }

    /// Starts producing `epoch`'s batches in the background.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        self.epoch_from(epoch, 0)
    }

    /// Like [`Loader::epoch`], starting at batch `first` (a resumed run's loader position); the
    /// batches are the same as those of a whole epoch from `first` on.
    pub fn epoch_from(&self, epoch: u64, first: usize) -> Epoch {
        let order = self.shard(epoch);
        let size = self.config.batch_size;
        let mut batches: Vec<Vec<usize>> = order.chunks(size).map(<[usize]>::to_vec).collect();
        if self.config.drop_last && batches.last().is_some_and(|b| b.len() < size) {
            batches.pop();
        }
        batches.drain(..first.min(batches.len()));
        let (tx, rx) = sync_channel(self.config.prefetch.max(1));
        let skipped = Arc::new(Mutex::new(Vec::new()));
        let (samples, recipe, config, pool, sk) =
            (self.samples.clone(), self.recipe.clone(), self.config.clone(), self.pool.clone(), skipped.clone());
        let producer = std::thread::spawn(move || {
            for indices in batches {
                let loaded: Vec<(usize, Result<SampleViews>)> = pool.install(|| {
                    indices
                        .par_iter()
                        .map(|&i| (i, sample_views(&samples[i], &recipe, config.seed, epoch, i)))
                        .collect()
                });
                let mut kept = Vec::with_capacity(loaded.len());
                for (i, r) in loaded {
                    match r {
                        Ok(l) => kept.push((i, l)),
                        Err(e) if config.on_bad_input == OnBadInput::Skip => {
                            sk.lock().expect("skip list").push(e);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                if kept.is_empty() {
                    continue;
                }
                let batch = assemble(kept, &samples, &config);
                if tx.send(batch).is_err() {
                    return; // the consumer stopped listening
                }
            }
        });
        Epoch { rx, producer: Some(producer), skipped }
    }
}

/// An epoch's batches, in order; iterating ends after the last batch or the first error.
pub struct Epoch {
    rx: Receiver<Result<Batch>>,
    producer: Option<JoinHandle<()>>,
    skipped: Arc<Mutex<Vec<LoaderError>>>,
}

impl Iterator for Epoch {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        let item = self.rx.recv().ok();
        if item.is_none() {
            if let Some(h) = self.producer.take() {
                if h.join().is_err() {
                    return Some(Err(LoaderError::Config("the loader's producer thread failed".into())));
                }
            }
        }
        item
    }
}

impl Epoch {
    /// The samples skipped so far under [`OnBadInput::Skip`], each naming the file and cause.
    pub fn skipped(&self) -> Vec<LoaderError> {
        self.skipped.lock().expect("skip list").clone()
    }
}

fn shard(n: usize, c: &LoaderConfig, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if c.shuffle {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(c.seed.wrapping_add(epoch)));
    }
    let w = c.world_size;
    let total = match (c.drop_last, c.shuffle) {
        (true, _) => n / w * w,
        (false, true) => n.div_ceil(w) * w,
        (false, false) => n, // evaluation: every sample once, shares differing by one at most
    };
    let padded: Vec<usize> = order.iter().copied().cycle().take(total).collect();
    padded.into_iter().skip(c.rank).step_by(w).collect()
}

/// One sample's views, as the loader makes them.
#[derive(Debug, Clone)]
pub struct SampleViews {
    /// The recipe's views, in order.
    pub views: Vec<RgbImage>,
    /// The label mask cut as the first view was.
    pub mask: Option<GrayImage>,
}

fn sample_seed(seed: u64, epoch: u64, index: usize) -> u64 {
    // SplitMix64 of the three, so neighbouring samples get unrelated streams.
    let mut z = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED69);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The recipe's views of sample `s` at dataset position `index` in `epoch`: the same pixels
/// whichever worker, rank or caller makes them (the randomness comes from seed, epoch and index).
pub fn sample_views(s: &Sample, recipe: &Recipe, seed: u64, epoch: u64, index: usize) -> Result<SampleViews> {
    let bad = |path: &Path, cause: String| LoaderError::BadInput { path: path.to_path_buf(), cause };
    let work = || -> Result<SampleViews> {
        let image = match &s.image {
            ImageSource::File(p) => decode(p)?,
            ImageSource::H5 { path, index } => read_h5(path, *index)?,
        };
        let mask = match &s.mask {
            Some(m) => {
                let img = image::open(m).map_err(|e| bad(m, format!("unreadable label mask: {e}")))?;
                Some(GrayImage::from_fn(img.width(), img.height(), {
                    let rgb = img.to_rgb8();
                    move |x, y| image::Luma([rgb.get_pixel(x, y).0[0]])
                }))
            }
            None => None,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(seed, epoch, index));
        let mut views = Vec::with_capacity(recipe.views.len());
        let mut first_mask = None;
        for (k, spec) in recipe.views.iter().enumerate() {
            let v = spec.apply(&image, mask.as_ref(), &mut rng).map_err(|e| bad(s.image.path(), e.to_string()))?;
            if k == 0 {
                first_mask = v.mask;
            }
            views.push(v.image);
        }
        Ok(SampleViews { views, mask: first_mask })
    };
    catch_unwind(AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err(bad(s.image.path(), "internal error while decoding".into())))
}

/// Decodes a JPEG with libjpeg-turbo, anything else with the `image` crate.
fn decode(path: &Path) -> Result<RgbImage> {
    let bad = |cause: String| LoaderError::BadInput { path: path.to_path_buf(), cause };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let is_jpeg =
        path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "jpg" | "JPG" | "jpeg" | "JPEG"));
    if is_jpeg {
        let img = turbojpeg::decompress(&bytes, turbojpeg::PixelFormat::RGB)
            .map_err(|e| bad(format!("unreadable JPEG: {e}")))?;
        let (w, h) = (img.width, img.height);
        // Rows are packed (pitch = 3 × width) for RGB, so the buffer becomes the image as it is.
        let pixels = if img.pitch == 3 * w {
            img.pixels
        } else {
            img.pixels.chunks(img.pitch).take(h).flat_map(|row| row[..3 * w].to_vec()).collect()
        };
        return RgbImage::from_raw(w as u32, h as u32, pixels)
            .ok_or_else(|| bad("decoded buffer of the wrong size".into()));
    }
    Ok(image::load_from_memory(&bytes).map_err(|e| bad(format!("unreadable image: {e}")))?.to_rgb8())
}

fn assemble(kept: Vec<(usize, SampleViews)>, samples: &[Sample], c: &LoaderConfig) -> Result<Batch> {
    let n = kept.len();
    let n_views = kept[0].1.views.len();
    let mut views = Vec::with_capacity(n_views);
    for v in 0..n_views {
        let (w, h) = kept[0].1.views[v].dimensions();
        let plane = 3 * (w * h) as usize;
        let mut data = vec![0f32; n * plane];
        data.par_chunks_mut(plane).zip(&kept).try_for_each(|(out, (i, l))| {
            normalize(&l.views[v], c.mean, c.std, out).map_err(|e| LoaderError::BadInput {
                path: samples[*i].image.path().to_path_buf(),
                cause: e.to_string(),
            })
        })?;
        views.push(ViewBatch { data, shape: [n, 3, h as usize, w as usize] });
    }
    let masks = kept[0].1.mask.is_some().then(|| {
        kept.iter().flat_map(|(_, l)| l.mask.as_ref().map(|m| m.as_raw().clone()).unwrap_or_default()).collect()
    });
    Ok(Batch {
        views,
        labels: kept.iter().map(|(i, _)| samples[*i].label).collect(),
        masks,
        indices: kept.iter().map(|(i, _)| *i).collect(),
    })
}
