//! Stain normalisation as torchstain's NumPy backend computes it: Reinhard (each LAB channel's mean
//! and spread moved to a target's) and Macenko (hematoxylin and eosin vectors in optical density,
//! found by the angular percentiles of the stained pixels, and their concentrations rescaled to a
//! target's); Vahadane's in `vahadane.rs`, the choice among them in `normalizer.rs`. Images too
//! poor in stain to estimate from (glass, a blank patch) pass through.

use image::RgbImage;
use nalgebra::{Matrix2, Matrix3, SymmetricEigen, Vector2, Vector3};

/// What normalising one image came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    /// The image with the target's stain.
    Image(RgbImage),
    /// Too little stain to estimate from (fewer than [`MIN_STAINED`] stained pixels, or no spread):
    /// the image is left as it is.
    Unchanged,
}

/// Fewest stained pixels (optical density ≥ β in every channel) Macenko estimates from.
pub const MIN_STAINED: usize = 16;

/// Reinhard's target: the mean and standard deviation of CIE L*, a* and b* (D65), as torchstain
/// keeps them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reinhard {
    pub means: [f64; 3],
    pub stds: [f64; 3],
}

impl Reinhard {
    /// The target statistics of `target`.
    pub fn fit(target: &RgbImage) -> Self {
        let (means, stds) = lab_stats(&lab_of(target));
        Self { means, stds }
    }

    /// `image` with its LAB channels standardised and moved to the target's mean and spread.
    pub fn normalize(&self, image: &RgbImage) -> Normalized {
        let lab = lab_of(image);
        let (means, stds) = lab_stats(&lab);
        if stds.iter().any(|&s| s < 1e-6) {
            return Normalized::Unchanged;
        }
        let mut out = RgbImage::new(image.width(), image.height());
        for (p, l) in out.pixels_mut().zip(&lab) {
            let moved: [f64; 3] = std::array::from_fn(|c| (l[c] - means[c]) / stds[c] * self.stds[c] + self.means[c]);
            p.0 = lab_to_rgb(moved).map(|v| (v * 255.0) as u8);
        }
        Normalized::Image(out)
    }
}

/// sRGB → linear → XYZ matrix (torchstain's, from OpenCV's documentation).
const RGB2XYZ: [[f64; 3]; 3] =
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]];
/// D65 white.
const WHITE: [f64; 3] = [0.95047, 1.0, 1.08883];

/// Each pixel's CIE LAB (L* in 0–100).
fn lab_of(image: &RgbImage) -> Vec<[f64; 3]> {
    image.pixels().map(|p| rgb_to_lab(p.0)).collect()
}

/// sRGB's decoding of each 8-bit value to linear light.
fn linear_table() -> &'static [f64; 256] {
    static TABLE: std::sync::OnceLock<[f64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|v| {
            let v = v as f64 / 255.0;
            if v > 0.04045 {
                ((v + 0.055) / 1.055).powf(2.4)
            } else {
                v / 12.92
            }
        })
    })
}

/// XYZ → linear RGB, the inverse of [`RGB2XYZ`].
fn xyz_to_rgb() -> &'static Matrix3<f64> {
    static INVERSE: std::sync::OnceLock<Matrix3<f64>> = std::sync::OnceLock::new();
    INVERSE.get_or_init(|| Matrix3::from_row_slice(&RGB2XYZ.concat()).try_inverse().expect("RGB→XYZ is invertible"))
}

/// CIE L* alone (0–100): the lightness [`rgb_to_lab`] gives, from Y only.
pub(crate) fn lightness(rgb: [u8; 3]) -> f64 {
    let table = linear_table();
    let y: f64 = (0..3).map(|c| RGB2XYZ[1][c] * table[rgb[c] as usize]).sum::<f64>() / WHITE[1];
    116.0 * if y > 0.008856 { y.cbrt() } else { 7.787 * y + 16.0 / 116.0 } - 16.0
}

fn rgb_to_lab(rgb: [u8; 3]) -> [f64; 3] {
    let table = linear_table();
    let linear = rgb.map(|v| table[v as usize]);
    let f = |row: usize| {
        let xyz = (0..3).map(|c| RGB2XYZ[row][c] * linear[c]).sum::<f64>() / WHITE[row];
        if xyz > 0.008856 {
            xyz.cbrt()
        } else {
            7.787 * xyz + 16.0 / 116.0
        }
    };
    let (x, y, z) = (f(0), f(1), f(2));
    [116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)]
}

/// CIE LAB → sRGB in [0, 1].
fn lab_to_rgb([l, a, b]: [f64; 3]) -> [f64; 3] {
    let y = (l + 16.0) / 116.0;
    let xyz =
        [a / 500.0 + y, y, y - b / 200.0].map(|v| if v > 0.2068966 { v * v * v } else { (v - 16.0 / 116.0) / 7.787 });
    let xyz: [f64; 3] = std::array::from_fn(|c| xyz[c] * WHITE[c]);
    let rgb = xyz_to_rgb() * Vector3::from(xyz);
    [rgb[0], rgb[1], rgb[2]].map(|v| {
        let v = if v > 0.0031308 { 1.055 * v.powf(1.0 / 2.4) - 0.055 } else { v * 12.92 };
        v.clamp(0.0, 1.0)
    })
}

/// Per-channel mean and (population) standard deviation.
fn lab_stats(lab: &[[f64; 3]]) -> ([f64; 3], [f64; 3]) {
    let n = lab.len().max(1) as f64;
    let means: [f64; 3] = std::array::from_fn(|c| lab.iter().map(|p| p[c]).sum::<f64>() / n);
    let stds = std::array::from_fn(|c| (lab.iter().map(|p| (p[c] - means[c]).powi(2)).sum::<f64>() / n).sqrt());
    (means, stds)
}

/// Macenko's target: the H and E optical-density vectors (columns: RGB) and the 99th percentile of
/// each stain's concentration.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Macenko {
    pub stains: [[f64; 3]; 2],
    pub max_concentrations: [f64; 2],
}

/// Macenko's settings, torchstain's defaults: transmitted light, angular percentile, OD floor.
const IO: f64 = 240.0;
const ALPHA: f64 = 1.0;
const BETA: f64 = 0.15;

impl Macenko {
    /// torchstain's (and the original HEnorm's) reference stain vectors and concentrations.
    pub const REFERENCE: Self =
        Self { stains: [[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]], max_concentrations: [1.9705, 1.0308] };

    /// The stain vectors and concentrations of `target`; `None` when it holds too little stain.
    pub fn fit(target: &RgbImage) -> Option<Self> {
        let od = optical_density(target);
        let stains = stain_vectors(&od)?;
        let c = concentrations(&od, &stains);
        Some(Self { stains, max_concentrations: max_concentrations(&c) })
    }

    /// `image` with its stains replaced by the target's, or [`Normalized::Unchanged`].
    pub fn normalize(&self, image: &RgbImage) -> Normalized {
        match self.unmix(image) {
            Some(c) => Normalized::Image(self.compose(image, &c, [true, true])),
            None => Normalized::Unchanged,
        }
    }

    /// The hematoxylin-only and eosin-only images of `image` in the target's colours (torchstain's
    /// `H` and `E`), or `None` when it holds too little stain.
    pub fn stain_images(&self, image: &RgbImage) -> Option<(RgbImage, RgbImage)> {
        let c = self.unmix(image)?;
        Some((self.compose(image, &c, [true, false]), self.compose(image, &c, [false, true])))
    }

    /// Each pixel's H and E concentrations, rescaled to the target's maxima.
    fn unmix(&self, image: &RgbImage) -> Option<Vec<[f64; 2]>> {
        let od = optical_density(image);
        let stains = stain_vectors(&od)?;
        let c = concentrations(&od, &stains);
        let max = max_concentrations(&c);
        let scale: [f64; 2] = std::array::from_fn(|s| self.max_concentrations[s] / max[s]);
        Some(c.iter().map(|c| [c[0] * scale[0], c[1] * scale[1]]).collect())
    }

    /// The image the target's stains at concentrations `c` make (only the stains `keep` marks).
    fn compose(&self, like: &RgbImage, c: &[[f64; 2]], keep: [bool; 2]) -> RgbImage {
        let mut out = RgbImage::new(like.width(), like.height());
        for (p, c) in out.pixels_mut().zip(c) {
            p.0 = std::array::from_fn(|ch| {
                let od: f64 = (0..2).filter(|&s| keep[s]).map(|s| self.stains[s][ch] * c[s]).sum();
                (IO * (-od).exp()).min(255.0) as u8
            });
        }
        out
    }
}

/// Each pixel's optical density −ln((I + 1) / Io).
fn optical_density(image: &RgbImage) -> Vec<[f64; 3]> {
    static TABLE: std::sync::OnceLock<[f64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| std::array::from_fn(|v| -((v as f64 + 1.0) / IO).ln()));
    image.pixels().map(|p| p.0.map(|v| table[v as usize])).collect()
}

/// The H and E vectors: the stained pixels' optical densities projected on the plane of their two
/// main directions, the directions at the α and 100 − α percentiles of angle, the one with more
/// red first (hematoxylin).
fn stain_vectors(od: &[[f64; 3]]) -> Option<[[f64; 3]; 2]> {
    let stained: Vec<Vector3<f64>> =
        od.iter().filter(|p| p.iter().all(|&v| v >= BETA)).map(|p| Vector3::from(*p)).collect();
    if stained.len() < MIN_STAINED {
        return None;
    }
    let n = stained.len() as f64;
    let mean = stained.iter().sum::<Vector3<f64>>() / n;
    let cov = stained.iter().map(|p| (p - mean) * (p - mean).transpose()).sum::<Matrix3<f64>>() / (n - 1.0);
    let eigen = SymmetricEigen::new(cov);
    // The two largest eigenvalues' vectors, the second largest first (NumPy's eigh order).
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| eigen.eigenvalues[a].total_cmp(&eigen.eigenvalues[b]));
    let (e1, e2) = (eigen.eigenvectors.column(order[1]).into_owned(), eigen.eigenvectors.column(order[2]).into_owned());
    let mut phi: Vec<f64> = stained.iter().map(|p| p.dot(&e2).atan2(p.dot(&e1))).collect();
    let (min_phi, max_phi) = (percentile(&mut phi, ALPHA), percentile(&mut phi, 100.0 - ALPHA));
    let direction = |a: f64| e1 * a.cos() + e2 * a.sin();
    let (v_min, v_max) = (direction(min_phi), direction(max_phi));
    if !(v_min.iter().chain(v_max.iter()).all(|v| v.is_finite())) || (v_min - v_max).norm() < 1e-9 {
        return None;
    }
    let (h, e) = if v_min[0] > v_max[0] { (v_min, v_max) } else { (v_max, v_min) };
    Some([[h[0], h[1], h[2]], [e[0], e[1], e[2]]])
}

/// Least-squares H and E concentrations of every pixel (NumPy's `lstsq` of the 3 × 2 system).
fn concentrations(od: &[[f64; 3]], stains: &[[f64; 3]; 2]) -> Vec<[f64; 2]> {
    let (h, e) = (Vector3::from(stains[0]), Vector3::from(stains[1]));
    let gram = Matrix2::new(h.dot(&h), h.dot(&e), e.dot(&h), e.dot(&e));
    let inverse = gram.try_inverse().unwrap_or_else(Matrix2::zeros);
    od.iter()
        .map(|p| {
            let y = Vector3::from(*p);
            let c = inverse * Vector2::new(h.dot(&y), e.dot(&y));
            [c[0], c[1]]
        })
        .collect()
}

/// The 99th percentile of each stain's concentration.
fn max_concentrations(c: &[[f64; 2]]) -> [f64; 2] {
    std::array::from_fn(|s| percentile(&mut c.iter().map(|c| c[s]).collect::<Vec<_>>(), 99.0))
}

/// NumPy's default (linear) percentile; reorders `values`.
pub(crate) fn percentile(values: &mut [f64], q: f64) -> f64 {
    let rank = (values.len() - 1) as f64 * q / 100.0;
    let (lo, frac) = (rank.floor() as usize, rank.fract());
    let (_, &mut low, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    if frac == 0.0 || above.is_empty() {
        return low;
    }
    let high = above.iter().copied().fold(f64::INFINITY, f64::min);
    low + (high - low) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_as_numpy() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(percentile(&mut v, 50.0), 3.0);
        assert!((percentile(&mut v, 99.0) - 4.96).abs() < 1e-12);
        assert!((percentile(&mut v, 1.0) - 1.04).abs() < 1e-12);
    }

    #[test]
    fn lab_round_trips() {
        for rgb in [[0u8, 0, 0], [255, 255, 255], [200, 120, 170], [90, 60, 140], [12, 200, 90]] {
            let back = lab_to_rgb(rgb_to_lab(rgb)).map(|v| (v * 255.0).round() as u8);
            assert_eq!(back, rgb);
        }
    }
}
