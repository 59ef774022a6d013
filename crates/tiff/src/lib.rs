//! A reader of its own for the slides that carry most pathology data: pyramidal tiled TIFF.
//!
//! [`TiffSlide`] serves Aperio SVS and generic (and OME) tiled TIFF pyramids whose tiles are
//! JPEG (with the shared `JPEGTables` of SVS, YCbCr or RGB colour), LZW, Deflate or stored
//! as they are. Every offset, count and size read from the file is checked against it, so a
//! damaged file fails with one message naming the directory or tile, never a panic or an
//! unbounded allocation. Decoded tiles are kept in a cache capped in bytes and shared by the
//! threads reading one slide. Files of other vendors, JPEG 2000 tiles and other encodings are
//! refused as [`TiffError::Unsupported`], for OpenSlide to serve.

mod cache;
mod decode;
mod dicom;
mod ifd;
mod level;

use std::fs::File;
use std::path::Path;

use image::RgbImage;

pub use decode::{Colour, Compression};
pub use level::Level;

use cache::{TileCache, TileKey};
use ifd::{Ifd, Source};

/// The `InterColorProfile` tag: an embedded ICC profile.
const ICC_PROFILE: u16 = 34675;

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, TiffError>;

/// Why a file cannot be read natively.
#[derive(Debug, thiserror::Error)]
pub enum TiffError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a TIFF file.
    #[error("not a TIFF file")]
    NotTiff,
    /// A TIFF this reader does not serve (another vendor's layout, JPEG 2000, …).
    #[error("not served by the native reader: {0}")]
    Unsupported(String),
    /// The file's structure is damaged (truncated, offsets outside the file, loops, absurd sizes).
    #[error("{0}")]
    Format(String),
    /// One tile could not be read or decoded.
    #[error("level {level}, tile ({col}, {row}): {cause}")]
    Tile { level: usize, col: u32, row: u32, cause: String },
}

/// Which layout of tiled TIFF a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Aperio SVS (`ImageDescription` starting with "Aperio").
    Aperio,
    /// Any other tiled TIFF pyramid (including OME-TIFF's sub-IFD pyramids).
    Generic,
    /// A DICOM VL Whole Slide Microscopy series (a folder of `.dcm` files: a level in one or
    /// several of them).
    Dicom,
}

/// The resolution tags of the first directory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolution {
    /// `XResolution`, pixels per unit.
    pub x: f64,
    /// `YResolution`, pixels per unit, when given.
    pub y: Option<f64>,
    /// µm per `ResolutionUnit` (25 400 for inches, 10 000 for centimetres).
    pub um_per_unit: f64,
}

/// An open pyramidal TIFF slide.
#[derive(Debug)]
pub struct TiffSlide {
    sources: Vec<Source>,
    flavour: Flavour,
    levels: Vec<Level>,
    description: Option<String>,
    resolution: Option<Resolution>,
    icc_profile: Option<Vec<u8>>,
    /// DICOM: µm/px from the pixel spacing, and the study and series UIDs.
    dicom: Option<dicom::About>,
    /// Associated images served natively (DICOM's label, macro, thumbnail), by name.
    associated: Vec<(String, Level)>,
    cache: TileCache,
}

impl TiffSlide {
    /// Opens `path`, keeping up to `cache_bytes` of decoded tiles (0: no cache).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self> {
        if dicom::looks_like_dicom(path) {
            let s = dicom::open(path)?;
            return Ok(Self {
                sources: s.sources,
                flavour: Flavour::Dicom,
                levels: s.levels,
                description: None,
                resolution: None,
                icc_profile: None,
                dicom: Some(s.about),
                associated: s.associated,
                cache: TileCache::new(cache_bytes),
            });
        }
        let src = Source::new(File::open(path)?)?;
        let (layout, first) = ifd::header(&src)?.ok_or(TiffError::NotTiff)?;
        let dirs = ifd::directories(&src, layout, first)?;
        let (first_ifd, _) = dirs.first().ok_or_else(|| TiffError::Format("no image directory".into()))?;
        let description = first_ifd.text(270);
        let flavour = flavour(first_ifd, description.as_deref())?;
        let levels = levels(&dirs, flavour)?;
        let resolution = resolution(first_ifd);
        let icc_profile = first_ifd.bytes(ICC_PROFILE).map(<[u8]>::to_vec);
        let cache = TileCache::new(cache_bytes);
        Ok(Self {
            sources: vec![src],
            flavour,
            levels,
            description,
            resolution,
            icc_profile,
            dicom: None,
            associated: Vec::new(),
            cache,
        })
    }

    /// Aperio SVS or a generic pyramid.
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// The pyramid levels, finest first.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Level-0 pixels per pixel of `level`, as OpenSlide computes it (the mean of the width
    /// and height ratios).
    pub fn downsample(&self, level: usize) -> f64 {
        let (l0, l) = (&self.levels[0], &self.levels[level]);
        (l0.width as f64 / l.width as f64 + l0.height as f64 / l.height as f64) / 2.0
    }

    /// The first directory's `ImageDescription`.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The µm/px an Aperio description gives (`MPP = …`), what OpenSlide reports as
    /// `openslide.mpp-x` and `-y`.
    pub fn aperio_mpp(&self) -> Option<f64> {
        if self.flavour != Flavour::Aperio {
            return None;
        }
        let d = self.description.as_deref()?;
        d.split('|').filter_map(|kv| kv.split_once('=')).find(|(k, _)| k.trim() == "MPP")?.1.trim().parse().ok()
    }

    /// The ICC colour profile the first directory embeds (`InterColorProfile`), when it has one.
    pub fn icc_profile(&self) -> Option<&[u8]> {
        self.icc_profile.as_deref()
    }

    /// A DICOM series' µm/px (x, y), from its finest level's pixel spacing.
    pub fn dicom_mpp(&self) -> Option<(f64, f64)> {
        self.dicom.as_ref().and_then(|d| d.mpp)
    }

    /// A DICOM series' study and series instance UIDs.
    pub fn dicom_uids(&self) -> Option<(&str, &str)> {
        self.dicom.as_ref().map(|d| (d.study_uid.as_str(), d.series_uid.as_str()))
    }

    /// Names of the associated images this reader serves itself (a DICOM series' label,
    /// macro and thumbnail; a TIFF's are left to OpenSlide).
    pub fn associated_image_names(&self) -> Vec<&str> {
        self.associated.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The associated image `name`, whole, or `None` when this reader serves none of that name.
    pub fn associated_image(&self, name: &str) -> Option<Result<RgbImage>> {
        let (_, l) = self.associated.iter().find(|(n, _)| n == name)?;
        Some(self.read_whole(l))
    }

    /// Every tile of the single-level image `l`, decoded without the cache.
    fn read_whole(&self, l: &Level) -> Result<RgbImage> {
        let mut out = filled(l.width, l.height, [255; 3]);
        let (tw, th) = (l.tile_width as usize, l.tile_height as usize);
        for (index, (&offset, &count)) in l.offsets.iter().zip(&l.counts).enumerate().filter(|(_, (_, &c))| c > 0) {
            let (col, row) = (index % l.across as usize, index / l.across as usize);
            let tile_error = |cause: String| TiffError::Tile { level: 0, col: col as u32, row: row as u32, cause };
            let data = self.sources[l.file_of(index)].read(offset, count, || "its data".into())?;
            let tile = l.codec.decode(&data, l.tile_width, l.tile_height, 8).map_err(tile_error)?;
            let (x0, y0) = (col * tw, row * th);
            let w = tw.min(l.width as usize - x0);
            for y in 0..th.min(l.height as usize - y0) {
                let dst = ((y0 + y) * l.width as usize + x0) * 3;
                out.as_mut()[dst..dst + w * 3].copy_from_slice(&tile[y * tw * 3..(y * tw + w) * 3]);
            }
        }
        Ok(out)
    }

    /// The first directory's resolution tags, when they carry a unit.
    pub fn resolution(&self) -> Option<Resolution> {
        self.resolution
    }

    /// Reads `w`×`h` pixels of `level` decoded at `eighths`/8 of its size (one of
    /// [`Level::scales`]) whose top-left corner is (`x`, `y`) in that scaled level's pixels.
    /// Pixels outside the level (and in tiles the file leaves empty) are `outside`.
    #[allow(clippy::too_many_arguments)] // a region: level, scale, corner, size, fill
    pub fn read(
        &self,
        level: usize,
        eighths: u32,
        x: i64,
        y: i64,
        w: u32,
        h: u32,
        outside: [u8; 3],
    ) -> Result<RgbImage> {
        let l = &self.levels[level];
        assert!(l.scales().contains(&eighths), "scale {eighths}/8 is not one of level {level}'s");
        let (tw, th) = ((l.tile_width * eighths / 8) as i64, (l.tile_height * eighths / 8) as i64);
        let (lw, lh) = ((l.width * eighths).div_ceil(8) as i64, (l.height * eighths).div_ceil(8) as i64);
        let mut out = filled(w, h, outside);
        let (x0, y0) = (x.max(0), y.max(0));
        let (x1, y1) = ((x + w as i64).min(lw), (y + h as i64).min(lh));
        for row in (y0 / th)..(y1 + th - 1) / th {
            for col in (x0 / tw)..(x1 + tw - 1) / tw {
                let Some(tile) = self.tile(level, eighths, col as u32, row as u32)? else { continue };
                let (tx, ty) = (col * tw, row * th);
                // The part of this tile inside both the level and the region.
                let (ax, bx) = (tx.max(x0), (tx + tw).min(x1));
                for py in ty.max(y0)..(ty + th).min(y1) {
                    let src = (((py - ty) * tw + (ax - tx)) * 3) as usize;
                    let dst = (((py - y) * w as i64 + (ax - x)) * 3) as usize;
                    let n = ((bx - ax) * 3) as usize;
                    out.as_mut()[dst..dst + n].copy_from_slice(&tile[src..src + n]);
                }
            }
        }
        Ok(out)
    }

    /// One decoded tile (from the cache when there), `None` when the file stores none.
    fn tile(&self, level: usize, eighths: u32, col: u32, row: u32) -> Result<Option<std::sync::Arc<Vec<u8>>>> {
        let l = &self.levels[level];
        let index = (row * l.across + col) as usize;
        if l.counts[index] == 0 {
            return Ok(None);
        }
        let key = TileKey { level: level as u16, eighths: eighths as u8, index: index as u32 };
        let tile_error = |cause: String| TiffError::Tile { level, col, row, cause };
        self.cache
            .get_or_decode(key, || {
                let data = self.sources[l.file_of(index)]
                    .read(l.offsets[index], l.counts[index], || "its data".into())
                    .map_err(|e| tile_error(e.to_string()))?;
                l.codec.decode(&data, l.tile_width, l.tile_height, eighths).map_err(tile_error)
            })
            .map(Some)
    }
}

/// A `w`×`h` image of one colour; grey (white, black: what regions are filled with) by one
/// `memset` rather than pixel by pixel.
fn filled(w: u32, h: u32, colour: [u8; 3]) -> RgbImage {
    if colour[0] == colour[1] && colour[1] == colour[2] {
        let raw = vec![colour[0]; w as usize * h as usize * 3];
        RgbImage::from_raw(w, h, raw).expect("sized from the image")
    } else {
        RgbImage::from_pixel(w, h, image::Rgb(colour))
    }
}

/// Aperio or generic; other vendors' TIFF-based formats are refused so OpenSlide reads them.
fn flavour(first: &Ifd, description: Option<&str>) -> Result<Flavour> {
    let d = description.unwrap_or("").trim_start();
    if d.starts_with("Aperio") {
        return Ok(Flavour::Aperio);
    }
    let vendor = if first.has(65420) {
        Some("Hamamatsu NDPI")
    } else if d.starts_with('<') && !d.contains("<OME") {
        Some("a vendor's XML description (Philips, Leica, …)")
    } else if first.text(305).is_some_and(|s| s.starts_with("MedScan")) {
        Some("Trestle")
    } else if first.bytes(700).is_some_and(|x| String::from_utf8_lossy(x).contains("iScan")) {
        Some("Ventana")
    } else {
        None
    };
    match vendor {
        Some(v) => Err(TiffError::Unsupported(format!("{v} layout"))),
        None => Ok(Flavour::Generic),
    }
}

/// The tiled directories as levels: in file order for Aperio (untiled ones are its thumbnail,
/// label and macro); for generic pyramids, as OpenSlide takes them, the first directory and
/// the others marked as reduced-resolution images (`NewSubfileType` bit 0), widest first.
fn levels(dirs: &[(Ifd, bool)], flavour: Flavour) -> Result<Vec<Level>> {
    let mut levels = Vec::new();
    for (i, (ifd, _)) in dirs.iter().enumerate() {
        let reduced = ifd.uint(254).is_some_and(|t| t & 1 == 1);
        if flavour == Flavour::Generic && i > 0 && !reduced {
            continue;
        }
        if let Some(l) = Level::from_ifd(ifd, i)? {
            levels.push(l);
        } else if i == 0 {
            return Err(TiffError::Unsupported("the first image is stored in strips, not tiles".into()));
        }
    }
    if flavour == Flavour::Generic {
        levels.sort_by_key(|l| std::cmp::Reverse(l.width));
    }
    Ok(levels)
}

fn resolution(first: &Ifd) -> Option<Resolution> {
    let um_per_unit = match first.uint(296)? {
        2 => 25_400.0,
        3 => 10_000.0,
        _ => return None,
    };
    let x = first.real(282).filter(|v| v.is_finite() && *v > 0.0)?;
    let y = first.real(283).filter(|v| v.is_finite() && *v > 0.0);
    Some(Resolution { x, y, um_per_unit })
}
