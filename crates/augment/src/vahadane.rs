//! Vahadane et al. 2016 (structure-preserving colour normalisation), as staintools computes it,
//! without SPAMS: the tissue's optical densities (CIE L* below 80) factored into two non-negative
//! unit stain vectors and non-negative sparse concentrations (dictionary learning with an L1
//! penalty of 0.1, block coordinate descent on the dictionary), then every pixel's concentrations
//! by a non-negative lasso (L1 penalty 0.01), rescaled to the target's 99th percentiles.

use image::RgbImage;
use nalgebra::{Matrix2, Vector2, Vector3};

use crate::stain::{lightness, percentile, Normalized, MIN_STAINED};

/// The L1 penalty of dictionary learning and of the concentrations (staintools' `lambda1`).
const LAMBDA_DICTIONARY: f64 = 0.1;
const LAMBDA_CONCENTRATIONS: f64 = 0.01;
/// Tissue: CIE L* below this (staintools' luminosity threshold 0.8 of OpenCV's 0–255 L).
const MAX_TISSUE_L: f64 = 80.0;
/// Tissue pixels dictionary learning sees at most (evenly spaced).
const MAX_SAMPLES: usize = 20_000;
/// Alternations of sparse coding and dictionary update.
const ITERATIONS: usize = 50;

/// Vahadane's target: the H and E optical-density vectors (unit, non-negative; H first) and the
/// 99th percentile of each stain's concentration.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Vahadane {
    pub stains: [[f64; 3]; 2],
    pub max_concentrations: [f64; 2],
}

impl Vahadane {
    /// The stain vectors and concentrations of `target`; `None` when it holds too little tissue.
    pub fn fit(target: &RgbImage) -> Option<Self> {
        let stains = stain_vectors(target)?;
        let c = concentrations(&optical_density(target), &stains, LAMBDA_CONCENTRATIONS);
        Some(Self { stains, max_concentrations: max_concentrations(&c)? })
    }

    /// `image` with its stains replaced by the target's, or [`Normalized::Unchanged`].
    pub fn normalize(&self, image: &RgbImage) -> Normalized {
        let Some(stains) = stain_vectors(image) else { return Normalized::Unchanged };
        let c = concentrations(&optical_density(image), &stains, LAMBDA_CONCENTRATIONS);
        let Some(max) = max_concentrations(&c) else { return Normalized::Unchanged };
        let scale: [f64; 2] = std::array::from_fn(|s| self.max_concentrations[s] / max[s]);
        let mut out = RgbImage::new(image.width(), image.height());
        for (p, c) in out.pixels_mut().zip(&c) {
            p.0 = std::array::from_fn(|ch| {
                let od: f64 = (0..2).map(|s| self.stains[s][ch] * c[s] * scale[s]).sum();
                (255.0 * (-od).exp()).round().min(255.0) as u8
            });
        }
        Normalized::Image(out)
    }
}

/// Each pixel's optical density −ln(max(I, 1) / 255), as staintools converts.
fn optical_density(image: &RgbImage) -> Vec<[f64; 3]> {
    static TABLE: std::sync::OnceLock<[f64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| std::array::from_fn(|v| -((v.max(1) as f64) / 255.0).ln()));
    image.pixels().map(|p| p.0.map(|v| table[v as usize])).collect()
}

/// The H and E vectors of `image`'s tissue by non-negative sparse dictionary learning; `None`
/// with fewer than [`MIN_STAINED`] tissue pixels or a degenerate factorisation.
pub fn stain_vectors(image: &RgbImage) -> Option<[[f64; 3]; 2]> {
    let tissue: Vec<Vector3<f64>> = image
        .pixels()
        .filter(|p| lightness(p.0) < MAX_TISSUE_L)
        .map(|p| Vector3::from(optical_density_of(p.0)))
        .filter(|od| od.norm() > 0.0)
        .collect();
    if tissue.len() < MIN_STAINED {
        return None;
    }
    let step = tissue.len().div_ceil(MAX_SAMPLES);
    let x: Vec<Vector3<f64>> = tissue.into_iter().step_by(step).collect();
    let mut d = initial_dictionary(&x)?;
    for _ in 0..ITERATIONS {
        let lasso = Lasso::new(&d, LAMBDA_DICTIONARY);
        let a: Vec<[f64; 2]> = x.iter().map(|x| lasso.code(x)).collect();
        update_dictionary(&mut d, &x, &a);
    }
    let unit = d.map(|v| v.try_normalize(1e-12));
    let [Some(first), Some(second)] = unit else { return None };
    if first.dot(&second) > 1.0 - 1e-9 {
        return None;
    }
    let (h, e) = if first[0] >= second[0] { (first, second) } else { (second, first) };
    Some([[h[0], h[1], h[2]], [e[0], e[1], e[2]]])
}

fn optical_density_of(rgb: [u8; 3]) -> [f64; 3] {
    rgb.map(|v| -((v.max(1) as f64) / 255.0).ln())
}

/// Two starting atoms: the sample farthest in angle from the mean direction, and the one
/// farthest in angle from it (deterministic, and apart for any two-stain tissue).
fn initial_dictionary(x: &[Vector3<f64>]) -> Option<[Vector3<f64>; 2]> {
    let unit: Vec<Vector3<f64>> = x.iter().filter_map(|v| v.try_normalize(1e-12)).collect();
    let mean = unit.iter().sum::<Vector3<f64>>().try_normalize(1e-12)?;
    let farthest = |from: &Vector3<f64>| unit.iter().copied().min_by(|a, b| a.dot(from).total_cmp(&b.dot(from)));
    let first = farthest(&mean)?;
    let second = farthest(&first)?;
    Some([first, second])
}

/// The non-negative lasso of samples on two atoms: argmin ½‖x − Dα‖² + λ(α₁ + α₂) over α ≥ 0,
/// exactly (the best of the four supports), with the atoms' Gram matrix found once.
struct Lasso {
    d: [Vector3<f64>; 2],
    gram: Matrix2<f64>,
    inverse: Option<Matrix2<f64>>,
    lambda: f64,
}

impl Lasso {
    fn new(d: &[Vector3<f64>; 2], lambda: f64) -> Self {
        let gram = Matrix2::new(d[0].dot(&d[0]), d[0].dot(&d[1]), d[1].dot(&d[0]), d[1].dot(&d[1]));
        Self { d: *d, gram, inverse: gram.try_inverse(), lambda }
    }

    /// The codes of `x`.
    fn code(&self, x: &Vector3<f64>) -> [f64; 2] {
        let g = &self.gram;
        // With the penalty folded in: minimise ½αᵀGα − cᵀα (‖x‖² left out).
        let c = [self.d[0].dot(x) - self.lambda, self.d[1].dot(x) - self.lambda];
        let objective = |a: [f64; 2]| {
            0.5 * (g[(0, 0)] * a[0] * a[0] + 2.0 * g[(0, 1)] * a[0] * a[1] + g[(1, 1)] * a[1] * a[1])
                - c[0] * a[0]
                - c[1] * a[1]
        };
        let (mut best, mut least) = ([0.0, 0.0], 0.0);
        let mut consider = |a: [f64; 2]| {
            let f = objective(a);
            if f < least {
                (best, least) = (a, f);
            }
        };
        for k in 0..2 {
            if g[(k, k)] > 0.0 && c[k] > 0.0 {
                let mut a = [0.0; 2];
                a[k] = c[k] / g[(k, k)];
                consider(a);
            }
        }
        if let Some(inverse) = &self.inverse {
            let a = inverse * Vector2::new(c[0], c[1]);
            if a[0] >= 0.0 && a[1] >= 0.0 {
                consider([a[0], a[1]]);
            }
        }
        best
    }
}

/// One pass of block coordinate descent on the atoms (Mairal et al. 2010), each kept
/// non-negative and within the unit ball.
fn update_dictionary(d: &mut [Vector3<f64>; 2], x: &[Vector3<f64>], a: &[[f64; 2]]) {
    let mut gram = Matrix2::<f64>::zeros();
    let mut xa = [Vector3::<f64>::zeros(); 2];
    for (x, a) in x.iter().zip(a) {
        for k in 0..2 {
            xa[k] += x * a[k];
            for l in 0..2 {
                gram[(k, l)] += a[k] * a[l];
            }
        }
    }
    for k in 0..2 {
        if gram[(k, k)] < 1e-12 {
            continue;
        }
        let fitted = d[0] * gram[(0, k)] + d[1] * gram[(1, k)];
        let u = (d[k] + (xa[k] - fitted) / gram[(k, k)]).map(|v| v.max(0.0));
        d[k] = u / u.norm().max(1.0);
    }
}

/// Every pixel's non-negative lasso concentrations on `stains`.
fn concentrations(od: &[[f64; 3]], stains: &[[f64; 3]; 2], lambda: f64) -> Vec<[f64; 2]> {
    let lasso = Lasso::new(&stains.map(Vector3::from), lambda);
    od.iter().map(|p| lasso.code(&Vector3::from(*p))).collect()
}

/// The 99th percentile of each stain's concentration; `None` if one is zero (a stain absent).
fn max_concentrations(c: &[[f64; 2]]) -> Option<[f64; 2]> {
    let max: [f64; 2] = std::array::from_fn(|s| percentile(&mut c.iter().map(|c| c[s]).collect::<Vec<_>>(), 99.0));
    max.iter().all(|&m| m > 1e-9).then_some(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lasso_of_two_atoms_is_the_best_support() {
        let d = [Vector3::new(1.0, 0.0, 0.0), Vector3::new(0.0, 1.0, 0.0)];
        let lasso = Lasso::new(&d, 0.1);
        let a = lasso.code(&Vector3::new(0.5, 0.3, 0.0));
        assert!((a[0] - 0.4).abs() < 1e-12 && (a[1] - 0.2).abs() < 1e-12, "{a:?}");
        assert_eq!(lasso.code(&Vector3::new(0.05, -1.0, 0.0)), [0.0, 0.0], "a small or negative fit is zero");
        // Correlated atoms: the exact optimum beats every point of a fine grid.
        let d = [Vector3::new(0.8, 0.6, 0.0), Vector3::new(0.6, 0.8, 0.0)];
        let (lasso, x) = (Lasso::new(&d, 0.05), Vector3::new(0.9, 0.5, 0.1));
        let f = |a: [f64; 2]| 0.5 * (x - d[0] * a[0] - d[1] * a[1]).norm_squared() + 0.05 * (a[0] + a[1]);
        let best = f(lasso.code(&x));
        for i in 0..=100 {
            for j in 0..=100 {
                assert!(best <= f([i as f64 / 50.0, j as f64 / 50.0]) + 1e-12);
            }
        }
    }
}
