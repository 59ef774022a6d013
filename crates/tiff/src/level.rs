//! One pyramid level: a tiled directory's size, tile grid, where each tile is stored, and how it is encoded.

use crate::decode::{Codec, Colour, Compression};
use crate::ifd::Ifd;
use crate::{Result, TiffError};

/// Sides longer than this are damage, not slides (the largest scans are ~200k px).
const MAX_SIDE: u64 = 1 << 24;
/// Tiles larger than this many pixels are refused (pathology tiles are 240–1024 px a side).
const MAX_TILE_PIXELS: u64 = 16 << 20;

/// A tiled image: one level of the pyramid.
#[derive(Debug, Clone)]
pub struct Level {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Tile width in pixels.
    pub tile_width: u32,
    /// Tile height in pixels.
    pub tile_height: u32,
    /// How the tiles are stored.
    pub compression: Compression,
    pub(crate) across: u32,
    pub(crate) offsets: Vec<u64>,
    pub(crate) counts: Vec<u64>,
    pub(crate) codec: Codec,
    /// Which of the slide's files hold the tiles.
    pub(crate) files: TileFiles,
}

/// Which of a slide's files hold a level's tiles: a TIFF's one, a DICOM instance's, or several
/// (a DICOM level stored in several instances).
#[derive(Debug, Clone)]
pub(crate) enum TileFiles {
    All(usize),
    Each(Vec<u16>),
}

/// The tile grid (across, down) of a `width`×`height` image of `tw`×`th` tiles, or why the
/// sizes are damage.
pub(crate) fn check_grid(width: u64, height: u64, tw: u64, th: u64) -> std::result::Result<(u64, u64), String> {
    if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
        return Err(format!("absurd dimensions {width}×{height}"));
    }
    if tw == 0 || th == 0 || tw.checked_mul(th).is_none_or(|area| area > MAX_TILE_PIXELS) {
        return Err(format!("absurd tile size {tw}×{th}"));
    }
    Ok((width.div_ceil(tw), height.div_ceil(th)))
}

impl Level {
    /// The level a directory describes; `None` for a stripped (untiled) image such as a label.
    pub(crate) fn from_ifd(ifd: &Ifd, index: usize) -> Result<Option<Self>> {
        if !ifd.has(322) {
            return Ok(None);
        }
        let bad = |cause: String| TiffError::Format(format!("directory {index}: {cause}"));
        let need = |tag: u16, name: &str| ifd.uint(tag).ok_or_else(|| bad(format!("no {name}")));
        let (width, height) = (need(256, "ImageWidth")?, need(257, "ImageLength")?);
        let (tw, th) = (need(322, "TileWidth")?, need(323, "TileLength")?);
        let (across, down) = check_grid(width, height, tw, th).map_err(bad)?;
        let codec = codec(ifd).map_err(|e| match e {
            TiffError::Unsupported(c) => TiffError::Unsupported(format!("directory {index}: {c}")),
            other => other,
        })?;
        let offsets = ifd.uints(324).ok_or_else(|| bad("no TileOffsets".into()))?;
        let counts = ifd.uints(325).ok_or_else(|| bad("no TileByteCounts".into()))?;
        let tiles = (across * down) as usize;
        if offsets.len() != tiles || counts.len() != tiles {
            return Err(bad(format!(
                "{} tile offsets and {} byte counts for a grid of {across}×{down} tiles",
                offsets.len(),
                counts.len()
            )));
        }
        Ok(Some(Self::new(width as u32, height as u32, tw as u32, th as u32, across as u32, offsets, counts, codec)))
    }

    /// A level of `across` tiles a row, tile `i` stored at `offsets[i]` in `counts[i]` bytes
    /// (0: none stored) in the slide's first file.
    #[allow(clippy::too_many_arguments)] // a grid: sizes, tiles, their places, their codec
    pub(crate) fn new(
        width: u32,
        height: u32,
        tile_width: u32,
        tile_height: u32,
        across: u32,
        offsets: Vec<u64>,
        counts: Vec<u64>,
        codec: Codec,
    ) -> Self {
        let compression = codec.compression;
        let files = TileFiles::All(0);
        Self { width, height, tile_width, tile_height, compression, across, offsets, counts, codec, files }
    }

    /// The file (of the slide's) holding tile `index`.
    pub(crate) fn file_of(&self, index: usize) -> usize {
        match &self.files {
            TileFiles::All(f) => *f,
            TileFiles::Each(each) => each[index] as usize,
        }
    }

    /// The sizes this level's tiles can be decoded at, in eighths of their size: 8 (whole)
    /// always; 1–7 (libjpeg-turbo's scaled IDCT) for JPEG tiles whose sides 8 divides.
    pub fn scales(&self) -> &'static [u32] {
        let whole = self.tile_width.is_multiple_of(8) && self.tile_height.is_multiple_of(8);
        if self.compression == Compression::Jpeg && whole {
            &[1, 2, 3, 4, 5, 6, 7, 8]
        } else {
            &[8]
        }
    }
}

/// How the directory's pixels are encoded, or why this reader does not serve them.
fn codec(ifd: &Ifd) -> Result<Codec> {
    let unsupported = |c: String| Err(TiffError::Unsupported(c));
    let compression = Compression::from_tag(ifd.uint(259).unwrap_or(1))?;
    let spp = ifd.uint(277).unwrap_or(1);
    let bits = ifd.uints(258).unwrap_or_else(|| vec![1]);
    if bits.iter().any(|&b| b != 8) {
        return unsupported(format!("{bits:?} bits per sample (8 are read natively)"));
    }
    if ifd.uint(284).unwrap_or(1) != 1 {
        return unsupported("separate colour planes".into());
    }
    let photometric = ifd.uint(262);
    let colour = match (photometric, spp) {
        (Some(2), 3) => Colour::Rgb,
        (Some(6), 3) if compression == Compression::Jpeg => Colour::YCbCr,
        (Some(1), 1) => Colour::Gray,
        (p, s) => return unsupported(format!("photometric interpretation {p:?} with {s} samples per pixel")),
    };
    let predictor = match ifd.uint(317).unwrap_or(1) {
        1 => false,
        2 => true,
        p => return unsupported(format!("predictor {p}")),
    };
    let tables = ifd.bytes(347).map(<[u8]>::to_vec);
    Ok(Codec { compression, colour, predictor, tables })
}
