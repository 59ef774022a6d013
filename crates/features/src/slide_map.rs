//! Whole-slide maps: a network slid over a slide's tissue in windows (overlapping ones averaged),
//! as a class-probability heat map (a classifier) or a class map (a segmentation network), and
//! the picture of either over the slide's thumbnail.

use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

use patchtcga_model::inception::TransformInput;
use patchtcga_model::{load, Arch, Checkpoint, Classifier, ImportOptions, SegHead, SegNet};
use patchtcga_slide::{tile_object, PatchGeometry, QuPathObject, Roi, Slide, TissueMask, TissueParams};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

use patchtcga_engine::plot::{self, COLOURS};
use patchtcga_engine::LearnError;

use crate::qupath::save_detections;
use crate::slide_features::patch_batch;

/// A network's reading of windows, on a grid of cells per window side.
pub trait WindowModel {
    /// Cells per window side the network resolves itself (1 for a classifier).
    fn cells(&self) -> usize;
    /// Per window of the normalised batch `x` (N, 3, s, s): its values on a `g`×`g` grid,
    /// (N, channels, g, g).
    fn values(&self, x: &Tensor, g: i64) -> Tensor;
    /// The value of a cell from its summed channels and the number of windows that saw it.
    fn cell(&self, sums: &[f32], seen: u32) -> f32;
    /// One line on the map's cells on tissue (finite values).
    fn summary(&self, scored: &[f32]) -> String;
    /// The class drawn as a probability, or `None` for a class map.
    fn class(&self) -> Option<i64>;
}

/// The network a fine-tuned checkpoint holds, as the reader of windows its head makes it: the
/// classifier's probability of `class`, or a segmentation network's (`seg_head`) class map. The
/// head's width is read from the checkpoint.
pub fn load_window_model(
    vs: &tch::nn::VarStore,
    arch: Arch,
    weights: &Path,
    seg_head: Option<SegHead>,
    class: i64,
    image_size: i64,
) -> Result<Box<dyn WindowModel>, LearnError> {
    // A classifier's Inception input transform is the one its run recorded in the weights.
    let (spec, _) = arch.spec_for_weights(image_size, weights, TransformInput::Auto)?;
    let opts = ImportOptions { with_head: true, ..Default::default() };
    Ok(match seg_head {
        Some(head) => {
            let classes = head_classes(weights, "classifier.4.weight")?;
            let net = SegNet::new(&vs.root(), spec, head, classes)?;
            load(vs, weights, "classifier", &opts)?;
            Box::new(SegmentationClasses { net })
        }
        None => {
            let classes = head_classes(weights, &format!("{}.weight", spec.head_name()))?;
            if class < 0 || class >= classes {
                return Err(LearnError::Config(format!(
                    "--class {class}: the classifier in {} has {classes} classes",
                    weights.display()
                )));
            }
            let net = Classifier::new(&vs.root(), spec, classes, 0.0);
            load(vs, weights, spec.head_name(), &opts)?;
            Box::new(ClassProbability { net, class })
        }
    })
}

/// The number of classes of the head stored in a checkpoint (`name`: its last layer's weight).
fn head_classes(weights: &Path, name: &str) -> Result<i64, LearnError> {
    Checkpoint::open(weights)?
        .tensors()
        .iter()
        .find(|t| t.name == name || t.name.ends_with(&format!(".{name}")))
        .map(|t| t.shape[0])
        .ok_or_else(|| {
            LearnError::Config(format!(
                "{}: no classification head ({name}); infer needs a fine-tuned network",
                weights.display()
            ))
        })
}

/// A classifier's probability of one class per window.
pub struct ClassProbability {
    pub net: Classifier,
    pub class: i64,
}

impl WindowModel for ClassProbability {
    fn cells(&self) -> usize {
        1
    }

    fn values(&self, x: &Tensor, g: i64) -> Tensor {
        let y = tch::no_grad(|| self.net.forward_t(x, false)).to_kind(Kind::Float).softmax(1, Kind::Float);
        y.select(1, self.class).view([-1, 1, 1, 1]).expand([-1, 1, g, g], false)
    }

    fn cell(&self, sums: &[f32], seen: u32) -> f32 {
        sums[0] / seen as f32
    }

    fn summary(&self, scored: &[f32]) -> String {
        let high = scored.iter().filter(|&&v| v >= 0.5).count();
        let share = 100.0 * high as f64 / scored.len().max(1) as f64;
        format!("class {} probability ≥ 0.5 on {high} ({share:.1} %)", self.class)
    }

    fn class(&self) -> Option<i64> {
        Some(self.class)
    }
}

/// A segmentation network's most probable class per cell (class probabilities averaged over
/// the windows that saw the cell, then the arg max).
pub struct SegmentationClasses {
    pub net: SegNet,
}

/// Cells per window side of a segmentation map.
const SEGMENTATION_CELLS: usize = 8;

impl WindowModel for SegmentationClasses {
    fn cells(&self) -> usize {
        SEGMENTATION_CELLS
    }

    fn values(&self, x: &Tensor, g: i64) -> Tensor {
        let y = tch::no_grad(|| self.net.forward_t(x, false)).to_kind(Kind::Float).softmax(1, Kind::Float);
        y.adaptive_avg_pool2d([g, g])
    }

    fn cell(&self, sums: &[f32], _seen: u32) -> f32 {
        sums.iter().enumerate().fold((0, f32::MIN), |b, (c, &p)| if p > b.1 { (c, p) } else { b }).0 as f32
    }

    fn summary(&self, scored: &[f32]) -> String {
        let shares: Vec<String> = (0..COLOURS.len())
            .filter_map(|class| {
                let n = scored.iter().filter(|&&v| v as usize == class).count();
                (n > 0).then(|| format!("class {class} {:.1} %", 100.0 * n as f64 / scored.len() as f64))
            })
            .collect();
        format!("area: {}", shares.join(", "))
    }

    fn class(&self) -> Option<i64> {
        None
    }
}

/// How the windows are laid over the slide.
#[derive(Debug, Clone)]
pub struct MapOptions {
    /// Window field of view in µm.
    pub field_um: f64,
    /// Network input side in pixels.
    pub image_size: u32,
    /// Windows per window side: 2 moves the window by half a window.
    pub overlap: usize,
    /// Least tissue fraction of a window for it to be read.
    pub min_tissue: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub batch_size: usize,
    pub device: Device,
    /// Only the tissue inside this region of interest (QuPath GeoJSON).
    pub roi: Option<std::path::PathBuf>,
    /// Windows over the whole slide, the last ones running past its right and bottom edges
    /// (read as background); otherwise only whole windows inside it.
    pub cover: bool,
}

/// A map over a slide: one value per cell (NaN off tissue), row-major.
pub struct SlideMap {
    pub values: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    /// A cell's level-0 size in pixels.
    pub cell: (f64, f64),
    /// Windows read (on tissue), and in the whole grid.
    pub windows: usize,
    pub grid_windows: usize,
}

/// The window grid of a slide: windows `stride` apart, each covering `g`×`g` cells, `step` cells
/// apart.
struct Grid {
    g: usize,
    step: usize,
    stride: (f64, f64),
    footprint: (f64, f64),
    rows: usize,
    cols: usize,
}

impl Grid {
    fn new(
        slide: &Slide,
        geometry: &PatchGeometry,
        cells: usize,
        overlap: usize,
        cover: bool,
    ) -> Result<Self, LearnError> {
        let n = overlap;
        let g = if cells == 1 { n } else { cells };
        if n == 0 || g % n != 0 {
            return Err(LearnError::Config(format!(
                "overlap {n}: a segmentation map needs 1, 2, 4 or 8 windows per window side"
            )));
        }
        let footprint = slide.footprint(geometry);
        let stride = (footprint.0 / n as f64, footprint.1 / n as f64);
        let (w, h) = slide.dimensions();
        let count = |extent: f64, field: f64, s: f64| match (cover, extent < field) {
            (true, _) => ((extent - field).max(0.0) / s).ceil() as usize + 1,
            (false, true) => 0,
            (false, false) => ((extent - field) / s).floor() as usize + 1,
        };
        let (cols, rows) = (count(w as f64, footprint.0, stride.0), count(h as f64, footprint.1, stride.1));
        if cols == 0 || rows == 0 {
            return Err(LearnError::Config(format!("{}: smaller than one window", slide.path().display())));
        }
        Ok(Self { g, step: g / n, stride, footprint, rows, cols })
    }

    /// Rows and columns of cells of the map.
    fn cells(&self) -> (usize, usize) {
        ((self.rows - 1) * self.step + self.g, (self.cols - 1) * self.step + self.g)
    }
}

/// Writes `picture` to the PNG `out` and the raw `values` beside it (`.npy`, whose path is
/// returned), both atomically.
pub fn save_picture(picture: &RgbImage, values: &Tensor, out: &Path) -> Result<PathBuf, LearnError> {
    let failed = |path: &Path, e: String| LearnError::Config(format!("{}: cannot write ({e})", path.display()));
    patchtcga_atomic::write_with(
        out,
        |tmp| picture.save_with_format(tmp, image::ImageFormat::Png).map_err(|e| failed(out, e.to_string())),
        |e| LearnError::io(out, e),
    )?;
    let npy = out.with_extension("npy");
    patchtcga_atomic::write_with(
        &npy,
        |tmp| values.write_npy(tmp).map_err(|e| failed(&npy, e.to_string())),
        |e| LearnError::io(&npy, e),
    )?;
    Ok(npy)
}

/// Draws `map` over the slide's thumbnail into the PNG `out`, the raw map (rows × columns, NaN
/// off tissue) beside it as `.npy`, whose path is returned, and its cells on tissue as QuPath
/// detections with their value as a measurement (`.geojson`).
pub fn save_map(slide: &Slide, map: &SlideMap, legend: Legend, out: &Path) -> Result<PathBuf, LearnError> {
    let values = Tensor::from_slice(&map.values).reshape([map.rows as i64, map.cols as i64]);
    let measurement = legend.measurement();
    let cells: Vec<QuPathObject> = map
        .values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| {
            let (row, col) = ((i / map.cols) as f64, (i % map.cols) as f64);
            tile_object((col * map.cell.0, row * map.cell.1), map.cell, None, vec![(measurement.clone(), v as f64)])
        })
        .collect();
    save_detections(slide, &cells, out)?;
    save_picture(&draw(slide, map, legend)?, &values, out)
}

/// Slides `model` over the tissue of `slide` and averages the windows into a map.
pub fn slide_map(
    slide: &Slide,
    model: &dyn WindowModel,
    o: &MapOptions,
    progress: &indicatif::ProgressBar,
) -> Result<SlideMap, LearnError> {
    let mut tissue = TissueMask::detect(slide, &TissueParams::default())?;
    if let Some(roi) = &o.roi {
        tissue = tissue.within(&Roi::load(roi, &slide.annotation_frame())?);
    }
    let geometry = PatchGeometry { mpp: o.field_um / o.image_size as f64, size: o.image_size };
    let grid = Grid::new(slide, &geometry, model.cells(), o.overlap, o.cover)?;
    let (fw, fh) = grid.footprint;
    let windows: Vec<(usize, usize)> = (0..grid.rows)
        .flat_map(|r| (0..grid.cols).map(move |c| (r, c)))
        .filter(|&(r, c)| tissue.fraction(c as f64 * grid.stride.0, r as f64 * grid.stride.1, fw, fh) >= o.min_tissue)
        .collect();
    let (mrows, mcols) = grid.cells();
    // Per cell: summed values (every channel) and the windows that saw it.
    let (mut sums, mut seen): (Vec<f32>, Vec<u32>) = (Vec::new(), vec![0; mrows * mcols]);
    progress.set_length(windows.len() as u64);
    for chunk in windows.chunks(o.batch_size.max(1)) {
        let at: Vec<(u32, u32)> = chunk
            .iter()
            .map(|&(r, c)| ((c as f64 * grid.stride.0) as u32, (r as f64 * grid.stride.1) as u32))
            .collect();
        let x = patch_batch(slide, &geometry, &at, o.mean, o.std)?.to_device(o.device);
        let v = model.values(&x, grid.g as i64);
        let channels = v.size()[1] as usize;
        sums.resize(channels * mrows * mcols, 0.0);
        let v = Vec::<f32>::try_from(v.to_device(Device::Cpu).contiguous().reshape([-1]))?;
        let g = grid.g;
        for (t, &(r, c)) in chunk.iter().enumerate() {
            for (i, j) in (0..g).flat_map(|i| (0..g).map(move |j| (i, j))) {
                let cell = (r * grid.step + i) * mcols + c * grid.step + j;
                seen[cell] += 1;
                for ch in 0..channels {
                    sums[ch * mrows * mcols + cell] += v[((t * channels + ch) * g + i) * g + j];
                }
            }
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    let channels = sums.len() / (mrows * mcols).max(1);
    let values = (0..mrows * mcols)
        .map(|cell| match seen[cell] {
            0 => f32::NAN,
            k => model.cell(&(0..channels).map(|ch| sums[ch * mrows * mcols + cell]).collect::<Vec<_>>(), k),
        })
        .collect();
    let cell = (fw / grid.g as f64, fh / grid.g as f64);
    Ok(SlideMap { values, rows: mrows, cols: mcols, cell, windows: windows.len(), grid_windows: grid.rows * grid.cols })
}

/// Blue (0) → red (1), through white.
fn colour(p: f32) -> [f32; 3] {
    let p = p.clamp(0.0, 1.0);
    if p < 0.5 {
        let t = p * 2.0;
        [t, t, 1.0]
    } else {
        let t = (1.0 - p) * 2.0;
        [1.0, t, t]
    }
}

/// What a map's values are, for its colours and legend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legend {
    /// A class's probability in [0, 1].
    Probability(i64),
    /// Segmentation classes (0 = background, untinted).
    Classes,
    /// A MIL model's attention as a percentile in [0, 1].
    Attention,
}

impl Legend {
    /// The name of the measurement a map's cells carry in QuPath.
    fn measurement(&self) -> String {
        match self {
            Legend::Probability(c) => format!("probability of class {c}"),
            Legend::Classes => "class".into(),
            Legend::Attention => "attention percentile".into(),
        }
    }

    /// The legend of a window model's map.
    pub fn of(model: &dyn WindowModel) -> Self {
        model.class().map_or(Legend::Classes, Legend::Probability)
    }
}

/// The slide's thumbnail (about 1,600 px on its long side) with each cell tinted by its value
/// (blue → white → red for a probability or attention, with a labelled colour bar; one colour per
/// class for a class map, with a legend).
pub fn draw(slide: &Slide, map: &SlideMap, legend: Legend) -> Result<RgbImage, LearnError> {
    let (w, h) = slide.dimensions();
    let (thumb, ds) = slide.overview((w.max(h) as f64 / 1600.0).max(1.0))?;
    let (tw, th) = thumb.dimensions();
    let mut out = RgbImage::from_pixel(tw, th + 64, Rgb([255, 255, 255]));
    for (x, y, px) in thumb.enumerate_pixels() {
        let (c, r) = ((x as f64 * ds / map.cell.0) as usize, (y as f64 * ds / map.cell.1) as usize);
        let v = if r < map.rows && c < map.cols { map.values[r * map.cols + c] } else { f32::NAN };
        let continuous = legend != Legend::Classes;
        let p = if v.is_finite() && (continuous || v > 0.0) {
            let k = match legend {
                Legend::Classes => COLOURS[(v as usize).min(COLOURS.len() - 1)].map(|c| c as f32 / 255.0),
                _ => colour(v),
            };
            Rgb([0, 1, 2].map(|i| (0.45 * px.0[i] as f32 + 0.55 * 255.0 * k[i]) as u8))
        } else {
            *px
        };
        out.put_pixel(x, y, p);
    }
    let texts = draw_legend(&mut out, th, legend);
    let (ow, oh) = out.dimensions();
    plot::label(&mut out, ow, oh, &texts)?;
    Ok(out)
}

/// Draws the colour bar or the class legend under the thumbnail (`th` high); returns its labels.
fn draw_legend(out: &mut RgbImage, th: u32, legend: Legend) -> Vec<(String, (i32, i32), u32)> {
    let tw = out.width();
    let y = th as i32 + 36;
    let title = match legend {
        Legend::Probability(class) => format!("class {class} probability"),
        Legend::Attention => "attention (percentile)".to_owned(),
        Legend::Classes => {
            let step = (tw / COLOURS.len() as u32).max(1);
            for (c, k) in COLOURS.iter().enumerate().skip(1) {
                for x in c as u32 * step..(c as u32 * step + 24).min(tw) {
                    for y in th + 6..th + 30 {
                        out.put_pixel(x, y, Rgb(*k));
                    }
                }
            }
            return (1..COLOURS.len()).map(|c| (format!("class {c}"), (c as i32 * step as i32, y), 18)).collect();
        }
    };
    for x in 0..tw {
        let k = colour(x as f32 / (tw - 1).max(1) as f32);
        for y in th + 6..th + 30 {
            out.put_pixel(x, y, Rgb(k.map(|v| (v * 255.0) as u8)));
        }
    }
    vec![("0".to_owned(), (2, y), 18), (title, (tw as i32 / 2 - 90, y), 18), ("1".to_owned(), (tw as i32 - 14, y), 18)]
}
