//! Patch quality: background (glass or black) fraction and sharpness (variance of the Laplacian).

use image::RgbImage;

/// Rejects patches that are mostly glass or too blurred to be useful.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct QualityCheck {
    /// Reject patches with more than this fraction of background pixels (near-white glass or
    /// near-black).
    #[arg(long, default_value_t = 0.5)]
    pub max_background: f64,
    /// Reject patches whose variance of the Laplacian of the grey image is below this (out of
    /// focus).
    #[arg(long, default_value_t = 15.0)]
    pub min_sharpness: f64,
}

impl Default for QualityCheck {
    fn default() -> Self {
        crate::flag_defaults()
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
    let n = count_background(patch.as_raw());
    n as f64 / (patch.width() as f64 * patch.height() as f64).max(1.0)
}

/// Background pixels of RGB bytes, counted without branches so that the loop vectorises.
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn count_background(rgb: &[u8]) -> u32 {
    rgb.chunks_exact(3)
        .map(|p| {
            let (lo, hi) = (p[0].min(p[1]).min(p[2]), p[0].max(p[1]).max(p[2]));
            u32::from(lo >= 215) | u32::from(hi <= 25)
        })
        .sum()
}

/// Variance of the 4-neighbour Laplacian of the patch's luma over interior pixels: high for
/// sharp tissue, low when blurred.
pub fn sharpness(patch: &RgbImage) -> f64 {
    let (w, h) = (patch.width() as usize, patch.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let (s, s2) = laplacian_sums(&patch.as_raw()[..w * h * 3], w, h);
    let n = ((w - 2) * (h - 2)) as f64;
    s2 as f64 / n - (s as f64 / n).powi(2)
}

/// Integer luma (299 R + 587 G + 114 B) / 1000 of RGB bytes, indexed so that the loop (its
/// division by a constant included) vectorises.
#[inline(always)]
fn luma(rgb: &[u8]) -> Vec<i16> {
    let mut luma = vec![0i16; rgb.len() / 3];
    let rgb = &rgb[..3 * luma.len()];
    for (i, l) in luma.iter_mut().enumerate() {
        let v = 299 * rgb[3 * i] as u32 + 587 * rgb[3 * i + 1] as u32 + 114 * rgb[3 * i + 2] as u32;
        *l = (v / 1000) as i16;
    }
    luma
}

/// Sum and sum of squares of the Laplacian of the luma of a `w`×`h` RGB image, over its
/// interior. Each row's sums fit `i32` (|v| ≤ 1020, v² ≤ 1,040,400, a row of up to 2,048
/// values), so the inner loop vectorises; rows add up in `i64`.
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn laplacian_sums(rgb: &[u8], w: usize, h: usize) -> (i64, i64) {
    let luma = luma(rgb);
    let (mut s, mut s2) = (0i64, 0i64);
    for y in 1..h - 1 {
        let (up, row, down) = (&luma[(y - 1) * w..y * w], &luma[y * w..(y + 1) * w], &luma[(y + 1) * w..(y + 2) * w]);
        for x0 in (1..w - 1).step_by(2048) {
            let x1 = (x0 + 2048).min(w - 1);
            let (mut rs, mut rs2) = (0i32, 0i32);
            for x in x0..x1 {
                let v = up[x] as i32 + down[x] as i32 + row[x - 1] as i32 + row[x + 1] as i32 - 4 * row[x] as i32;
                rs += v;
                rs2 += v * v;
            }
            s += rs as i64;
            s2 += rs2 as i64;
        }
    }
    (s, s2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_counts_glass_and_black_at_their_bounds() {
        // 37 pixels (past a vector width, with a remainder): 4 glass, 3 black, the rest tissue.
        let mut px = [[120u8, 80, 150]; 37];
        px[0] = [215, 215, 215];
        px[5] = [255, 230, 216];
        px[17] = [250, 250, 250];
        px[36] = [215, 220, 230];
        px[1] = [25, 25, 25];
        px[20] = [0, 10, 25];
        px[33] = [3, 3, 3];
        px[2] = [214, 250, 250]; // one channel below glass
        px[3] = [26, 0, 0]; // one channel above black
        let img = RgbImage::from_raw(37, 1, px.concat()).unwrap();
        assert_eq!(count_background(img.as_raw()), 7);
        assert_eq!(background_fraction(&img), 7.0 / 37.0);
    }

    #[test]
    fn sharpness_matches_the_plain_sums() {
        let img =
            RgbImage::from_fn(37, 29, |x, y| image::Rgb([(x * 7 + y * 13) as u8, (x * y) as u8, (255 - x * 5) as u8]));
        let l: Vec<i64> =
            img.pixels().map(|p| (299 * p[0] as i64 + 587 * p[1] as i64 + 114 * p[2] as i64) / 1000).collect();
        let (w, h) = (37usize, 29usize);
        let (mut s, mut s2, n) = (0i64, 0i64, ((w - 2) * (h - 2)) as f64);
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let v =
                    l[(y - 1) * w + x] + l[(y + 1) * w + x] + l[y * w + x - 1] + l[y * w + x + 1] - 4 * l[y * w + x];
                s += v;
                s2 += v * v;
            }
        }
        assert_eq!(sharpness(&img), s2 as f64 / n - (s as f64 / n).powi(2));
    }
}
