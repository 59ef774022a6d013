//! A whole-slide image through OpenSlide: µm/px and where it came from, levels, patches at a target resolution, the overview.

use std::path::{Path, PathBuf};

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{GrayImage, RgbImage};
use openslide_rs::{Address, OpenSlide, Region, Size};

use crate::{PatchGeometry, Result, SlideError};

/// Where a slide's µm/px came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MppSource {
    /// `openslide.mpp-x` / `openslide.mpp-y`.
    OpenSlide,
    /// `tiff.XResolution` / `tiff.YResolution` with `tiff.ResolutionUnit`.
    TiffResolution,
    /// Given by the user (`--mpp-override`).
    Override,
}

/// Level-0 resolution of a slide in µm per pixel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mpp {
    /// µm per pixel along x.
    pub x: f64,
    /// µm per pixel along y.
    pub y: f64,
    /// Which metadata gave it.
    pub source: MppSource,
}

/// Resolutions outside this range (µm/px) are metadata defaults such as 72 dpi, not scans.
const PLAUSIBLE_MPP: std::ops::RangeInclusive<f64> = 0.01..=50.0;

/// An open whole-slide image with a known resolution.
#[derive(Debug)]
pub struct Slide {
    inner: OpenSlide,
    path: PathBuf,
    mpp: Mpp,
}

impl Slide {
    /// Opens `path` with OpenSlide and resolves its µm/px: `openslide.mpp-x/y`, else the TIFF
    /// resolution tags, else `mpp_override`, which when given takes precedence over both.
    pub fn open(path: impl AsRef<Path>, mpp_override: Option<f64>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(SlideError::Missing { path });
        }
        let inner =
            OpenSlide::new(&path).map_err(|e| SlideError::Unreadable { path: path.clone(), cause: e.to_string() })?;
        let mpp = match mpp_override {
            Some(m) if PLAUSIBLE_MPP.contains(&m) => Mpp { x: m, y: m, source: MppSource::Override },
            Some(m) => {
                return Err(SlideError::Parameter(format!("--mpp-override {m} is outside {:?} µm/px", PLAUSIBLE_MPP)))
            }
            None => resolve_mpp(&inner).ok_or_else(|| SlideError::NoMpp { path: path.clone() })?,
        };
        let slide = Self { inner, path, mpp };
        // A truncated file can open (the header is intact) and fail on the first pixel read.
        slide.read_rgb(slide.level_count() - 1, 0, 0, 1, 1)?;
        Ok(slide)
    }

    /// The file this slide was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Level-0 resolution.
    pub fn mpp(&self) -> Mpp {
        self.mpp
    }

    /// Level-0 width and height in pixels.
    pub fn dimensions(&self) -> (u32, u32) {
        self.level_dimensions(0)
    }

    /// Number of pyramid levels.
    pub fn level_count(&self) -> u32 {
        self.inner.level_count()
    }

    /// Width and height of `level` in pixels.
    pub fn level_dimensions(&self, level: u32) -> (u32, u32) {
        let s = self.inner.all_level_dimensions()[level as usize];
        (s.w, s.h)
    }

    /// Level-0 pixels per pixel of `level`.
    pub fn level_downsample(&self, level: u32) -> f64 {
        self.inner.all_level_downsamples()[level as usize]
    }

    /// The coarsest level whose downsample does not exceed `downsample` (level-0 pixels per
    /// output pixel): the level just finer than the target, so resampling only ever reduces.
    pub fn level_for_downsample(&self, downsample: f64) -> u32 {
        let ds = self.inner.all_level_downsamples();
        (0..ds.len() as u32)
            .filter(|&l| ds[l as usize] <= downsample * (1.0 + 1e-6))
            .max_by(|&a, &b| ds[a as usize].total_cmp(&ds[b as usize]))
            .unwrap_or(0)
    }

    /// Reads `w`×`h` pixels of `level` whose top-left corner is at level-0 (`x`, `y`), as RGB
    /// with transparent areas on the slide's background colour.
    pub fn read_rgb(&self, level: u32, x: u32, y: u32, w: u32, h: u32) -> Result<RgbImage> {
        let region = Region { address: Address { x, y }, level, size: Size { w, h } };
        self.inner.read_image_rgb(&region).map_err(|e| self.region_error(level, x, y, e))
    }

    /// Like [`read_rgb`](Self::read_rgb), but areas outside the scanned region come back as
    /// zeros rather than the background colour (for label masks, where 0 is background).
    fn read_rgb_zero_outside(&self, level: u32, x: u32, y: u32, w: u32, h: u32) -> Result<RgbImage> {
        let region = Region { address: Address { x, y }, level, size: Size { w, h } };
        let rgba = self.inner.read_image_rgba(&region).map_err(|e| self.region_error(level, x, y, e))?;
        Ok(RgbImage::from_fn(w, h, |x, y| {
            let [r, g, b, a] = rgba.get_pixel(x, y).0;
            image::Rgb(if a == 0 { [0, 0, 0] } else { [r, g, b] })
        }))
    }

    fn region_error(&self, level: u32, x: u32, y: u32, e: impl ToString) -> SlideError {
        SlideError::Region { path: self.path.clone(), level, x: x.into(), y: y.into(), cause: e.to_string() }
    }

    /// Reads the patch of `geometry` whose top-left corner is at level-0 (`x`, `y`): the level
    /// just finer than the target resolution, resampled with a Lanczos-3 filter over the exact
    /// (fractional) footprint.
    pub fn read_patch(&self, geometry: &PatchGeometry, x: u32, y: u32) -> Result<RgbImage> {
        let src = |level, x, y, w, h| self.read_rgb(level, x, y, w, h);
        self.read_resampled(geometry, x, y, ResizeAlg::Convolution(FilterType::Lanczos3), src)
    }

    /// Reads a label-mask patch: like [`read_patch`](Self::read_patch) but nearest-neighbour
    /// resampled (labels are never interpolated), returning the first channel; outside the
    /// scanned region the label is 0.
    pub fn read_label_patch(&self, geometry: &PatchGeometry, x: u32, y: u32) -> Result<GrayImage> {
        let src = |level, x, y, w, h| self.read_rgb_zero_outside(level, x, y, w, h);
        let rgb = self.read_resampled(geometry, x, y, ResizeAlg::Nearest, src)?;
        let (w, h) = rgb.dimensions();
        let first: Vec<u8> = rgb.pixels().map(|p| p.0[0]).collect();
        Ok(GrayImage::from_raw(w, h, first).expect("buffer sized from the image"))
    }

    /// Level-0 footprint (width, height) in pixels of a patch of `geometry`.
    pub fn footprint(&self, geometry: &PatchGeometry) -> (f64, f64) {
        let s = geometry.size as f64 * geometry.mpp;
        (s / self.mpp.x, s / self.mpp.y)
    }

    fn read_resampled(
        &self,
        geometry: &PatchGeometry,
        x: u32,
        y: u32,
        alg: ResizeAlg,
        read: impl Fn(u32, u32, u32, u32, u32) -> Result<RgbImage>,
    ) -> Result<RgbImage> {
        let (fx, fy) = self.footprint(geometry);
        let size = geometry.size as f64;
        let level = self.level_for_downsample(fx.min(fy) / size);
        let ds = self.level_downsample(level);
        // Footprint in this level's pixels, and a margin covering the filter's support so the
        // border pixels see real neighbours rather than the edge of the read.
        let (lx, ly, lw, lh) = (x as f64 / ds, y as f64 / ds, fx / ds, fy / ds);
        let margin = (3.0 * (lw / size).max(1.0)).ceil() as i64 + 1;
        let rx0 = (lx.floor() as i64 - margin).max(0);
        let ry0 = (ly.floor() as i64 - margin).max(0);
        let rw = ((lx + lw).ceil() as i64 + margin - rx0) as u32;
        let rh = ((ly + lh).ceil() as i64 + margin - ry0) as u32;
        let (ax, ay) = ((rx0 as f64 * ds).round() as u32, (ry0 as f64 * ds).round() as u32);
        let src = read(level, ax, ay, rw, rh)?;
        let mut dst = RgbImage::new(geometry.size, geometry.size);
        let options = ResizeOptions::new().resize_alg(alg).crop(lx - ax as f64 / ds, ly - ay as f64 / ds, lw, lh);
        Resizer::new().resize(&src, &mut dst, &options).map_err(|e| self.region_error(level, x, y, e))?;
        Ok(dst)
    }

    /// A low-resolution view of the whole slide with about `downsample` level-0 pixels per
    /// pixel (never finer than asked). Read tile by tile from the level just finer than the
    /// target and area-averaged by an integer factor, so no level is ever held whole in memory.
    /// Returns the image and its exact downsample.
    pub fn overview(&self, downsample: f64) -> Result<(RgbImage, f64)> {
        let level = self.level_for_downsample(downsample);
        let level_ds = self.level_downsample(level);
        let factor = ((downsample / level_ds).floor() as u32).max(1);
        let (lw, lh) = self.level_dimensions(level);
        let (ow, oh) = ((lw / factor).max(1), (lh / factor).max(1));
        let tile = factor * 2048u32.div_ceil(factor).max(1);
        let mut out = RgbImage::new(ow, oh);
        let mut resizer = Resizer::new();
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
        for ty in (0..oh * factor).step_by(tile as usize) {
            for tx in (0..ow * factor).step_by(tile as usize) {
                let tw = tile.min(ow * factor - tx);
                let th = tile.min(oh * factor - ty);
                let (ax, ay) = ((tx as f64 * level_ds).round() as u32, (ty as f64 * level_ds).round() as u32);
                let src = self.read_rgb(level, ax, ay, tw, th)?;
                let dst = if factor == 1 {
                    src
                } else {
                    let mut dst = RgbImage::new(tw / factor, th / factor);
                    resizer.resize(&src, &mut dst, &options).map_err(|e| self.region_error(level, ax, ay, e))?;
                    dst
                };
                image::imageops::replace(&mut out, &dst, (tx / factor).into(), (ty / factor).into());
            }
        }
        let (w0, _) = self.dimensions();
        Ok((out, w0 as f64 / ow as f64))
    }
}

fn resolve_mpp(slide: &OpenSlide) -> Option<Mpp> {
    let prop = |name: &str| slide.property_value(name).ok();
    let num = |name: &str| prop(name).and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite() && *v > 0.0);
    if let (Some(x), Some(y)) = (num("openslide.mpp-x"), num("openslide.mpp-y")) {
        if PLAUSIBLE_MPP.contains(&x) && PLAUSIBLE_MPP.contains(&y) {
            return Some(Mpp { x, y, source: MppSource::OpenSlide });
        }
    }
    let um_per_unit = match prop("tiff.ResolutionUnit")?.trim() {
        "centimeter" => 1e4,
        "inch" => 25_400.0,
        _ => return None,
    };
    let x = um_per_unit / num("tiff.XResolution")?;
    let y = num("tiff.YResolution").map_or(x, |r| um_per_unit / r);
    (PLAUSIBLE_MPP.contains(&x) && PLAUSIBLE_MPP.contains(&y)).then_some(Mpp {
        x,
        y,
        source: MppSource::TiffResolution,
    })
}
