//! Colour operations with torchvision's definitions (brightness, contrast, saturation, hue, greyscale, solarize, Gaussian blur), HED stain jitter, normalisation and its statistics.

use image::{Rgb, RgbImage};

use crate::{AugmentError, Result};

/// ImageNet channel means (RGB, [0, 1] scale), the release's default `image_stats`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// PTCGA200 channel means as published with the release.
pub const PTCGA200_MEAN: [f32; 3] = [0.7184, 0.5076, 0.6476];
/// PTCGA200 channel standard deviations as published with the release.
pub const PTCGA200_STD: [f32; 3] = [0.0380, 0.0527, 0.0352];

/// Pillow's `Image.blend(degenerate, img, factor)` in place, the degenerate value computed from
/// each pixel before it changes: interpolation (or extrapolation) in `f32`, clipped to [0, 255]
/// and truncated, as its C code does.
fn blend(img: &mut RgbImage, factor: f32, degenerate: impl Fn(&Rgb<u8>) -> u8) {
    for p in img.pixels_mut() {
        let d = degenerate(p) as f32;
        for v in p.0.iter_mut() {
            *v = (d + factor * (*v as f32 - d)).clamp(0.0, 255.0) as u8;
        }
    }
}

fn check_factor(name: &str, f: f32) -> Result<()> {
    if f.is_finite() && f >= 0.0 {
        Ok(())
    } else {
        Err(AugmentError::Parameter(format!("{name} factor must be non-negative, got {f}")))
    }
}

/// Pillow's RGB → L: ITU-R 601-2 luma in 16-bit fixed point.
fn luma(p: &Rgb<u8>) -> u8 {
    ((p.0[0] as u32 * 19595 + p.0[1] as u32 * 38470 + p.0[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Scale brightness in place (torchvision `adjust_brightness`: blend with black).
pub fn adjust_brightness(img: &mut RgbImage, factor: f32) -> Result<()> {
    check_factor("brightness", factor)?;
    blend(img, factor, |_| 0);
    Ok(())
}

/// Scale contrast in place (torchvision `adjust_contrast`: blend with the grey of the mean luma).
pub fn adjust_contrast(img: &mut RgbImage, factor: f32) -> Result<()> {
    check_factor("contrast", factor)?;
    let n = (img.width() as u64 * img.height() as u64).max(1);
    let sum: u64 = img.pixels().map(|p| luma(p) as u64).sum();
    let mean = (sum as f64 / n as f64 + 0.5) as u8;
    blend(img, factor, |_| mean);
    Ok(())
}

/// Scale saturation in place (torchvision `adjust_saturation`: blend with the greyscale image).
pub fn adjust_saturation(img: &mut RgbImage, factor: f32) -> Result<()> {
    check_factor("saturation", factor)?;
    blend(img, factor, luma);
    Ok(())
}

/// Greyscale replicated on three channels, in place (torchvision `rgb_to_grayscale(img, 3)`).
pub fn to_grayscale(img: &mut RgbImage) {
    for p in img.pixels_mut() {
        let l = luma(p);
        p.0 = [l, l, l];
    }
}

/// Shift hue in place by `factor` of a full turn, `factor` in [-0.5, 0.5] (torchvision
/// `adjust_hue` on a PIL image: the 8-bit H channel of Pillow's HSV shifted with wrap-around).
pub fn adjust_hue(img: &mut RgbImage, factor: f32) -> Result<()> {
    if !(-0.5..=0.5).contains(&factor) {
        return Err(AugmentError::Parameter(format!("hue factor must be in [-0.5, 0.5], got {factor}")));
    }
    let shift = ((factor * 255.0) as i32).rem_euclid(256) as u8;
    for p in img.pixels_mut() {
        let [h, s, v] = rgb_to_hsv(p.0);
        p.0 = hsv_to_rgb([h.wrapping_add(shift), s, v]);
    }
    Ok(())
}

/// Pillow's 8-bit RGB → HSV.
fn rgb_to_hsv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    if max == min {
        return [0, 0, max];
    }
    let cr = (max - min) as f32;
    let s = cr / max as f32;
    let rc = (max - r) as f32 / cr;
    let gc = (max - g) as f32 / cr;
    let bc = (max - b) as f32 / cr;
    let h = if r == max {
        bc - gc
    } else if g == max {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = ((h / 6.0 + 1.0) as f64 % 1.0) as f32;
    [((h * 255.0) as i32).clamp(0, 255) as u8, ((s * 255.0) as i32).clamp(0, 255) as u8, max]
}

/// Pillow's 8-bit HSV → RGB.
fn hsv_to_rgb([h, s, v]: [u8; 3]) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let hf = h as f32 * 6.0 / 255.0;
    let i = hf.floor() as i32;
    let f = hf - i as f32;
    let fs = s as f32 / 255.0;
    let vf = v as f32;
    let clip = |x: f32| (x.round() as i32).clamp(0, 255) as u8;
    let (p, q, t) = (clip(vf * (1.0 - fs)), clip(vf * (1.0 - fs * f)), clip(vf * (1.0 - fs * (1.0 - f))));
    match i % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Invert, in place, every channel value at or above `threshold` (torchvision `solarize`).
pub fn solarize(img: &mut RgbImage, threshold: u8) {
    for v in img.iter_mut() {
        if *v >= threshold {
            *v = 255 - *v;
        }
    }
}

/// Gaussian blur in place with a `kernel`-tap kernel (odd) of standard deviation `sigma`,
/// reflect padding, rounded back to 8 bits (torchvision `gaussian_blur`).
pub fn gaussian_blur(img: &mut RgbImage, kernel: u32, sigma: f32) -> Result<()> {
    if kernel.is_multiple_of(2) || !(sigma > 0.0 && sigma.is_finite()) {
        return Err(AugmentError::Parameter(format!(
            "blur needs an odd kernel and a positive sigma, got {kernel} and {sigma}"
        )));
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    let half = (kernel / 2) as i64;
    if half as usize >= w.min(h) {
        return Err(AugmentError::Parameter(format!("blur kernel {kernel} is too large for a {w}×{h} image")));
    }
    let weights: Vec<f32> = (0..kernel as i64)
        .map(|i| {
            let x = (i - half) as f32;
            (-0.5 * (x / sigma).powi(2)).exp()
        })
        .collect();
    let total: f32 = weights.iter().sum();
    let weights: Vec<f32> = weights.iter().map(|v| v / total).collect();
    let reflect = |i: i64, n: usize| -> usize {
        let n = n as i64;
        (if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        }) as usize
    };
    // Separable: a horizontal then a vertical pass in f32, as torch's conv2d; each pass adds
    // whole shifted rows, which the compiler vectorises.
    let row_len = w * 3;
    let src = img.as_raw();
    let mut tmp = vec![0f32; w * h * 3];
    let mut padded = vec![0f32; (w + 2 * half as usize) * 3];
    for y in 0..h {
        for (px, chunk) in padded.chunks_exact_mut(3).enumerate() {
            let sx = reflect(px as i64 - half, w);
            for c in 0..3 {
                chunk[c] = src[(y * w + sx) * 3 + c] as f32;
            }
        }
        let out = &mut tmp[y * row_len..(y + 1) * row_len];
        for (k, wt) in weights.iter().enumerate() {
            for (o, p) in out.iter_mut().zip(&padded[k * 3..k * 3 + row_len]) {
                *o += wt * p;
            }
        }
    }
    let mut acc = vec![0f32; row_len];
    for (y, dst) in img.chunks_exact_mut(row_len).enumerate() {
        acc.fill(0.0);
        for (k, wt) in weights.iter().enumerate() {
            let sy = reflect(y as i64 + k as i64 - half, h);
            for (a, t) in acc.iter_mut().zip(&tmp[sy * row_len..(sy + 1) * row_len]) {
                *a += wt * t;
            }
        }
        for (d, a) in dst.iter_mut().zip(&acc) {
            *d = a.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(())
}

/// `(value / 255 − mean) / std` per channel, as `f32` in CHW order (torchvision `to_tensor`
/// followed by `normalize`), written into `out` (3 × height × width values).
pub fn normalize(img: &RgbImage, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) -> Result<()> {
    let plane = (img.width() * img.height()) as usize;
    if out.len() != 3 * plane {
        return Err(AugmentError::Geometry(format!(
            "normalize needs {} values of output, got {}",
            3 * plane,
            out.len()
        )));
    }
    if std.iter().any(|s| s.is_nan() || *s <= 0.0) {
        return Err(AugmentError::Parameter(format!("std must be positive, got {std:?}")));
    }
    let scale = std.map(|s| 1.0 / (255.0 * s));
    let shift = [0, 1, 2].map(|c| mean[c] / std[c]);
    to_planes(img.as_raw(), scale, shift, out);
    Ok(())
}

/// `value · scale − shift` of interleaved RGB bytes into three planes, a pixel at a time into
/// each, so that the loop vectorises.
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn to_planes(rgb: &[u8], scale: [f32; 3], shift: [f32; 3], out: &mut [f32]) {
    let (r, rest) = out.split_at_mut(rgb.len() / 3);
    let (g, b) = rest.split_at_mut(rgb.len() / 3);
    for (p, ((r, g), b)) in rgb.chunks_exact(3).zip(r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut())) {
        *r = p[0] as f32 * scale[0] - shift[0];
        *g = p[1] as f32 * scale[1] - shift[1];
        *b = p[2] as f32 * scale[2] - shift[2];
    }
}

/// RGB from haematoxylin, eosin and DAB optical densities (Ruifrok & Johnston), as in
/// scikit-image's `rgb_from_hed`.
const RGB_FROM_HED: [[f64; 3]; 3] = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]];

fn invert3(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let c = |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [c(1, 1, 2, 2) / det, -c(0, 1, 2, 2) / det, c(0, 1, 1, 2) / det],
        [-c(1, 0, 2, 2) / det, c(0, 0, 2, 2) / det, -c(0, 0, 1, 2) / det],
        [c(1, 0, 2, 1) / det, -c(0, 0, 2, 1) / det, c(0, 0, 1, 1) / det],
    ]
}

/// HED stain jitter in place (Tellez et al. 2018): each pixel's haematoxylin, eosin and DAB
/// concentrations (scikit-image's `rgb2hed`) become `alpha × s + beta` per stain, then back to
/// RGB (`hed2rgb`), rounded to 8 bits. Typical draws: alpha in [0.95, 1.05], beta in
/// [−0.05, 0.05].
pub fn hed_jitter(img: &mut RgbImage, alpha: [f32; 3], beta: [f32; 3]) {
    let hed_from_rgb = invert3(RGB_FROM_HED);
    let log_adjust = (1e-6f64).ln();
    for p in img.pixels_mut() {
        let od = p.0.map(|v| (v as f64 / 255.0).max(1e-6).ln() / log_adjust);
        let mut stain = [0f64; 3];
        for (j, s) in stain.iter_mut().enumerate() {
            let v = (0..3).map(|i| od[i] * hed_from_rgb[i][j]).sum::<f64>().max(0.0);
            *s = v * alpha[j] as f64 + beta[j] as f64;
        }
        for (k, v) in p.0.iter_mut().enumerate() {
            let log_rgb = -(0..3).map(|j| stain[j] * -log_adjust * RGB_FROM_HED[j][k]).sum::<f64>();
            *v = (log_rgb.exp().clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
}
