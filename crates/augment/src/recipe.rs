//! View recipes: the crops, flips, colour and stain jitter, blur and grey of each method's views (the release's and the upstream methods' presets).

use image::{GrayImage, RgbImage};
use rand::{seq::SliceRandom, Rng};

use crate::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, center_crop, crop, gaussian_blur, hed_jitter,
    hflip, resize, resize_mask, resized_crop, rot90, solarize, to_grayscale, vflip, AugmentError, Result,
};

/// How a view is cut from the patch.
#[derive(Debug, Clone, PartialEq)]
pub enum Cut {
    /// torchvision `RandomResizedCrop(size, scale, ratio)`.
    RandomResized {
        /// Range of the crop's area as a fraction of the image.
        scale: (f64, f64),
        /// Range of the crop's aspect ratio (width / height).
        ratio: (f64, f64),
    },
    /// `CenterCrop(crop)` then `Resize(size)` (the release's evaluation transform).
    CenterThenResize {
        /// Side of the centre crop before resizing.
        crop: u32,
    },
    /// A `size`×`size` crop at a random position, no resizing (segmentation pairs).
    Random,
}

/// torchvision `ColorJitter(brightness, contrast, saturation, hue)` applied with probability `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    /// Brightness factor drawn from [max(0, 1 − b), 1 + b].
    pub brightness: f32,
    /// Contrast factor range, likewise.
    pub contrast: f32,
    /// Saturation factor range, likewise.
    pub saturation: f32,
    /// Hue shift drawn from [−h, h].
    pub hue: f32,
    /// Probability of jittering at all.
    pub p: f64,
}

/// HED stain jitter settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StainJitter {
    /// Strength σ.
    pub sigma: f32,
    /// Probability.
    pub p: f64,
}

/// One view of a patch: a cut, then flips and colour operations, each with its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSpec {
    /// Output side in pixels.
    pub size: u32,
    /// How the view is cut.
    pub cut: Cut,
    /// Horizontal flip probability.
    pub hflip: f64,
    /// Vertical flip probability.
    pub vflip: f64,
    /// Probability of a random quarter-turn rotation (pathology patches have no "up").
    pub rot90: f64,
    /// Colour jitter.
    pub jitter: Option<Jitter>,
    /// HED stain jitter: with probability `p`, each stain scaled by U(1 − σ, 1 + σ) and shifted
    /// by U(−σ, σ) (none of the release's recipes uses it; pathology-specific).
    pub stain: Option<StainJitter>,
    /// RandomGrayscale probability.
    pub grayscale: f64,
    /// Gaussian blur probability (σ drawn from [0.1, 2], kernel ≈ 10% of the view, odd).
    pub blur: f64,
    /// Solarize (threshold 128) probability.
    pub solarize: f64,
}

impl ViewSpec {
    fn plain(size: u32, cut: Cut) -> Self {
        Self {
            size,
            cut,
            hflip: 0.0,
            vflip: 0.0,
            rot90: 0.0,
            jitter: None,
            stain: None,
            grayscale: 0.0,
            blur: 0.0,
            solarize: 0.0,
        }
    }
}

/// A named list of views made from each patch.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The preset it was made from.
    pub preset: Preset,
    /// The views, in order.
    pub views: Vec<ViewSpec>,
}

/// The view recipes of the release and the upstream methods, as [`Recipe::preset`] makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The release's train transform: RandomResizedCrop (0.8–1), colour jitter, blur, flips.
    Supervised,
    /// The release's evaluation transform: CenterCrop 287/224 of the side, then Resize.
    Eval,
    /// A centre crop at the side and nothing else, for images already at model size.
    None,
    /// SimCLR's two views (MoCo v2's too).
    #[value(name = "simclr")]
    SimClr,
    /// BYOL's two asymmetric views (blur 1.0 / 0.1, solarize 0 / 0.2).
    Byol,
    /// DINO's two global views and its local ones.
    Dino,
    /// MAE's one view.
    Mae,
    /// A random crop, flips and quarter turns, applied to image and mask alike.
    Segmentation,
}

/// Its name on the command line (`simclr`).
impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        use clap::ValueEnum;
        f.write_str(self.to_possible_value().expect("every preset has a name").get_name())
    }
}

const RRC_TRAIN: Cut = Cut::RandomResized { scale: (0.8, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) };
const STRONG_JITTER: Jitter = Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 };
const BYOL_JITTER: Jitter = Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1, p: 0.8 };

fn rrc(lo: f64, hi: f64) -> Cut {
    Cut::RandomResized { scale: (lo, hi), ratio: (3.0 / 4.0, 4.0 / 3.0) }
}

impl Recipe {
    /// A preset's views at side `size` (DINO: 2 global views and `local_crops` local ones at
    /// 96/224 of it).
    pub fn preset(preset: Preset, size: u32, local_crops: usize) -> Self {
        let flips = |mut v: ViewSpec| {
            v.hflip = 0.5;
            v.vflip = 0.5;
            v
        };
        let ssl = |cut: Cut, jitter: Jitter, blur: f64, solarize: f64| {
            let mut v = flips(ViewSpec::plain(size, cut));
            v.jitter = Some(jitter);
            v.grayscale = 0.2;
            v.blur = blur;
            v.solarize = solarize;
            v
        };
        let views = match preset {
            Preset::Supervised => {
                let mut v = flips(ViewSpec::plain(size, RRC_TRAIN));
                v.jitter = Some(STRONG_JITTER);
                v.blur = 0.5;
                vec![v]
            }
            Preset::None => vec![ViewSpec::plain(size, Cut::CenterThenResize { crop: size })],
            Preset::Eval => vec![ViewSpec::plain(
                size,
                Cut::CenterThenResize { crop: (size as f64 * 287.0 / 224.0).round() as u32 },
            )],
            Preset::SimClr => vec![ssl(rrc(0.08, 1.0), STRONG_JITTER, 0.5, 0.0); 2],
            Preset::Byol => {
                vec![ssl(rrc(0.08, 1.0), BYOL_JITTER, 1.0, 0.0), ssl(rrc(0.08, 1.0), BYOL_JITTER, 0.1, 0.2)]
            }
            Preset::Dino => {
                let local = size * 96 / 224;
                let mut v = vec![ssl(rrc(0.4, 1.0), BYOL_JITTER, 1.0, 0.0), ssl(rrc(0.4, 1.0), BYOL_JITTER, 0.1, 0.2)];
                let mut l = ssl(rrc(0.05, 0.4), BYOL_JITTER, 0.5, 0.0);
                l.size = local;
                v.extend(std::iter::repeat_n(l, local_crops));
                v
            }
            Preset::Mae => {
                let mut v = ViewSpec::plain(size, rrc(0.2, 1.0));
                v.hflip = 0.5;
                vec![v]
            }
            Preset::Segmentation => {
                let mut v = flips(ViewSpec::plain(size, Cut::Random));
                v.rot90 = 0.5;
                vec![v]
            }
        };
        Self { preset, views }
    }
}

/// One view made from a patch (and its label mask, for segmentation).
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The augmented image, `size`×`size`.
    pub image: RgbImage,
    /// The label mask under the same geometry, if the patch had one.
    pub mask: Option<GrayImage>,
}

/// torchvision `RandomResizedCrop.get_params`: (top, left, height, width) of a crop of an
/// `w`×`h` image whose area fraction and aspect ratio are drawn from `scale` and `ratio`
/// (log-uniform), trying 10 times before falling back to the largest centred crop in range.
pub fn random_resized_crop_params(
    rng: &mut impl Rng,
    w: u32,
    h: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> (u32, u32, u32, u32) {
    let area = w as f64 * h as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(scale.0..=scale.1);
        let aspect = rng.gen_range(lr0..=lr1).exp();
        let cw = (target * aspect).sqrt().round() as u32;
        let ch = (target / aspect).sqrt().round() as u32;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let top = rng.gen_range(0..=h - ch);
            let left = rng.gen_range(0..=w - cw);
            return (top, left, ch, cw);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w, ((w as f64 / ratio.0).round() as u32).min(h))
    } else if in_ratio > ratio.1 {
        (((h as f64 * ratio.1).round() as u32).min(w), h)
    } else {
        (w, h)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

fn jitter(img: &mut RgbImage, j: &Jitter, rng: &mut impl Rng) -> Result<()> {
    let factor = |rng: &mut dyn rand::RngCore, r: f32| {
        if r > 0.0 {
            Some(rng.gen_range((1.0 - r).max(0.0)..=1.0 + r))
        } else {
            None
        }
    };
    let b = factor(rng, j.brightness);
    let c = factor(rng, j.contrast);
    let s = factor(rng, j.saturation);
    let h = (j.hue > 0.0).then(|| rng.gen_range(-j.hue..=j.hue));
    let mut order = [0, 1, 2, 3];
    order.shuffle(rng);
    for op in order {
        match (op, b, c, s, h) {
            (0, Some(f), ..) => adjust_brightness(img, f)?,
            (1, _, Some(f), ..) => adjust_contrast(img, f)?,
            (2, _, _, Some(f), _) => adjust_saturation(img, f)?,
            (3, .., Some(f)) => adjust_hue(img, f)?,
            _ => {}
        }
    }
    Ok(())
}

impl ViewSpec {
    /// Makes this view of `image` (and `mask`), drawing every random choice from `rng`.
    pub fn apply(&self, image: &RgbImage, mask: Option<&GrayImage>, rng: &mut impl Rng) -> Result<View> {
        let (w, h) = image.dimensions();
        if let Some(m) = mask {
            if m.dimensions() != (w, h) {
                return Err(AugmentError::Geometry(format!("mask is {:?} but its image is {w}×{h}", m.dimensions())));
            }
        }
        let s = self.size;
        let (mut img, mut mask) = match &self.cut {
            Cut::RandomResized { scale, ratio } => {
                let (t, l, ch, cw) = random_resized_crop_params(rng, w, h, *scale, *ratio);
                let m = mask.map(|m| crop(m, t, l, ch, cw).and_then(|c| resize_mask(&c, s, s))).transpose()?;
                (resized_crop(image, t, l, ch, cw, s, s)?, m)
            }
            Cut::CenterThenResize { crop: c } => {
                let c = (*c).min(w).min(h);
                let m = mask.map(|m| center_crop(m, c).and_then(|cc| resize_mask(&cc, s, s))).transpose()?;
                (resize(&center_crop(image, c)?, s, s)?, m)
            }
            Cut::Random => {
                if s > w || s > h {
                    return Err(AugmentError::Geometry(format!("random crop {s} is larger than the {w}×{h} patch")));
                }
                let (t, l) = (rng.gen_range(0..=h - s), rng.gen_range(0..=w - s));
                (crop(image, t, l, s, s)?, mask.map(|m| crop(m, t, l, s, s)).transpose()?)
            }
        };
        if rng.gen_bool(self.hflip) {
            img = hflip(&img);
            mask = mask.map(|m| hflip(&m));
        }
        if rng.gen_bool(self.vflip) {
            img = vflip(&img);
            mask = mask.map(|m| vflip(&m));
        }
        if rng.gen_bool(self.rot90) {
            let k = rng.gen_range(1..=3);
            img = rot90(&img, k);
            mask = mask.map(|m| rot90(&m, k));
        }
        if let Some(j) = &self.jitter {
            if rng.gen_bool(j.p) {
                jitter(&mut img, j, rng)?;
            }
        }
        if let Some(st) = &self.stain {
            if rng.gen_bool(st.p) {
                let s = st.sigma;
                let alpha = [0; 3].map(|_| rng.gen_range(1.0 - s..=1.0 + s));
                let beta = [0; 3].map(|_| rng.gen_range(-s..=s));
                hed_jitter(&mut img, alpha, beta);
            }
        }
        if rng.gen_bool(self.grayscale) {
            to_grayscale(&mut img);
        }
        if rng.gen_bool(self.blur) {
            let sigma = rng.gen_range(0.1f32..=2.0);
            let kernel = ((s as f32 * 0.1) as u32 / 2 * 2 + 1).max(3);
            gaussian_blur(&mut img, kernel, sigma)?;
        }
        if rng.gen_bool(self.solarize) {
            solarize(&mut img, 128);
        }
        Ok(View { image: img, mask })
    }
}
