//! `patchtcga infer`: a fine-tuned classifier (or segmentation network) slid over the tissue of
//! a whole slide at the training resolution, drawn as a class-probability heat map (or a class
//! map) over the slide's thumbnail.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use image::{Rgb, RgbImage};
use patchtcga_learn::config::{DeviceChoice, ImageStats};
use patchtcga_learn::engine::device;
use patchtcga_learn::segmentation::COLOURS;
use patchtcga_model::{load, read_tensors, Arch, Classifier, ImportOptions, SegHead, SegNet};
use patchtcga_slide::{PatchGeometry, Slide, TissueMask, TissueParams};
use rayon::prelude::*;
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// Options of `patchtcga infer`.
#[derive(Args)]
pub struct InferArgs {
    /// Backbone of the classifier: resnet18, resnet50, vit-s16, ….
    #[arg(long)]
    arch: String,
    /// A fine-tuned classifier with its head (`fc` / `head`): a run's model.safetensors or a .pth.
    #[arg(long)]
    weights: PathBuf,
    /// Whole-slide image.
    #[arg(long)]
    slide: PathBuf,
    /// Heat map PNG; the raw map goes beside it as .npy (rows × columns, NaN off tissue).
    #[arg(long)]
    out: PathBuf,
    /// A segmentation network's head (fcn, deeplabv3): draw its class map instead.
    #[arg(long)]
    seg_head: Option<SegHead>,
    /// Class whose probability is drawn (PCam200: 1 = tumour).
    #[arg(long, default_value_t = 1)]
    class: i64,
    /// Tile field of view in µm (the release's evaluation crop: 287 px at 0.39 µm/px).
    #[arg(long, default_value_t = 287.0 * 0.39)]
    field_um: f64,
    /// Model input side in pixels.
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    /// Windows per tile side: 2 moves the window by half a tile, 4 by a quarter; overlapping
    /// windows are averaged (probabilities; a segmentation network's class probabilities before
    /// the arg max, which needs 1, 2, 4 or 8). The map's cells become a stride wide.
    #[arg(long, default_value_t = 1)]
    overlap: usize,
    /// Least tissue fraction for a tile to be classified.
    #[arg(long, default_value_t = 0.25)]
    min_tissue: f64,
    /// Normalisation: imagenet, ptcga or six numbers (as in training).
    #[arg(long, default_value = "imagenet")]
    stats: ImageStats,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// µm/px to use when the slide has none.
    #[arg(long)]
    mpp_override: Option<f64>,
}

/// The number of classes of the head stored in a checkpoint (`name`: its last layer's weight).
fn head_classes(weights: &std::path::Path, name: &str) -> Result<i64> {
    read_tensors(weights)?
        .into_iter()
        .find(|(n, _)| n == name || n.ends_with(&format!(".{name}")))
        .map(|(_, t)| t.size()[0])
        .with_context(|| {
            format!("{}: no classification head ({name}); infer needs a fine-tuned network", weights.display())
        })
}

/// Classifies every tissue tile of the slide and writes the heat map and the raw map.
pub fn infer(a: InferArgs) -> Result<()> {
    let start = Instant::now();
    let dev = device(a.device)?;
    let spec = a.arch.parse::<Arch>()?.spec(a.image_size as i64);
    let vs = nn::VarStore::new(dev);
    let opts = ImportOptions { with_head: true, ..Default::default() };
    // A classifier gives one probability per tile; a segmentation network a class per cell of
    // an 8×8 grid over each tile.
    let (model, cells): (Box<dyn ModuleT>, usize) = match &a.seg_head {
        Some(head) => {
            let classes = head_classes(&a.weights, "classifier.4.weight")?;
            let net = SegNet::new(&vs.root(), spec, *head, classes)?;
            load(&vs, &a.weights, "classifier", &opts)?;
            (Box::new(net), 8)
        }
        None => {
            let classes = head_classes(&a.weights, &format!("{}.weight", spec.head_name()))?;
            if a.class < 0 || a.class >= classes {
                bail!("--class {}: the classifier in {} has {classes} classes", a.class, a.weights.display());
            }
            let net = Classifier::new(&vs.root(), spec, classes, 0.0);
            load(&vs, &a.weights, spec.head_name(), &opts)?;
            (Box::new(net), 1)
        }
    };

    let slide = Slide::open(&a.slide, a.mpp_override)?;
    let tissue = TissueMask::detect(&slide, &TissueParams::default())?;
    let geometry = PatchGeometry { mpp: a.field_um / a.image_size as f64, size: a.image_size };
    let (fw, fh) = slide.footprint(&geometry);
    let (w, h) = slide.dimensions();
    // Each window's result on a g×g grid of cells; windows `step` cells apart.
    let n = a.overlap;
    let g = if cells == 1 { n } else { cells };
    if n == 0 || g % n != 0 {
        bail!("--overlap {n}: a segmentation map needs 1, 2, 4 or 8 windows per tile side");
    }
    let step = g / n;
    let (sx, sy) = (fw / n as f64, fh / n as f64);
    let count = |extent: f64, field: f64, stride: f64| {
        if extent < field {
            0
        } else {
            ((extent - field) / stride).floor() as usize + 1
        }
    };
    let (cols, rows) = (count(w as f64, fw, sx), count(h as f64, fh, sy));
    if cols == 0 || rows == 0 {
        bail!("{}: smaller than one {:.0} µm tile", a.slide.display(), a.field_um);
    }
    let tiles: Vec<(usize, usize)> = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .filter(|&(r, c)| tissue.fraction(c as f64 * sx, r as f64 * sy, fw, fh) >= a.min_tissue)
        .collect();
    let (mean, std) = (a.stats.mean, a.stats.std);
    let (mrows, mcols) = ((rows - 1) * step + g, (cols - 1) * step + g);
    // Per cell: summed probabilities (one channel, or every class of a segmentation) and windows.
    let mut sums: Vec<f32> = Vec::new();
    let mut seen = vec![0u32; mrows * mcols];
    let bar = super::bar("tiles");
    bar.set_length(tiles.len() as u64);
    for chunk in tiles.chunks(a.batch_size.max(1)) {
        let patches: Vec<RgbImage> = chunk
            .par_iter()
            .map(|&(r, c)| slide.read_patch(&geometry, (c as f64 * sx) as u32, (r as f64 * sy) as u32))
            .collect::<Result<_, _>>()?;
        let s = a.image_size as usize;
        let mut data = Vec::with_capacity(patches.len() * 3 * s * s);
        for p in &patches {
            for ch in 0..3 {
                data.extend(p.pixels().map(|px| (px.0[ch] as f32 / 255.0 - mean[ch]) / std[ch]));
            }
        }
        let x = Tensor::from_slice(&data).reshape([patches.len() as i64, 3, s as i64, s as i64]).to_device(dev);
        let y = tch::no_grad(|| model.forward_t(&x, false)).to_kind(Kind::Float).softmax(1, Kind::Float);
        let k = g as i64;
        // (T, channels, g, g): the class's probability repeated over the window's cells, or the
        // class probabilities pooled to the window's 8×8 cells.
        let v = if cells == 1 {
            y.select(1, a.class).view([-1, 1, 1, 1]).expand([-1, 1, k, k], false)
        } else {
            y.adaptive_avg_pool2d([k, k])
        };
        let channels = v.size()[1] as usize;
        if sums.is_empty() {
            sums = vec![0.0; channels * mrows * mcols];
        }
        let v = Vec::<f32>::try_from(v.to_device(tch::Device::Cpu).contiguous().reshape([-1]))?;
        for (t, &(r, c)) in chunk.iter().enumerate() {
            for i in 0..g {
                for j in 0..g {
                    let cell = (r * step + i) * mcols + c * step + j;
                    seen[cell] += 1;
                    for ch in 0..channels {
                        sums[ch * mrows * mcols + cell] += v[((t * channels + ch) * g + i) * g + j];
                    }
                }
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    let map: Vec<f32> = (0..mrows * mcols)
        .map(|cell| match seen[cell] {
            0 => f32::NAN,
            k if cells == 1 => sums[cell] / k as f32,
            _ => {
                let per_class = (0..sums.len() / (mrows * mcols)).map(|ch| sums[ch * mrows * mcols + cell]);
                per_class.enumerate().fold((0, f32::MIN), |b, (ch, p)| if p > b.1 { (ch, p) } else { b }).0 as f32
            }
        })
        .collect();

    let npy = a.out.with_extension("npy");
    super::write_file(&npy, |tmp| {
        Ok(Tensor::from_slice(&map).reshape([mrows as i64, mcols as i64]).write_npy(tmp)?)
    })?;
    let cell = (fw / g as f64, fh / g as f64);
    let picture = draw(&slide, &map, mrows, mcols, cell, (cells == 1).then_some(a.class))?;
    super::write_file(&a.out, |tmp| Ok(picture.save(tmp)?))?;

    let scored: Vec<f32> = map.iter().copied().filter(|v| v.is_finite()).collect();
    let what = if cells == 1 {
        let high = scored.iter().filter(|&&v| v >= 0.5).count();
        format!(
            "class {} probability ≥ 0.5 on {high} ({:.1} %)",
            a.class,
            100.0 * high as f64 / scored.len().max(1) as f64
        )
    } else {
        let mut shares = Vec::new();
        for class in 0..COLOURS.len() {
            let n = scored.iter().filter(|&&v| v as usize == class).count();
            if n > 0 {
                shares.push(format!("class {class} {:.1} %", 100.0 * n as f64 / scored.len() as f64));
            }
        }
        format!("area: {}", shares.join(", "))
    };
    println!(
        "{}: {} of {} tiles on tissue ({:.0} µm each), {what}, in {:.1} s",
        a.slide.display(),
        tiles.len(),
        rows * cols,
        a.field_um,
        start.elapsed().as_secs_f64()
    );
    println!("map → {} (raw {mrows}×{mcols} map → {})", a.out.display(), npy.display());
    Ok(())
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

/// The slide's thumbnail (about 1,600 px on its long side) with each classified cell tinted by
/// the probability of `class` (and a labelled colour bar), or, without a class, by its
/// segmentation class (and a legend).
fn draw(
    slide: &Slide,
    map: &[f32],
    rows: usize,
    cols: usize,
    tile: (f64, f64),
    class: Option<i64>,
) -> Result<RgbImage> {
    let (w, h) = slide.dimensions();
    let (thumb, ds) = slide.overview((w.max(h) as f64 / 1600.0).max(1.0))?;
    let (tw, th) = thumb.dimensions();
    let bar_h = 64;
    let mut out = RgbImage::from_pixel(tw, th + bar_h, Rgb([255, 255, 255]));
    for (x, y, px) in thumb.enumerate_pixels() {
        let (c, r) = ((x as f64 * ds / tile.0) as usize, (y as f64 * ds / tile.1) as usize);
        let v = if r < rows && c < cols { map[r * cols + c] } else { f32::NAN };
        let p = if v.is_finite() && (class.is_some() || v > 0.0) {
            let k = match class {
                Some(_) => colour(v),
                None => COLOURS[(v as usize).min(COLOURS.len() - 1)].map(|c| c as f32 / 255.0),
            };
            Rgb([0, 1, 2].map(|i| (0.45 * px.0[i] as f32 + 0.55 * 255.0 * k[i]) as u8))
        } else {
            *px
        };
        out.put_pixel(x, y, p);
    }
    let y = th as i32 + 36;
    let texts: Vec<(String, (i32, i32), u32)> = match class {
        Some(class) => {
            for x in 0..tw {
                let k = colour(x as f32 / (tw - 1).max(1) as f32);
                for y in th + 6..th + 30 {
                    out.put_pixel(x, y, Rgb(k.map(|v| (v * 255.0) as u8)));
                }
            }
            vec![
                ("0".to_owned(), (2, y), 18),
                (format!("class {class} probability"), (tw as i32 / 2 - 90, y), 18),
                ("1".to_owned(), (tw as i32 - 14, y), 18),
            ]
        }
        None => {
            let step = (tw / COLOURS.len() as u32).max(1);
            for (c, k) in COLOURS.iter().enumerate().skip(1) {
                for x in c as u32 * step..(c as u32 * step + 24).min(tw) {
                    for y in th + 6..th + 30 {
                        out.put_pixel(x, y, Rgb(*k));
                    }
                }
            }
            (1..COLOURS.len()).map(|c| (format!("class {c}"), (c as i32 * step as i32, y), 18)).collect()
        }
    };
    let (ow, oh) = out.dimensions();
    patchtcga_learn::plot::label(&mut out, ow, oh, &texts)?;
    Ok(out)
}
