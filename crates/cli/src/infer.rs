//! `patchtcga infer`: a fine-tuned classifier slid over the tissue of a whole slide at the
//! training resolution, drawn as a class-probability heat map over the slide's thumbnail.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use image::{Rgb, RgbImage};
use patchtcga_learn::config::image_stats;
use patchtcga_learn::engine::device;
use patchtcga_model::{load, read_tensors, Arch, Classifier, ImportOptions};
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
    /// Class whose probability is drawn (PCam200: 1 = tumour).
    #[arg(long, default_value_t = 1)]
    class: i64,
    /// Tile field of view in µm (the release's evaluation crop: 287 px at 0.39 µm/px).
    #[arg(long, default_value_t = 287.0 * 0.39)]
    field_um: f64,
    /// Model input side in pixels.
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    /// Least tissue fraction for a tile to be classified.
    #[arg(long, default_value_t = 0.25)]
    min_tissue: f64,
    /// Normalisation: imagenet, ptcga or six numbers (as in training).
    #[arg(long, default_value = "imagenet")]
    stats: String,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// µm/px to use when the slide has none.
    #[arg(long)]
    mpp_override: Option<f64>,
}

/// The number of classes of the head stored in a checkpoint.
fn head_classes(weights: &std::path::Path, head: &str) -> Result<i64> {
    let name = format!("{head}.weight");
    read_tensors(weights)?
        .into_iter()
        .find(|(n, _)| n == &name || n.ends_with(&format!(".{name}")))
        .map(|(_, t)| t.size()[0])
        .with_context(|| {
            format!("{}: no classification head ({name}); infer needs a fine-tuned classifier", weights.display())
        })
}

/// Classifies every tissue tile of the slide and writes the heat map and the raw map.
pub fn infer(a: InferArgs) -> Result<()> {
    let start = Instant::now();
    let dev = device(&a.device)?;
    let spec = a.arch.parse::<Arch>()?.spec(a.image_size as i64);
    let classes = head_classes(&a.weights, spec.head_name())?;
    if a.class < 0 || a.class >= classes {
        bail!("--class {}: the classifier in {} has {classes} classes", a.class, a.weights.display());
    }
    let vs = nn::VarStore::new(dev);
    let model = Classifier::new(&vs.root(), spec, classes, 0.0);
    let opts = ImportOptions { with_head: true, ..Default::default() };
    load(&vs, &a.weights, spec.head_name(), &opts)?;

    let slide = Slide::open(&a.slide, a.mpp_override)?;
    let tissue = TissueMask::detect(&slide, &TissueParams::default())?;
    let geometry = PatchGeometry { mpp: a.field_um / a.image_size as f64, size: a.image_size };
    let (fw, fh) = slide.footprint(&geometry);
    let (w, h) = slide.dimensions();
    let (cols, rows) = ((w as f64 / fw).floor() as usize, (h as f64 / fh).floor() as usize);
    if cols == 0 || rows == 0 {
        bail!("{}: smaller than one {:.0} µm tile", a.slide.display(), a.field_um);
    }
    let tiles: Vec<(usize, usize)> = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .filter(|&(r, c)| tissue.fraction(c as f64 * fw, r as f64 * fh, fw, fh) >= a.min_tissue)
        .collect();
    let (mean, std) = image_stats(&a.stats)?;
    let mut map = vec![f32::NAN; rows * cols];
    let bar = crate::bar("tiles");
    bar.set_length(tiles.len() as u64);
    for chunk in tiles.chunks(a.batch_size.max(1)) {
        let patches: Vec<RgbImage> = chunk
            .par_iter()
            .map(|&(r, c)| slide.read_patch(&geometry, (c as f64 * fw) as u32, (r as f64 * fh) as u32))
            .collect::<Result<_, _>>()?;
        let s = a.image_size as usize;
        let mut data = Vec::with_capacity(patches.len() * 3 * s * s);
        for p in &patches {
            for ch in 0..3 {
                data.extend(p.pixels().map(|px| (px.0[ch] as f32 / 255.0 - mean[ch]) / std[ch]));
            }
        }
        let x = Tensor::from_slice(&data).reshape([patches.len() as i64, 3, s as i64, s as i64]).to_device(dev);
        let p = tch::no_grad(|| model.forward_t(&x, false)).to_kind(Kind::Float).softmax(-1, Kind::Float);
        let p = Vec::<f32>::try_from(p.select(1, a.class).to_device(tch::Device::Cpu))?;
        for (&(r, c), v) in chunk.iter().zip(p) {
            map[r * cols + c] = v;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();

    let npy = a.out.with_extension("npy");
    let tmp = npy.with_file_name(format!(".{}.tmp.npy", npy.file_stem().and_then(|s| s.to_str()).unwrap_or("map")));
    Tensor::from_slice(&map).reshape([rows as i64, cols as i64]).write_npy(&tmp)?;
    std::fs::rename(&tmp, &npy).with_context(|| format!("{}: cannot write", npy.display()))?;
    let picture = draw(&slide, &map, rows, cols, (fw, fh), a.class)?;
    let tmp = a.out.with_file_name(format!(".{}.tmp.png", a.out.file_stem().and_then(|s| s.to_str()).unwrap_or("map")));
    picture.save(&tmp).with_context(|| format!("{}: cannot write", a.out.display()))?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("{}: cannot write", a.out.display()))?;

    let scored: Vec<f32> = map.iter().copied().filter(|v| v.is_finite()).collect();
    let high = scored.iter().filter(|&&v| v >= 0.5).count();
    println!(
        "{}: {} of {} tiles on tissue ({:.0} µm each), class {} probability ≥ 0.5 on {} ({:.1} %), in {:.1} s",
        a.slide.display(),
        scored.len(),
        rows * cols,
        a.field_um,
        a.class,
        high,
        100.0 * high as f64 / scored.len().max(1) as f64,
        start.elapsed().as_secs_f64()
    );
    println!("heat map → {} (raw {rows}×{cols} map → {})", a.out.display(), npy.display());
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

/// The slide's thumbnail (about 1,600 px on its long side) with each classified tile tinted by
/// its probability, and a labelled colour bar.
fn draw(slide: &Slide, map: &[f32], rows: usize, cols: usize, tile: (f64, f64), class: i64) -> Result<RgbImage> {
    let (w, h) = slide.dimensions();
    let (thumb, ds) = slide.overview((w.max(h) as f64 / 1600.0).max(1.0))?;
    let (tw, th) = thumb.dimensions();
    let bar_h = 64;
    let mut out = RgbImage::from_pixel(tw, th + bar_h, Rgb([255, 255, 255]));
    for (x, y, px) in thumb.enumerate_pixels() {
        let (c, r) = ((x as f64 * ds / tile.0) as usize, (y as f64 * ds / tile.1) as usize);
        let v = if r < rows && c < cols { map[r * cols + c] } else { f32::NAN };
        let p = if v.is_finite() {
            let k = colour(v);
            Rgb([0, 1, 2].map(|i| (0.45 * px.0[i] as f32 + 0.55 * 255.0 * k[i]) as u8))
        } else {
            *px
        };
        out.put_pixel(x, y, p);
    }
    for x in 0..tw {
        let k = colour(x as f32 / (tw - 1).max(1) as f32);
        for y in th + 6..th + 30 {
            out.put_pixel(x, y, Rgb(k.map(|v| (v * 255.0) as u8)));
        }
    }
    let y = th as i32 + 36;
    let texts = [
        ("0".to_owned(), (2, y), 18),
        (format!("class {class} probability"), (tw as i32 / 2 - 90, y), 18),
        ("1".to_owned(), (tw as i32 - 14, y), 18),
    ];
    let (ow, oh) = out.dimensions();
    patchtcga_learn::plot::label(&mut out, ow, oh, &texts)?;
    Ok(out)
}
