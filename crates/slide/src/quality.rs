//! Patch quality: background (glass or black) fraction and sharpness (variance of the Laplacian).

use image::RgbImage;

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
    let n = patch
        .as_raw()
        .chunks_exact(3)
        .filter(|p| p[0].min(p[1]).min(p[2]) >= 215 || p[0].max(p[1]).max(p[2]) <= 25)
        .count();
    n as f64 / (patch.width() as f64 * patch.height() as f64).max(1.0)
}

/// Variance of the 4-neighbour Laplacian of the patch's luma over interior pixels: high for
/// sharp tissue, low when blurred.
pub fn sharpness(patch: &RgbImage) -> f64 {
    let (w, h) = (patch.width() as usize, patch.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let luma: Vec<i32> = patch
        .as_raw()
        .chunks_exact(3)
        .map(|p| (299 * p[0] as i32 + 587 * p[1] as i32 + 114 * p[2] as i32) / 1000)
        .collect();
    let (mut s, mut s2) = (0i64, 0i64);
    for y in 1..h - 1 {
        let row = &luma[y * w..(y + 1) * w];
        let (up, down) = (&luma[(y - 1) * w..y * w], &luma[(y + 1) * w..(y + 2) * w]);
        for x in 1..w - 1 {
            let v = (up[x] + down[x] + row[x - 1] + row[x + 1] - 4 * row[x]) as i64;
            s += v;
            s2 += v * v;
        }
    }
    let n = ((w - 2) * (h - 2)) as f64;
    s2 as f64 / n - (s as f64 / n).powi(2)
}
