//! The tissue mask: HSV saturation, median filter, Otsu threshold, closing, small pieces dropped and holes filled, as CLAM segments tissue; pen ink taken out.

use image::{GrayImage, Luma, RgbImage};
use imageproc::{
    contrast::otsu_level,
    distance_transform::Norm,
    filter::median_filter,
    morphology::close,
    region_labelling::{connected_components, Connectivity},
};

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

use crate::{InkMask, Mpp, Result, Slide, SlideError};

/// Settings of the tissue detector (HSV saturation → median → Otsu → close → area filters, as
/// CLAM segments tissue); `--tissue-mpp` and `--saturation-threshold` are flags of the commands
/// that tile.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct TissueParams {
    /// Resolution of the tissue mask in µm per pixel (coarser is faster; 8 µm/px ≈ 16× at 20×).
    #[arg(long = "tissue-mpp", default_value_t = 8.0)]
    pub mask_mpp: f64,
    /// Median filter radius in mask pixels.
    #[arg(skip = 3u32)]
    pub median_radius: u32,
    /// Morphological closing radius in mask pixels (bridges thin gaps in tissue).
    #[arg(skip = 2u8)]
    pub close_radius: u8,
    /// Fixed saturation threshold (0-255) instead of Otsu's.
    #[arg(long)]
    pub saturation_threshold: Option<u8>,
    /// Lower bound on the Otsu threshold, so a blank slide's noise never becomes tissue.
    #[arg(skip = 15u8)]
    pub min_saturation: u8,
    /// Tissue components smaller than this area (µm²) are dropped.
    #[arg(skip = 20_000.0)]
    pub min_area_um2: f64,
    /// Holes inside tissue smaller than this area (µm²) are filled.
    #[arg(skip = 10_000.0)]
    pub max_hole_um2: f64,
    /// Keep pen ink (blue, green, red, black marker) in the tissue mask instead of taking it out.
    #[arg(long)]
    pub keep_ink: bool,
    /// Most pen ink a patch's footprint may hold (a fraction); patches with more are dropped.
    #[arg(long, default_value_t = 0.05)]
    pub max_ink: f64,
}

impl Default for TissueParams {
    fn default() -> Self {
        crate::flag_defaults()
    }
}

/// A binary tissue mask over a slide at low resolution, with constant-time tissue fractions.
#[derive(Debug, Clone)]
pub struct TissueMask {
    mask: GrayImage,
    downsample: f64,
    threshold: u8,
    /// Summed-area table of tissue pixels, (w+1)×(h+1).
    integral: Vec<u32>,
    /// Pen ink on the mask's grid (empty with `keep_ink`).
    ink: InkMask,
    /// Summed-area table of ink pixels.
    ink_integral: Vec<u32>,
    max_ink: f64,
}

impl TissueMask {
    /// Detects tissue on a low-resolution overview of `slide`.
    pub fn detect(slide: &Slide, params: &TissueParams) -> Result<Self> {
        let mpp = slide.mpp();
        if !(params.mask_mpp.is_finite() && params.mask_mpp > 0.0) {
            return Err(SlideError::Parameter(format!("tissue mask µm/px must be positive, got {}", params.mask_mpp)));
        }
        let (overview, downsample) = slide.overview((params.mask_mpp / mpp.x).max(1.0))?;
        Ok(Self::from_overview(&overview, downsample, mpp, params))
    }

    /// Detects tissue on an overview of a slide whose level-0 resolution is `mpp`, each of whose
    /// pixels covers `overview_downsample` level-0 pixels. An overview markedly finer than the
    /// mask resolution is area-averaged down to it first, so one read of the slide can serve both the mask and
    /// a thumbnail.
    pub fn from_overview(overview: &RgbImage, overview_downsample: f64, mpp: Mpp, params: &TissueParams) -> Self {
        let factor = params.mask_mpp / (overview_downsample * mpp.x);
        let (reduced, downsample);
        let overview = if factor > 1.5 {
            let (w, h) = (
                (overview.width() as f64 / factor).round().max(1.0) as u32,
                (overview.height() as f64 / factor).round().max(1.0) as u32,
            );
            let mut dst = RgbImage::new(w, h);
            let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
            Resizer::new().resize(overview, &mut dst, &options).expect("RGB to RGB resize of a non-empty image");
            downsample = overview_downsample * overview.width() as f64 / w as f64;
            reduced = dst;
            &reduced
        } else {
            downsample = overview_downsample;
            overview
        };
        let px_area_um2 = (downsample * mpp.x) * (downsample * mpp.y);
        let ink = if params.keep_ink {
            InkMask::empty(overview.width(), overview.height())
        } else {
            InkMask::detect(overview, INK_RIM)
        };
        // Ink is taken out before the threshold is found: its saturation would raise Otsu's.
        let saturation = GrayImage::from_fn(overview.width(), overview.height(), |x, y| {
            let [r, g, b] = overview.get_pixel(x, y).0;
            let (max, min) = (r.max(g).max(b), r.min(g).min(b));
            let ink = ink.contains(x, y);
            Luma([if max == 0 || ink { 0 } else { ((max - min) as u32 * 255 / max as u32) as u8 }])
        });
        let smooth = median_filter(&saturation, params.median_radius, params.median_radius);
        let threshold = params.saturation_threshold.unwrap_or_else(|| otsu_level(&smooth).max(params.min_saturation));
        let mut mask = GrayImage::from_fn(smooth.width(), smooth.height(), |x, y| {
            Luma([if smooth.get_pixel(x, y).0[0] > threshold { 255 } else { 0 }])
        });
        if params.close_radius > 0 {
            mask = close(&mask, Norm::LInf, params.close_radius);
        }
        let min_area = (params.min_area_um2 / px_area_um2).ceil() as usize;
        let max_hole = (params.max_hole_um2 / px_area_um2).floor() as usize;
        let remove_ink = |mask: &mut GrayImage| {
            for (x, y, p) in mask.enumerate_pixels_mut() {
                if ink.contains(x, y) {
                    p.0[0] = 0;
                }
            }
        };
        // Closing bridges nothing across a stroke, the area filter drops the slivers ink leaves,
        // and the hole filling gives back none of it.
        remove_ink(&mut mask);
        drop_components(&mut mask, 255, min_area, false);
        drop_components(&mut mask, 0, max_hole + 1, true);
        remove_ink(&mut mask);
        let integral = summed_area(&mask);
        let ink_integral = summed_area(ink.any());
        Self { mask, downsample, threshold, integral, ink, ink_integral, max_ink: params.max_ink }
    }

    /// The mask (255 = tissue, 0 = background).
    pub fn mask(&self) -> &GrayImage {
        &self.mask
    }

    /// Level-0 pixels per mask pixel.
    pub fn downsample(&self) -> f64 {
        self.downsample
    }

    /// The saturation threshold used (0–255).
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// Fraction of the whole mask that is tissue.
    pub fn tissue_fraction(&self) -> f64 {
        let n = (self.mask.width() as u64 * self.mask.height() as u64).max(1);
        *self.integral.last().unwrap_or(&0) as f64 / n as f64
    }

    /// The mask with everything outside `roi` cleared (a pixel is kept when its centre lies in
    /// the region).
    pub fn within(mut self, roi: &crate::Roi) -> Self {
        let d = self.downsample;
        for (x, y, p) in self.mask.enumerate_pixels_mut() {
            if p.0[0] != 0 && !roi.contains((x as f64 + 0.5) * d, (y as f64 + 0.5) * d) {
                p.0[0] = 0;
            }
        }
        self.integral = summed_area(&self.mask);
        self
    }

    /// Pen ink found on the slide (nothing when it was kept).
    pub fn ink(&self) -> &InkMask {
        &self.ink
    }

    /// Fraction of the whole mask's area that is ink (with its rim).
    pub fn ink_area_fraction(&self) -> f64 {
        let n = (self.mask.width() as u64 * self.mask.height() as u64).max(1);
        *self.ink_integral.last().unwrap_or(&0) as f64 / n as f64
    }

    /// Area of one mask pixel in µm² for a slide of level-0 resolution `mpp`.
    pub fn pixel_area_um2(&self, mpp: Mpp) -> f64 {
        self.downsample * mpp.x * self.downsample * mpp.y
    }

    /// Fraction of tissue in the level-0 rectangle at (`x`, `y`) of size `w`×`h`; the parts
    /// outside the slide count as background.
    pub fn fraction(&self, x: f64, y: f64, w: f64, h: f64) -> f64 {
        area_fraction(&self.integral, self.mask.width(), self.mask.height(), self.downsample, (x, y, w, h))
    }

    /// Fraction of pen ink (with its rim) in the level-0 rectangle at (`x`, `y`) of size `w`×`h`.
    pub fn ink_fraction(&self, x: f64, y: f64, w: f64, h: f64) -> f64 {
        area_fraction(&self.ink_integral, self.mask.width(), self.mask.height(), self.downsample, (x, y, w, h))
    }

    /// Whether a footprint holds more ink than a patch may.
    pub fn too_inky(&self, x: f64, y: f64, w: f64, h: f64) -> bool {
        self.ink_fraction(x, y, w, h) > self.max_ink
    }
}

/// Pixels of the mask's grid added around ink, where a stroke's edge blends into the tissue.
const INK_RIM: u8 = 1;

/// Fraction of set pixels, by a summed-area table over a `mw`×`mh` grid of `d` level-0 pixels per
/// cell, in the level-0 rectangle (`x`, `y`, `w`, `h`).
fn area_fraction(integral: &[u32], mw: u32, mh: u32, d: f64, (x, y, w, h): (f64, f64, f64, f64)) -> f64 {
    let (mw, mh) = (mw as i64, mh as i64);
    let x0 = (x / d).round() as i64;
    let y0 = (y / d).round() as i64;
    let x1 = ((x + w) / d).round().max(x0 as f64 + 1.0) as i64;
    let y1 = ((y + h) / d).round().max(y0 as f64 + 1.0) as i64;
    let area = ((x1 - x0) * (y1 - y0)) as f64;
    let (cx0, cy0, cx1, cy1) = (x0.clamp(0, mw), y0.clamp(0, mh), x1.clamp(0, mw), y1.clamp(0, mh));
    if cx1 <= cx0 || cy1 <= cy0 {
        return 0.0;
    }
    let at = |x: i64, y: i64| integral[(y * (mw + 1) + x) as usize] as i64;
    let sum = at(cx1, cy1) - at(cx0, cy1) - at(cx1, cy0) + at(cx0, cy0);
    sum as f64 / area
}

/// Sets to the opposite value every `value`-coloured component smaller than `min_size`
/// pixels; with `interior_only`, components touching the border are kept (they are not holes).
fn drop_components(mask: &mut GrayImage, value: u8, min_size: usize, interior_only: bool) {
    if min_size <= 1 {
        return;
    }
    let other = 255 - value;
    let labels = connected_components(mask, Connectivity::Eight, Luma([other]));
    let n = labels.pixels().map(|p| p.0[0]).max().unwrap_or(0) as usize;
    let mut size = vec![0usize; n + 1];
    let mut border = vec![false; n + 1];
    let (w, h) = labels.dimensions();
    for (x, y, p) in labels.enumerate_pixels() {
        let l = p.0[0] as usize;
        size[l] += 1;
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            border[l] = true;
        }
    }
    for (x, y, p) in labels.enumerate_pixels() {
        let l = p.0[0] as usize;
        if l != 0 && size[l] < min_size && !(interior_only && border[l]) {
            mask.put_pixel(x, y, Luma([other]));
        }
    }
}

fn summed_area(mask: &GrayImage) -> Vec<u32> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let mut s = vec![0u32; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0u32;
        for x in 0..w {
            row += (mask.get_pixel(x as u32, y as u32).0[0] != 0) as u32;
            s[(y + 1) * (w + 1) + x + 1] = s[y * (w + 1) + x + 1] + row;
        }
    }
    s
}
