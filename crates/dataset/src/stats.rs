//! Dataset statistics: patch and slide counts per class, per-channel mean and standard
//! deviation (the numbers that go into `image_stats`), label-mask class frequencies, and a
//! mosaic of sample patches per class.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use image::RgbImage;
use indicatif::ProgressBar;
use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::{DatasetError, DatasetKind, Entry, Index, Result};

/// Options of `patchtcga stats`.
#[derive(clap::Args)]
pub struct StatsArgs {
    /// Dataset root.
    pub dataset: PathBuf,
    /// Layout (default: detected).
    #[arg(long, value_enum)]
    pub layout: Option<DatasetKind>,
    /// Measure pixels on this many random images instead of all.
    #[arg(long)]
    pub sample: Option<usize>,
    /// Write a mosaic PNG of sample patches, one row per class.
    #[arg(long)]
    pub mosaic: Option<PathBuf>,
    /// Patches per class in the mosaic.
    #[arg(long, default_value_t = 8)]
    pub per_class: usize,
    /// Seed for the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// A dataset's statistics and mosaic, as [`StatsArgs::run`] made them.
pub struct StatsRun {
    /// Images the release's loaders would skip or misread (a note for the user).
    pub problems: usize,
    header: String,
    pub stats: Stats,
    mosaic: Option<String>,
}

impl StatsArgs {
    /// Counts, measures and (with `--mosaic`) draws the dataset.
    pub fn run(&self, progress: &ProgressBar) -> Result<StatsRun> {
        let index = Index::scan(&self.dataset, self.layout)?;
        let stats = compute(&index, self.sample, self.seed, progress)?;
        let (name, root) = (index.kind.name(), self.dataset.display());
        let header = format!("{name} dataset at {root}: {} patches from {} slides", stats.patches, stats.slides);
        let mosaic = match &self.mosaic {
            Some(path) => {
                let (img, rows) = mosaic(&index, self.per_class, 128, self.seed)?;
                img.save(path).map_err(|e| DatasetError::invalid(path, format!("cannot write: {e}")))?;
                Some(format!("mosaic {} (rows: {})", path.display(), rows.join(", ")))
            }
            None => None,
        };
        Ok(StatsRun { problems: index.problems.len(), header, stats, mosaic })
    }
}

/// The header line, the statistics, and where the mosaic went.
impl std::fmt::Display for StatsRun {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}\n{}", self.header, self.stats)?;
        match &self.mosaic {
            Some(line) => write!(f, "\n{line}"),
            None => Ok(()),
        }
    }
}

/// Counts of one class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassCount {
    /// Class folder name.
    pub name: String,
    /// Class id.
    pub label: u32,
    /// Patches.
    pub patches: usize,
    /// Distinct slides.
    pub slides: usize,
}

/// Statistics of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Per class, in class-folder order.
    pub classes: Vec<ClassCount>,
    /// All patches.
    pub patches: usize,
    /// All distinct slides.
    pub slides: usize,
    /// Images whose pixels were measured.
    pub measured: usize,
    /// Per-channel (R, G, B) mean of pixel values scaled to [0, 1].
    pub mean: [f64; 3],
    /// Per-channel standard deviation over all measured pixels, same scale.
    pub std: [f64; 3],
    /// Pixels per label-mask class 0–5 (segPANDA200), over the measured images.
    pub mask_pixels: Option<[u64; 6]>,
}

/// The counts per class, the pixel statistics as `image_stats` takes them and the mask classes'
/// shares, as `patchtcga stats` prints them.
impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        writeln!(f, "{:<20} {:>5} {:>10} {:>8}", "class", "id", "patches", "slides")?;
        for c in &self.classes {
            writeln!(f, "{:<20} {:>5} {:>10} {:>8}", c.name, c.label, c.patches, c.slides)?;
        }
        let [m, s] = [self.mean, self.std];
        writeln!(f, "pixels of {} image(s), RGB in [0, 1]:", self.measured)?;
        writeln!(f, "image_stats mean = ({:.4}, {:.4}, {:.4})", m[0], m[1], m[2])?;
        write!(f, "image_stats std  = ({:.4}, {:.4}, {:.4})", s[0], s[1], s[2])?;
        if let Some(pixels) = self.mask_pixels {
            let total = pixels.iter().sum::<u64>().max(1) as f64;
            for (k, n) in pixels.iter().enumerate() {
                let share = 100.0 * *n as f64 / total;
                write!(f, "\nmask class {k} ({}): {share:.2}%", patchtcga_slide::SEGPANDA_CLASSES[k])?;
            }
        }
        Ok(())
    }
}

#[derive(Default, Clone, Copy)]
struct Sums {
    n: u64,
    s: [f64; 3],
    s2: [f64; 3],
    mask: [u64; 6],
}

impl Sums {
    fn add(mut self, o: Sums) -> Sums {
        self.n += o.n;
        for c in 0..3 {
            self.s[c] += o.s[c];
            self.s2[c] += o.s2[c];
        }
        for k in 0..6 {
            self.mask[k] += o.mask[k];
        }
        self
    }
}

/// Counts every entry, and measures the pixels of all images or of `sample` of them drawn with
/// `seed`. An unreadable image is an error naming it.
pub fn compute(index: &Index, sample: Option<usize>, seed: u64, progress: &ProgressBar) -> Result<Stats> {
    let mut classes: BTreeMap<(u32, String), (usize, BTreeSet<&str>)> = BTreeMap::new();
    for e in &index.entries {
        let c = classes.entry((e.label, e.label_name.clone())).or_default();
        c.0 += 1;
        c.1.insert(&e.slide);
    }
    let slides: BTreeSet<&str> = index.entries.iter().map(|e| e.slide.as_str()).collect();
    let chosen = pick(&index.entries, sample, seed);
    progress.set_length(chosen.len() as u64);
    let sums = chosen
        .par_iter()
        .map(|e| {
            let img = open_rgb(index, e)?;
            let mut s = Sums { n: img.width() as u64 * img.height() as u64, ..Default::default() };
            // Integer sums per image are exact; scale once.
            let (mut si, mut s2i) = ([0u64; 3], [0u64; 3]);
            for p in img.pixels() {
                for c in 0..3 {
                    let v = p.0[c] as u64;
                    si[c] += v;
                    s2i[c] += v * v;
                }
            }
            for c in 0..3 {
                s.s[c] = si[c] as f64 / 255.0;
                s.s2[c] = s2i[c] as f64 / (255.0 * 255.0);
            }
            if let Some(m) = &e.mask {
                let path = index.root.join(m);
                let mask = image::open(&path).map_err(|err| DatasetError::invalid(&path, err.to_string()))?.to_rgb8();
                for p in mask.pixels() {
                    let k = p.0[0] as usize;
                    if k >= 6 {
                        return Err(DatasetError::invalid(
                            &path,
                            format!("mask value {k} outside the 6 segPANDA200 classes"),
                        ));
                    }
                    s.mask[k] += 1;
                }
            }
            progress.inc(1);
            Ok(s)
        })
        .try_reduce(Sums::default, |a, b| Ok(a.add(b)))?;
    let n = sums.n.max(1) as f64;
    let mean = sums.s.map(|s| s / n);
    let std = [0, 1, 2].map(|c| (sums.s2[c] / n - mean[c] * mean[c]).max(0.0).sqrt());
    Ok(Stats {
        classes: classes
            .into_iter()
            .map(|((label, name), (patches, slides))| ClassCount { name, label, patches, slides: slides.len() })
            .collect(),
        patches: index.entries.len(),
        slides: slides.len(),
        measured: chosen.len(),
        mean,
        std,
        mask_pixels: index.entries.first().and_then(|e| e.mask.as_ref()).map(|_| sums.mask),
    })
}

fn pick(entries: &[Entry], sample: Option<usize>, seed: u64) -> Vec<&Entry> {
    let mut all: Vec<&Entry> = entries.iter().collect();
    if let Some(n) = sample {
        if n < all.len() {
            all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            all.truncate(n);
        }
    }
    all
}

fn open_rgb(index: &Index, e: &Entry) -> Result<RgbImage> {
    let path = index.root.join(&e.path);
    Ok(image::open(&path).map_err(|err| DatasetError::invalid(&path, format!("unreadable image: {err}")))?.to_rgb8())
}

/// A mosaic with one row per class of up to `per_class` patches (drawn with `seed`), each
/// shrunk to `tile` pixels, the class name written at the left of its row; returns the picture
/// and the class names of its rows.
pub fn mosaic(index: &Index, per_class: usize, tile: u32, seed: u64) -> Result<(RgbImage, Vec<String>)> {
    let mut by_class: BTreeMap<(u32, String), Vec<&Entry>> = BTreeMap::new();
    for e in &index.entries {
        by_class.entry((e.label, e.label_name.clone())).or_default().push(e);
    }
    if by_class.is_empty() {
        return Err(DatasetError::invalid(&index.root, "holds no images"));
    }
    let gap = 4;
    let cols = by_class.values().map(|v| v.len().min(per_class)).max().unwrap_or(1) as u32;
    let rows = by_class.len() as u32;
    let scale = (tile / 64).clamp(1, 2);
    let label_w = by_class.keys().map(|(_, n)| n.chars().count() as u32).max().unwrap_or(0) * 8 * scale + 2 * gap;
    let mut out = RgbImage::from_pixel(
        label_w + cols * (tile + gap) + gap,
        rows * (tile + gap) + gap,
        image::Rgb([255, 255, 255]),
    );
    let mut names = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (r, ((_, name), mut entries)) in by_class.into_iter().enumerate() {
        entries.shuffle(&mut rng);
        entries.truncate(per_class);
        let tiles: Vec<RgbImage> = entries
            .par_iter()
            .map(|e| Ok(image::imageops::thumbnail(&open_rgb(index, e)?, tile, tile)))
            .collect::<Result<_>>()?;
        let top = gap + r as u32 * (tile + gap);
        draw_text(&mut out, &name, gap, top + tile / 2 - 4 * scale, scale);
        for (c, t) in tiles.iter().enumerate() {
            let x = label_w + gap + c as u32 * (tile + gap);
            image::imageops::replace(&mut out, t, x.into(), top.into());
        }
        names.push(name);
    }
    Ok((out, names))
}

/// Writes `text` in black with the 8×8 bitmap font, each font pixel `scale` pixels wide.
fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32) {
    use font8x8::UnicodeFonts;
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8u32 {
                if bits >> gx & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (px, py) = (x + (i as u32 * 8 + gx) * scale + dx, y + gy as u32 * scale + dy);
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, image::Rgb([0, 0, 0]));
                            }
                        }
                    }
                }
            }
        }
    }
}
