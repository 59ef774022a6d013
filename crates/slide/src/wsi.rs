//! A whole-slide image: µm/px and where it came from, levels, patches at a target resolution, the overview, read natively or through OpenSlide.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{GrayImage, RgbImage, RgbaImage};
use openslide_rs::{Address, OpenSlide, Region, Size};
use patchtcga_tiff::{Flavour, TiffError, TiffSlide};

use crate::{PatchGeometry, Result, SlideError};

/// Where a slide's µm/px came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MppSource {
    /// The scanner's own metadata (OpenSlide's `openslide.mpp-x` / `-y`; Aperio's `MPP`).
    Vendor,
    /// `tiff.XResolution` / `tiff.YResolution` with `tiff.ResolutionUnit`.
    TiffResolution,
    /// Given by the user (`--mpp-override`).
    Override,
    /// Nowhere: the slide states none (only [`Slide::open_unmeasured`] opens such a slide).
    Missing,
}

impl fmt::Display for MppSource {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Self::Vendor => "vendor",
            Self::TiffResolution => "tiff-resolution",
            Self::Override => "override",
            Self::Missing => "missing",
        })
    }
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

/// Which code reads a slide's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reader {
    /// The native reader where it serves the file (Aperio SVS, generic and OME tiled TIFF with
    /// JPEG, LZW, Deflate or stored tiles), OpenSlide for everything else.
    #[default]
    Auto,
    /// The native reader only; a file it does not serve is an error.
    Native,
    /// OpenSlide only.
    OpenSlide,
}

impl FromStr for Reader {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "openslide" => Ok(Self::OpenSlide),
            other => Err(format!("unknown reader {other:?} (auto, native or openslide)")),
        }
    }
}

impl fmt::Display for Reader {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::OpenSlide => "openslide",
        })
    }
}

/// How to open a slide (the `--mpp-override`, `--reader` and `--tile-cache-mb` flags of every
/// command that reads slides).
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct SlideOptions {
    /// Level-0 µm/px for slides whose metadata has none (or is wrong).
    #[arg(long)]
    pub mpp_override: Option<f64>,
    /// Which reader serves the slides: auto (patchtcga's own for Aperio SVS and tiled TIFF,
    /// OpenSlide for the rest), native or openslide.
    #[arg(long, default_value_t = Reader::Auto)]
    pub reader: Reader,
    /// Decoded tiles the native reader keeps per open slide, in MiB.
    #[arg(long, default_value_t = DEFAULT_TILE_CACHE_MB)]
    pub tile_cache_mb: u64,
}

/// Tile cache per open slide unless told otherwise: a band of ~1,400 tiles of 240 px, enough
/// for neighbouring grid patches (and the row below) to share their tiles.
pub const DEFAULT_TILE_CACHE_MB: u64 = 256;

impl Default for SlideOptions {
    fn default() -> Self {
        crate::flag_defaults()
    }
}

impl SlideOptions {
    /// The defaults with a µm/px override.
    pub fn with_mpp(mpp_override: Option<f64>) -> Self {
        Self { mpp_override, ..Self::default() }
    }

    /// These options for one slide of a slide list: its own `mpp` column, when given, over
    /// `--mpp-override`.
    pub fn for_slide(&self, mpp: Option<f64>) -> Self {
        Self { mpp_override: mpp.or(self.mpp_override), ..*self }
    }
}

/// The reader serving an open slide, as `info` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedBy {
    /// patchtcga's own reader.
    Native(Flavour),
    /// OpenSlide.
    OpenSlide,
}

impl fmt::Display for ServedBy {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Native(Flavour::Aperio) => f.write_str("native reader (Aperio SVS)"),
            Self::Native(Flavour::Generic) => f.write_str("native reader (tiled TIFF)"),
            Self::Native(Flavour::Dicom) => f.write_str("native reader (DICOM)"),
            Self::OpenSlide => f.write_str("OpenSlide"),
        }
    }
}

#[derive(Debug)]
enum Backend {
    Native(Box<TiffSlide>),
    OpenSlide(Box<OpenSlide>),
}

/// Size and downsample of one level.
#[derive(Debug, Clone, Copy)]
struct LevelInfo {
    width: u32,
    height: u32,
    downsample: f64,
}

/// A region read from a level (decoded at a scale) and where its top-left pixel lies in
/// that scaled level's pixel coordinates.
struct LevelRegion {
    image: RgbImage,
    origin: (f64, f64),
}

/// What to put where a read leaves the scanned area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outside {
    /// The slide's background colour (white).
    Background,
    /// Zeros (label masks).
    Zero,
}

/// An open whole-slide image with a known resolution.
#[derive(Debug)]
pub struct Slide {
    backend: Backend,
    path: PathBuf,
    mpp: Mpp,
    levels: Vec<LevelInfo>,
    /// OpenSlide's view of a natively served file (its properties and associated images),
    /// opened on first use; `None` where OpenSlide declines the file.
    metadata: OnceLock<Option<Box<OpenSlide>>>,
}

impl Slide {
    /// Opens `path` with the reader `options` choose and resolves its µm/px: the scanner's
    /// own, else the TIFF resolution tags; `mpp_override`, when given, takes precedence.
    pub fn open(path: impl AsRef<Path>, options: &SlideOptions) -> Result<Self> {
        let slide = Self::open_unmeasured(path, options)?;
        slide.measured_mpp()?;
        Ok(slide)
    }

    /// Opens `path` as [`open`](Self::open) does, but also when the slide states no µm/px (as
    /// openslide-python opens it, for viewing): its [`mpp`](Self::mpp) is then NaN with
    /// [`MppSource::Missing`], and [`measured_mpp`](Self::measured_mpp) refuses it.
    pub fn open_unmeasured(path: impl AsRef<Path>, options: &SlideOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        // A DICOM series is a folder.
        if !path.is_file() && !path.is_dir() {
            return Err(SlideError::Missing { path });
        }
        let backend = open_backend(&path, options)?;
        let levels = level_infos(&backend);
        let mpp = match options.mpp_override {
            Some(m) if PLAUSIBLE_MPP.contains(&m) => Mpp { x: m, y: m, source: MppSource::Override },
            Some(m) => {
                return Err(SlideError::Parameter(format!("--mpp-override {m} is outside {:?} µm/px", PLAUSIBLE_MPP)))
            }
            None => resolve_mpp(&backend).unwrap_or(Mpp { x: f64::NAN, y: f64::NAN, source: MppSource::Missing }),
        };
        let slide = Self { backend, path, mpp, levels, metadata: OnceLock::new() };
        // A truncated file can open (the header is intact) and fail on the first pixel read.
        slide.read_rgb(slide.level_count() - 1, 0, 0, 1, 1)?;
        Ok(slide)
    }

    /// The file this slide was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which reader serves this slide.
    pub fn served_by(&self) -> ServedBy {
        match &self.backend {
            Backend::Native(t) => ServedBy::Native(t.flavour()),
            Backend::OpenSlide(_) => ServedBy::OpenSlide,
        }
    }

    /// Where this slide's annotations lie: its size, and the level-0 position of QuPath's (0, 0)
    /// (OpenSlide's `openslide.bounds-x/y`, the scanned area QuPath crops an OpenSlide slide to).
    pub fn annotation_frame(&self) -> crate::AnnotationFrame {
        let bound = |name: &str| match &self.backend {
            Backend::OpenSlide(o) => {
                o.property_value(name).ok().and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
            }
            Backend::Native(_) => 0.0,
        };
        crate::AnnotationFrame {
            dims: self.dimensions(),
            qupath_offset: (bound("openslide.bounds-x"), bound("openslide.bounds-y")),
        }
    }

    /// Level-0 resolution.
    pub fn mpp(&self) -> Mpp {
        self.mpp
    }

    /// Level-0 resolution, refused in words for a slide that states none.
    pub fn measured_mpp(&self) -> Result<Mpp> {
        match self.mpp.source {
            MppSource::Missing => Err(SlideError::NoMpp { path: self.path.clone() }),
            _ => Ok(self.mpp),
        }
    }

    /// Level-0 width and height in pixels.
    pub fn dimensions(&self) -> (u32, u32) {
        self.level_dimensions(0)
    }

    /// Number of pyramid levels.
    pub fn level_count(&self) -> u32 {
        self.levels.len() as u32
    }

    /// Width and height of `level` in pixels.
    pub fn level_dimensions(&self, level: u32) -> (u32, u32) {
        let l = self.levels[level as usize];
        (l.width, l.height)
    }

    /// Level-0 pixels per pixel of `level`.
    pub fn level_downsample(&self, level: u32) -> f64 {
        self.levels[level as usize].downsample
    }

    /// The coarsest level whose downsample does not exceed `downsample` (level-0 pixels per
    /// output pixel): the level just finer than the target, so resampling only ever reduces.
    pub fn level_for_downsample(&self, downsample: f64) -> u32 {
        (0..self.level_count())
            .filter(|&l| self.level_downsample(l) <= downsample * (1.0 + 1e-6))
            .max_by(|&a, &b| self.level_downsample(a).total_cmp(&self.level_downsample(b)))
            .unwrap_or(0)
    }

    /// The level, and the size in eighths its tiles are decoded at, to read for `downsample`
    /// level-0 pixels per output pixel keeping at least `oversample` source pixels per output
    /// pixel: the native reader decodes JPEG tiles at 1/8–7/8 size (libjpeg-turbo's scaled
    /// IDCT) when the level holds more pixels than that.
    fn source_for_downsample(&self, downsample: f64, oversample: f64) -> (u32, u32) {
        let level = self.level_for_downsample(downsample);
        let Backend::Native(t) = &self.backend else { return (level, 8) };
        // Source pixels per output pixel at eighths n: downsample / level downsample × n / 8.
        let room = downsample / self.level_downsample(level) / 8.0;
        let fits = |n: &u32| *n as f64 * room >= oversample * (1.0 - 1e-6);
        (level, t.levels()[level as usize].scales().iter().copied().filter(fits).min().unwrap_or(8))
    }

    /// Reads `w`×`h` pixels of `level` whose top-left corner is at level-0 (`x`, `y`), as RGB
    /// with transparent areas on the slide's background colour.
    pub fn read_rgb(&self, level: u32, x: u32, y: u32, w: u32, h: u32) -> Result<RgbImage> {
        let ds = self.level_downsample(level);
        let (lx, ly) = ((x as f64 / ds).round() as i64, (y as f64 / ds).round() as i64);
        Ok(self.read_level(level, 8, lx, ly, w, h, Outside::Background)?.image)
    }

    /// Reads `w`×`h` pixels of `level` whose top-left corner is at level-0 (`x`, `y`), which
    /// may lie outside the slide, as openslide-python's `read_region` does: straight-alpha RGBA,
    /// transparent (all zeros) outside the level and wherever the scan left no pixels.
    pub fn read_rgba(&self, level: u32, x: i64, y: i64, w: u32, h: u32) -> Result<RgbaImage> {
        let ds = self.level_downsample(level);
        let (lx, ly) = ((x as f64 / ds).round() as i64, (y as f64 / ds).round() as i64);
        let (lw, lh) = self.level_dimensions(level);
        // The part of the request inside the level, in level pixels.
        let (x0, y0) = (lx.max(0), ly.max(0));
        let (x1, y1) = ((lx + w as i64).min(lw as i64), (ly + h as i64).min(lh as i64));
        let mut out = RgbaImage::new(w, h);
        if x1 <= x0 || y1 <= y0 {
            return Ok(out);
        }
        let (cw, ch) = ((x1 - x0) as u32, (y1 - y0) as u32);
        let (ox, oy) = ((x0 - lx) as usize, (y0 - ly) as usize);
        let row = |r: usize| ((oy + r) * w as usize + ox) * 4..((oy + r) * w as usize + ox + cw as usize) * 4;
        let buf: &mut [u8] = &mut out;
        match &self.backend {
            Backend::Native(t) => {
                let rgb = t
                    .read(level as usize, 8, x0, y0, cw, ch, [255; 3])
                    .map_err(|e| self.region_error(level, x0, y0, e))?;
                for (r, src) in rgb.as_raw().chunks_exact(cw as usize * 3).enumerate() {
                    opaque_rgba(src, &mut buf[row(r)]);
                }
            }
            Backend::OpenSlide(o) => {
                let address = Address { x: (x0 as f64 * ds).round() as u32, y: (y0 as f64 * ds).round() as u32 };
                let rgba = o
                    .read_image_rgba(&Region { address, level, size: Size { w: cw, h: ch } })
                    .map_err(|e| self.region_error(level, x0, y0, e))?;
                for (r, src) in rgba.as_raw().chunks_exact(cw as usize * 4).enumerate() {
                    buf[row(r)].copy_from_slice(src);
                }
            }
        }
        Ok(out)
    }

    /// OpenSlide's view of this file, for what only it knows (properties, associated images).
    fn openslide_view(&self) -> Option<&OpenSlide> {
        match &self.backend {
            Backend::OpenSlide(o) => Some(o),
            Backend::Native(_) => {
                self.metadata.get_or_init(|| OpenSlide::new(&self.path).ok().map(Box::new)).as_deref()
            }
        }
    }

    /// The slide's properties as openslide-python lists them (OpenSlide's own where it reads
    /// the file, else the `openslide.*` keys patchtcga knows), with `patchtcga.*` keys saying
    /// which reader serves it and where its µm/px came from.
    pub fn properties(&self) -> BTreeMap<String, String> {
        let mut props = BTreeMap::new();
        match self.openslide_view() {
            Some(o) => {
                for name in o.property_names().unwrap_or_default() {
                    if let Ok(value) = o.property_value(&name) {
                        props.insert(name, value);
                    }
                }
            }
            None => self.own_properties(&mut props),
        }
        props.insert("patchtcga.reader".into(), self.served_by().to_string());
        if let Ok(mpp) = self.measured_mpp() {
            props.insert("patchtcga.mpp-x".into(), mpp.x.to_string());
            props.insert("patchtcga.mpp-y".into(), mpp.y.to_string());
        }
        props.insert("patchtcga.mpp-source".into(), self.mpp.source.to_string());
        props
    }

    /// The `openslide.*` properties of a file only the native reader opens.
    fn own_properties(&self, props: &mut BTreeMap<String, String>) {
        let mut set = |k: String, v: String| {
            props.insert(k, v);
        };
        set("openslide.level-count".into(), self.level_count().to_string());
        for l in 0..self.level_count() {
            let (w, h) = self.level_dimensions(l);
            set(format!("openslide.level[{l}].width"), w.to_string());
            set(format!("openslide.level[{l}].height"), h.to_string());
            set(format!("openslide.level[{l}].downsample"), self.level_downsample(l).to_string());
        }
        if matches!(self.mpp.source, MppSource::Vendor | MppSource::TiffResolution) {
            set("openslide.mpp-x".into(), self.mpp.x.to_string());
            set("openslide.mpp-y".into(), self.mpp.y.to_string());
        }
        if let Backend::Native(t) = &self.backend {
            let vendor = match t.flavour() {
                Flavour::Aperio => "aperio",
                Flavour::Generic => "generic-tiff",
                Flavour::Dicom => "dicom",
            };
            set("openslide.vendor".into(), vendor.into());
            if let Some((study, series)) = t.dicom_uids() {
                set("dicom.StudyInstanceUID".into(), study.into());
                set("dicom.SeriesInstanceUID".into(), series.into());
            }
            if let Some(d) = t.description() {
                set("tiff.ImageDescription".into(), d.into());
            }
        }
    }

    /// A DICOM series' study and series instance UIDs.
    pub fn dicom_uids(&self) -> Option<(&str, &str)> {
        match &self.backend {
            Backend::Native(t) => t.dicom_uids(),
            Backend::OpenSlide(_) => None,
        }
    }

    /// The ICC colour profile the slide embeds, as read by the native reader (OpenSlide 3.4
    /// reads none).
    pub fn icc_profile(&self) -> Option<&[u8]> {
        match &self.backend {
            Backend::Native(t) => t.icc_profile(),
            Backend::OpenSlide(_) => None,
        }
    }

    /// Names of the slide's associated images (label, macro, thumbnail…), as OpenSlide lists them.
    pub fn associated_image_names(&self) -> Vec<String> {
        if let Backend::Native(t) = &self.backend {
            let native = t.associated_image_names();
            if !native.is_empty() {
                return native.into_iter().map(String::from).collect();
            }
        }
        self.openslide_view().and_then(|o| o.associated_image_names().ok()).unwrap_or_default()
    }

    /// The associated image `name` as straight-alpha RGBA.
    pub fn associated_image(&self, name: &str) -> Result<RgbaImage> {
        let unknown = || SlideError::Parameter(format!("{}: no associated image {name:?}", self.path.display()));
        let unreadable = |e: String| SlideError::Unreadable {
            path: self.path.clone(),
            cause: format!("associated image {name:?}: {e}"),
        };
        if let Backend::Native(t) = &self.backend {
            if let Some(image) = t.associated_image(name) {
                let rgb = image.map_err(|e| unreadable(e.to_string()))?;
                let mut rgba = RgbaImage::new(rgb.width(), rgb.height());
                opaque_rgba(rgb.as_raw(), &mut rgba);
                return Ok(rgba);
            }
        }
        let o = self.openslide_view().ok_or_else(unknown)?;
        if !self.associated_image_names().iter().any(|n| n == name) {
            return Err(unknown());
        }
        o.read_associated_image_rgba(name).map_err(|e| unreadable(e.to_string()))
    }

    /// Reads `w`×`h` pixels of `level` decoded at `eighths`/8 of its size, from (`lx`, `ly`) in
    /// that scaled level's pixels. OpenSlide addresses regions in level-0 pixels, so its regions start at
    /// the level-0 pixel nearest the asked corner; the origin returned says where exactly.
    #[allow(clippy::too_many_arguments)] // a region: level, scale, corner, size, fill
    fn read_level(
        &self,
        level: u32,
        eighths: u32,
        lx: i64,
        ly: i64,
        w: u32,
        h: u32,
        outside: Outside,
    ) -> Result<LevelRegion> {
        match &self.backend {
            Backend::Native(t) => {
                let fill = if outside == Outside::Zero { [0; 3] } else { [255; 3] };
                let image = t
                    .read(level as usize, eighths, lx, ly, w, h, fill)
                    .map_err(|e| self.region_error(level, lx, ly, e))?;
                Ok(LevelRegion { image, origin: (lx as f64, ly as f64) })
            }
            Backend::OpenSlide(o) => {
                debug_assert_eq!(eighths, 8, "OpenSlide decodes at full scale");
                let ds = self.level_downsample(level);
                let (ax, ay) = ((lx.max(0) as f64 * ds).round() as u32, (ly.max(0) as f64 * ds).round() as u32);
                let region = Region { address: Address { x: ax, y: ay }, level, size: Size { w, h } };
                let image = match outside {
                    Outside::Background => o.read_image_rgb(&region),
                    Outside::Zero => o.read_image_rgba(&region).map(|rgba| {
                        RgbImage::from_fn(w, h, |x, y| {
                            let [r, g, b, a] = rgba.get_pixel(x, y).0;
                            image::Rgb(if a == 0 { [0, 0, 0] } else { [r, g, b] })
                        })
                    }),
                }
                .map_err(|e| self.region_error(level, ax.into(), ay.into(), e))?;
                Ok(LevelRegion { image, origin: (ax as f64 / ds, ay as f64 / ds) })
            }
        }
    }

    fn region_error(&self, level: u32, x: i64, y: i64, e: impl ToString) -> SlideError {
        SlideError::Region { path: self.path.clone(), level, x, y, cause: e.to_string() }
    }

    /// Reads the patch of `geometry` whose top-left corner is at level-0 (`x`, `y`): the level
    /// just finer than the target resolution, resampled with a Lanczos-3 filter over the exact
    /// (fractional) footprint.
    pub fn read_patch(&self, geometry: &PatchGeometry, x: u32, y: u32) -> Result<RgbImage> {
        self.read_resampled(geometry, x, y, ResizeAlg::Convolution(FilterType::Lanczos3), Outside::Background)
    }

    /// Reads a label-mask patch: like [`read_patch`](Self::read_patch) but nearest-neighbour
    /// resampled (labels are never interpolated), returning the first channel; outside the
    /// scanned region the label is 0.
    pub fn read_label_patch(&self, geometry: &PatchGeometry, x: u32, y: u32) -> Result<GrayImage> {
        let rgb = self.read_resampled(geometry, x, y, ResizeAlg::Nearest, Outside::Zero)?;
        let (w, h) = rgb.dimensions();
        let first: Vec<u8> = rgb.pixels().map(|p| p.0[0]).collect();
        Ok(GrayImage::from_raw(w, h, first).expect("buffer sized from the image"))
    }

    /// Level-0 footprint (width, height) in pixels of a patch of `geometry`.
    pub fn footprint(&self, geometry: &PatchGeometry) -> (f64, f64) {
        let s = geometry.size as f64 * geometry.mpp;
        (s / self.mpp.x, s / self.mpp.y)
    }

    /// Source pixels per output pixel kept when patches come from DCT-scaled tiles: enough
    /// that Lanczos, not the scaled IDCT, shapes the result (closer, the IDCT's block edges
    /// show: 7/8 or 6/8 for a 0.39 µm/px patch of a 40× scan is 39 dB from full decoding).
    const PATCH_OVERSAMPLE: f64 = 2.0;

    fn read_resampled(
        &self,
        geometry: &PatchGeometry,
        x: u32,
        y: u32,
        alg: ResizeAlg,
        outside: Outside,
    ) -> Result<RgbImage> {
        let (fx, fy) = self.footprint(geometry);
        let size = geometry.size as f64;
        // Labels are never read through scaled decoding (it blends classes).
        let oversample = if outside == Outside::Zero { f64::INFINITY } else { Self::PATCH_OVERSAMPLE };
        let (level, eighths) = self.source_for_downsample(fx.min(fy) / size, oversample);
        let ds = self.level_downsample(level) * 8.0 / eighths as f64;
        // Footprint in this source's pixels, and a margin covering the filter's support so the
        // border pixels see real neighbours rather than the edge of the read.
        let (lx, ly, lw, lh) = (x as f64 / ds, y as f64 / ds, fx / ds, fy / ds);
        let margin = (3.0 * (lw / size).max(1.0)).ceil() as i64 + 1;
        let rx0 = (lx.floor() as i64 - margin).max(0);
        let ry0 = (ly.floor() as i64 - margin).max(0);
        let rw = ((lx + lw).ceil() as i64 + margin - rx0) as u32;
        let rh = ((ly + lh).ceil() as i64 + margin - ry0) as u32;
        let src = self.read_level(level, eighths, rx0, ry0, rw, rh, outside)?;
        let mut dst = RgbImage::new(geometry.size, geometry.size);
        let options = ResizeOptions::new().resize_alg(alg).crop(lx - src.origin.0, ly - src.origin.1, lw, lh);
        Resizer::new()
            .resize(&src.image, &mut dst, &options)
            .map_err(|e| self.region_error(level, x.into(), y.into(), e))?;
        Ok(dst)
    }

    /// A low-resolution view of the whole slide with about `downsample` level-0 pixels per
    /// pixel (never finer than asked). Read tile by tile from the level just finer than the
    /// target (natively, JPEG tiles decoded at up to 1/8 scale) and area-averaged by an
    /// integer factor, so no level is ever held whole in memory. Returns the image and its
    /// exact downsample.
    pub fn overview(&self, downsample: f64) -> Result<(RgbImage, f64)> {
        let (level, eighths) = self.source_for_downsample(downsample, 1.0);
        let source_ds = self.level_downsample(level) * 8.0 / eighths as f64;
        let factor = ((downsample / source_ds).floor() as u32).max(1);
        let (lw, lh) = self.level_dimensions(level);
        let (lw, lh) = ((lw * eighths).div_ceil(8), (lh * eighths).div_ceil(8));
        let (ow, oh) = ((lw / factor).max(1), (lh / factor).max(1));
        let tile = factor * 2048u32.div_ceil(factor).max(1);
        let mut out = RgbImage::new(ow, oh);
        let mut resizer = Resizer::new();
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
        for ty in (0..oh * factor).step_by(tile as usize) {
            for tx in (0..ow * factor).step_by(tile as usize) {
                let tw = tile.min(ow * factor - tx);
                let th = tile.min(oh * factor - ty);
                let src = self.read_level(level, eighths, tx.into(), ty.into(), tw, th, Outside::Background)?.image;
                let dst = if factor == 1 {
                    src
                } else {
                    let mut dst = RgbImage::new(tw / factor, th / factor);
                    resizer
                        .resize(&src, &mut dst, &options)
                        .map_err(|e| self.region_error(level, tx.into(), ty.into(), e))?;
                    dst
                };
                image::imageops::replace(&mut out, &dst, (tx / factor).into(), (ty / factor).into());
            }
        }
        let (w0, _) = self.dimensions();
        Ok((out, w0 as f64 / ow as f64))
    }
}

/// Writes the RGB pixels of `src` into `dst` as opaque RGBA.
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn opaque_rgba(src: &[u8], dst: &mut [u8]) {
    for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(3)) {
        d[0] = s[0];
        d[1] = s[1];
        d[2] = s[2];
        d[3] = 255;
    }
}

/// Opens the reader `options` ask for; `auto` takes the native reader for the files it
/// serves (Aperio and generic TIFF, as OpenSlide would name their vendor) and OpenSlide for
/// the rest. A file the native reader finds damaged is not handed on: its error is clearer.
fn open_backend(path: &Path, options: &SlideOptions) -> Result<Backend> {
    let native = || TiffSlide::open(path, options.tile_cache_mb << 20).map(|t| Backend::Native(Box::new(t)));
    let unreadable = |cause: String| SlideError::Unreadable { path: path.to_path_buf(), cause };
    match options.reader {
        Reader::OpenSlide => open_openslide(path),
        Reader::Auto if !path.is_dir() => {
            let vendor = OpenSlide::detect_vendor(path).ok();
            if vendor.as_deref().is_some_and(|v| v != "aperio" && v != "generic-tiff") {
                return open_openslide(path);
            }
            match native() {
                Ok(b) => Ok(b),
                Err(TiffError::NotTiff | TiffError::Unsupported(_)) => open_openslide(path),
                Err(e) => Err(unreadable(format!("{e} (--reader openslide tries OpenSlide)"))),
            }
        }
        // Forced, or a folder: a DICOM series, which only the native reader opens.
        Reader::Native | Reader::Auto => native().map_err(|e| unreadable(e.to_string())),
    }
}

fn open_openslide(path: &Path) -> Result<Backend> {
    OpenSlide::new(path)
        .map(|o| Backend::OpenSlide(Box::new(o)))
        .map_err(|e| SlideError::Unreadable { path: path.to_path_buf(), cause: e.to_string() })
}

fn level_infos(backend: &Backend) -> Vec<LevelInfo> {
    match backend {
        Backend::Native(t) => (0..t.levels().len())
            .map(|i| {
                let l = &t.levels()[i];
                LevelInfo { width: l.width, height: l.height, downsample: t.downsample(i) }
            })
            .collect(),
        Backend::OpenSlide(o) => o
            .all_level_dimensions()
            .iter()
            .zip(o.all_level_downsamples())
            .map(|(s, &downsample)| LevelInfo { width: s.w, height: s.h, downsample })
            .collect(),
    }
}

/// The µm/px in the slide's metadata: the scanner's own, else the TIFF resolution tags.
fn resolve_mpp(backend: &Backend) -> Option<Mpp> {
    let plausible = |x: f64, y: f64| PLAUSIBLE_MPP.contains(&x) && PLAUSIBLE_MPP.contains(&y);
    let (vendor, resolution) = match backend {
        Backend::Native(t) => (
            t.aperio_mpp().map(|m| (m, m)).or(t.dicom_mpp()),
            t.resolution().map(|r| (r.um_per_unit / r.x, r.y.map_or(r.um_per_unit / r.x, |y| r.um_per_unit / y))),
        ),
        Backend::OpenSlide(o) => openslide_mpp(o),
    };
    if let Some((x, y)) = vendor.filter(|&(x, y)| plausible(x, y)) {
        return Some(Mpp { x, y, source: MppSource::Vendor });
    }
    let (x, y) = resolution.filter(|&(x, y)| plausible(x, y))?;
    Some(Mpp { x, y, source: MppSource::TiffResolution })
}

/// OpenSlide's `openslide.mpp-x/y`, and µm/px from its `tiff.*Resolution` properties.
#[allow(clippy::type_complexity)] // two optional (x, y) pairs
fn openslide_mpp(slide: &OpenSlide) -> (Option<(f64, f64)>, Option<(f64, f64)>) {
    let prop = |name: &str| slide.property_value(name).ok();
    let num = |name: &str| prop(name).and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite() && *v > 0.0);
    let vendor = num("openslide.mpp-x").zip(num("openslide.mpp-y"));
    let um_per_unit = match prop("tiff.ResolutionUnit").as_deref().map(str::trim) {
        Some("centimeter") => Some(1e4),
        Some("inch") => Some(25_400.0),
        _ => None,
    };
    let resolution = um_per_unit.and_then(|u| {
        let x = u / num("tiff.XResolution")?;
        Some((x, num("tiff.YResolution").map_or(x, |r| u / r)))
    });
    (vendor, resolution)
}
