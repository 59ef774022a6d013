use image::{GrayImage, Luma, RgbImage};
use imageproc::filter::laplacian_filter;

/// Rejects patches that are mostly glass or too blurred to be useful.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityCheck {
    /// Largest fraction of background pixels (near-white glass or near-black) allowed.
    pub max_background: f64,
    /// Smallest variance of the Laplacian of the grey image allowed (focus measure).
    pub min_sharpness: f64,
}

impl Default for QualityCheck {
    fn default() -> Self {
        Self { max_background: 0.5, min_sharpness: 15.0 }
    }
}

/// The outcome of a [`QualityCheck`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QualityVerdict {
    /// Good enough to keep.
    Keep,
    /// Too much background; the fraction found.
    Blank(f64),
    /// Out of focus; the variance of the Laplacian found.
    Blurred(f64),
}

impl QualityCheck {
    /// Judges a patch.
    pub fn judge(&self, patch: &RgbImage) -> QualityVerdict {
        let background = background_fraction(patch);
        if background > self.max_background {
            return QualityVerdict::Blank(background);
        }
        let sharpness = sharpness(patch);
        if sharpness < self.min_sharpness {
            return QualityVerdict::Blurred(sharpness);
        }
        QualityVerdict::Keep
    }
}

/// Fraction of pixels that are glass (all channels ≥ 215) or black (all channels ≤ 25).
pub fn background_fraction(patch: &RgbImage) -> f64 {
    let n = patch.pixels().filter(|p| {
        let [r, g, b] = p.0;
        r.min(g).min(b) >= 215 || r.max(g).max(b) <= 25
    });
    n.count() as f64 / (patch.width() as f64 * patch.height() as f64).max(1.0)
}

/// Variance of the Laplacian of the patch's luma: high for sharp tissue, low when blurred.
pub fn sharpness(patch: &RgbImage) -> f64 {
    let grey = GrayImage::from_fn(patch.width(), patch.height(), |x, y| {
        let [r, g, b] = patch.get_pixel(x, y).0;
        Luma([((299 * r as u32 + 587 * g as u32 + 114 * b as u32) / 1000) as u8])
    });
    let lap = laplacian_filter(&grey);
    let n = lap.len().max(1) as f64;
    let (s, s2) = lap.pixels().fold((0.0, 0.0), |(s, s2), p| {
        let v = p.0[0] as f64;
        (s + v, s2 + v * v)
    });
    s2 / n - (s / n).powi(2)
}
