//! Geometric operations: flips, 90° rotations, crops and resizing with torchvision's rounding.

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{imageops, GrayImage, ImageBuffer, Pixel, RgbImage};

use crate::{AugmentError, Result};

/// Mirror left–right (torchvision `hflip`).
pub fn hflip<P: Pixel + 'static>(img: &ImageBuffer<P, Vec<P::Subpixel>>) -> ImageBuffer<P, Vec<P::Subpixel>> {
    imageops::flip_horizontal(img)
}

/// Mirror top–bottom (torchvision `vflip`).
pub fn vflip<P: Pixel + 'static>(img: &ImageBuffer<P, Vec<P::Subpixel>>) -> ImageBuffer<P, Vec<P::Subpixel>> {
    imageops::flip_vertical(img)
}

/// Rotate by `k` quarter turns counter-clockwise (torchvision `rotate(img, 90 * k)`).
pub fn rot90<P: Pixel + 'static>(img: &ImageBuffer<P, Vec<P::Subpixel>>, k: i32) -> ImageBuffer<P, Vec<P::Subpixel>> {
    match k.rem_euclid(4) {
        0 => img.clone(),
        1 => imageops::rotate270(img),
        2 => imageops::rotate180(img),
        _ => imageops::rotate90(img),
    }
}

/// The `width`×`height` region whose top-left corner is (`left`, `top`) (torchvision `crop`),
/// which must lie inside the image.
pub fn crop<P: Pixel + 'static>(
    img: &ImageBuffer<P, Vec<P::Subpixel>>,
    top: u32,
    left: u32,
    height: u32,
    width: u32,
) -> Result<ImageBuffer<P, Vec<P::Subpixel>>> {
    let (w, h) = img.dimensions();
    if width == 0 || height == 0 || left + width > w || top + height > h {
        return Err(AugmentError::Geometry(format!(
            "crop {width}×{height} at ({left}, {top}) does not fit a {w}×{h} image"
        )));
    }
    Ok(imageops::crop_imm(img, left, top, width, height).to_image())
}

/// The central `size`×`size` region (torchvision `center_crop`: the offset is rounded half to
/// even, as Python's `round`).
pub fn center_crop<P: Pixel + 'static>(
    img: &ImageBuffer<P, Vec<P::Subpixel>>,
    size: u32,
) -> Result<ImageBuffer<P, Vec<P::Subpixel>>> {
    let (w, h) = img.dimensions();
    if size > w || size > h {
        return Err(AugmentError::Geometry(format!("centre crop {size} is larger than the {w}×{h} image")));
    }
    let offset = |len: u32| ((len - size) as f64 / 2.0).round_ties_even() as u32;
    crop(img, offset(h), offset(w), size, size)
}

/// Resize to `width`×`height` with Pillow's antialiased bilinear filter (torchvision `resize` of
/// a PIL image, and of a tensor with `antialias=True`).
pub fn resize(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    resample(img, width, height, ResizeAlg::Convolution(FilterType::Bilinear))
}

/// Resize a label mask by nearest neighbour (labels are never interpolated).
pub fn resize_mask(mask: &GrayImage, width: u32, height: u32) -> Result<GrayImage> {
    if width == 0 || height == 0 {
        return Err(AugmentError::Geometry(format!("cannot resize to {width}×{height}")));
    }
    // Pillow's NEAREST: source index floor((i + 0.5) × in / out).
    let (w, h) = mask.dimensions();
    Ok(GrayImage::from_fn(width, height, |x, y| {
        let sx = (((x as f64 + 0.5) * w as f64 / width as f64) as u32).min(w - 1);
        let sy = (((y as f64 + 0.5) * h as f64 / height as f64) as u32).min(h - 1);
        *mask.get_pixel(sx, sy)
    }))
}

/// Crop then resize (torchvision `resized_crop`, the body of RandomResizedCrop).
pub fn resized_crop(
    img: &RgbImage,
    top: u32,
    left: u32,
    height: u32,
    width: u32,
    out_w: u32,
    out_h: u32,
) -> Result<RgbImage> {
    resize(&crop(img, top, left, height, width)?, out_w, out_h)
}

fn resample(img: &RgbImage, width: u32, height: u32, alg: ResizeAlg) -> Result<RgbImage> {
    if width == 0 || height == 0 || img.width() == 0 || img.height() == 0 {
        return Err(AugmentError::Geometry(format!("cannot resize {:?} to {width}×{height}", img.dimensions())));
    }
    let mut dst = RgbImage::new(width, height);
    Resizer::new()
        .resize(img, &mut dst, &ResizeOptions::new().resize_alg(alg))
        .map_err(|e| AugmentError::Geometry(e.to_string()))?;
    Ok(dst)
}
