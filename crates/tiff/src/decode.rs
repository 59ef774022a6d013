//! Tile decoding to RGB: JPEG through libjpeg-turbo (shared tables, colour space from the TIFF, DCT scaling), LZW, Deflate, uncompressed.

use std::cell::RefCell;
use std::io::Read;

use crate::TiffError;

/// How a level's tiles are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as they are (TIFF compression 1).
    None,
    /// LZW (5).
    Lzw,
    /// JPEG (7), possibly abbreviated streams sharing the level's `JPEGTables`.
    Jpeg,
    /// Deflate / zlib (8 or 32946).
    Deflate,
    /// JPEG 2000 codestreams (DICOM frames), decoded by OpenJPEG with their own colour transform.
    Jpeg2000,
}

impl Compression {
    /// The compression of a TIFF `Compression` tag value; others are not served natively.
    pub(crate) fn from_tag(value: u64) -> Result<Self, TiffError> {
        Ok(match value {
            1 => Self::None,
            5 => Self::Lzw,
            7 => Self::Jpeg,
            8 | 32946 => Self::Deflate,
            33003 | 33005 => {
                return Err(TiffError::Unsupported("JPEG 2000 tiles (Aperio compression 33003/33005)".into()))
            }
            6 => return Err(TiffError::Unsupported("old-style JPEG (compression 6)".into())),
            other => return Err(TiffError::Unsupported(format!("compression {other}"))),
        })
    }
}

/// The colour of the stored samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// Three samples, red green blue (JPEG data decoded without a colour transform).
    Rgb,
    /// JPEG data in YCbCr (photometric 6).
    YCbCr,
    /// One sample, 0 = black.
    Gray,
}

/// Everything needed to turn one stored tile into RGB pixels.
#[derive(Debug, Clone)]
pub(crate) struct Codec {
    pub(crate) compression: Compression,
    pub(crate) colour: Colour,
    /// Horizontal differencing (TIFF predictor 2) before LZW/Deflate.
    pub(crate) predictor: bool,
    /// The level's shared JPEG tables (`JPEGTables`), a stream of SOI, DQT/DHT segments, EOI.
    pub(crate) tables: Option<Vec<u8>>,
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<turbojpeg::Decompressor>> = const { RefCell::new(None) };
}

impl Codec {
    fn samples(&self) -> usize {
        if self.colour == Colour::Gray {
            1
        } else {
            3
        }
    }

    /// Decodes one stored `tw`×`th` tile to RGB at `eighths`/8 of its size (below 8 only for
    /// JPEG tiles whose sides 8 divides).
    pub(crate) fn decode(&self, data: &[u8], tw: u32, th: u32, eighths: u32) -> Result<Vec<u8>, String> {
        match self.compression {
            Compression::Jpeg => return self.decode_jpeg(data, tw, th, eighths),
            Compression::Jpeg2000 => return decode_jpeg2000(data, tw, th),
            _ => {}
        }
        debug_assert_eq!(eighths, 8, "scaled decoding is for JPEG tiles");
        let spp = self.samples();
        let row = tw as usize * spp;
        let mut raw = vec![0u8; row * th as usize];
        match self.compression {
            Compression::None => {
                let stored = data.get(..raw.len()).ok_or_else(|| short(data.len(), raw.len()))?;
                raw.copy_from_slice(stored);
            }
            Compression::Deflate => {
                flate2::read::ZlibDecoder::new(data).read_exact(&mut raw).map_err(|e| format!("Deflate data: {e}"))?
            }
            Compression::Lzw => {
                let n = lzw(data, &mut raw)?;
                if n < raw.len() {
                    return Err(short(n, raw.len()));
                }
            }
            Compression::Jpeg | Compression::Jpeg2000 => unreachable!("handled above"),
        }
        if self.predictor {
            for line in raw.chunks_exact_mut(row) {
                for i in spp..row {
                    line[i] = line[i].wrapping_add(line[i - spp]);
                }
            }
        }
        Ok(if spp == 1 { raw.iter().flat_map(|&g| [g, g, g]).collect() } else { raw })
    }

    fn decode_jpeg(&self, data: &[u8], tw: u32, th: u32, eighths: u32) -> Result<Vec<u8>, String> {
        let stream = self.jpeg_stream(data)?;
        DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(turbojpeg::Decompressor::new().map_err(|e| format!("libjpeg-turbo: {e}"))?);
            }
            let decoded = decompress(slot.as_mut().expect("set above"), &stream, tw, th, eighths);
            if decoded.is_err() {
                // A failed decode can leave the handle mid-stream; the next tile gets a fresh one.
                *slot = None;
            }
            decoded
        })
    }

    /// One complete JPEG stream: SOI, an Adobe marker that fixes the colour transform to the
    /// TIFF's photometric interpretation (as OpenSlide sets `jpeg_color_space`), the shared
    /// tables, then the tile's own segments.
    fn jpeg_stream(&self, tile: &[u8]) -> Result<Vec<u8>, String> {
        const SOI: [u8; 2] = [0xFF, 0xD8];
        if tile.len() < 4 || tile[..2] != SOI {
            return Err("the tile is not a JPEG stream (no start-of-image marker)".into());
        }
        let tables = match &self.tables {
            Some(t) if t.len() >= 4 && t[..2] == SOI => {
                let end = if t[t.len() - 2..] == [0xFF, 0xD9] { t.len() - 2 } else { t.len() };
                &t[2..end]
            }
            Some(_) => return Err("JPEGTables is not a JPEG tables stream".into()),
            None => &[][..],
        };
        let mut s = Vec::with_capacity(tile.len() + tables.len() + 18);
        s.extend(SOI);
        let transform = match self.colour {
            Colour::Rgb => Some(0),
            Colour::YCbCr => Some(1),
            Colour::Gray => None,
        };
        if let Some(t) = transform {
            // APP14 "Adobe": version 100, flags 0, 0, then the transform (0 none, 1 YCbCr).
            s.extend([0xFF, 0xEE, 0, 14, b'A', b'd', b'o', b'b', b'e', 0, 100, 0, 0, 0, 0, t]);
        }
        s.extend(tables);
        s.extend(&tile[2..]);
        Ok(s)
    }
}

/// Decodes one complete JPEG `stream` of a `tw`×`th` tile at `eighths`/8 of its size to RGB
/// (libjpeg-turbo picks the scaled IDCT whose output fits the buffer: exactly that size).
fn decompress(
    d: &mut turbojpeg::Decompressor,
    stream: &[u8],
    tw: u32,
    th: u32,
    eighths: u32,
) -> Result<Vec<u8>, String> {
    let header = d.read_header(stream).map_err(|e| format!("JPEG header: {e}"))?;
    if (header.width, header.height) != (tw as usize, th as usize) {
        return Err(format!("the JPEG is {}×{}, the tile {tw}×{th}", header.width, header.height));
    }
    let (w, h) = ((tw * eighths / 8) as usize, (th * eighths / 8) as usize);
    let mut pixels = vec![0u8; w * h * 3];
    let format = turbojpeg::PixelFormat::RGB;
    let image = turbojpeg::Image { pixels: pixels.as_mut_slice(), width: w, pitch: 3 * w, height: h, format };
    d.decompress(stream, image).map_err(|e| format!("JPEG data: {e}"))?;
    Ok(pixels)
}

/// Decodes a `tw`×`th` JPEG 2000 codestream of three 8-bit components to RGB (OpenJPEG applies
/// the stream's own colour transform, as DICOM's YBR_ICT / YBR_RCT frames carry it).
fn decode_jpeg2000(data: &[u8], tw: u32, th: u32) -> Result<Vec<u8>, String> {
    let image = jpeg2k::Image::from_bytes(data).map_err(|e| format!("JPEG 2000 data: {e}"))?;
    let c = image.components();
    let same = |k: &jpeg2k::ImageComponent| (k.width(), k.height()) == (tw, th) && k.precision() == 8 && !k.is_signed();
    if c.len() != 3 || !c.iter().all(same) {
        return Err(format!("the JPEG 2000 frame is not three 8-bit {tw}×{th} components"));
    }
    let (r, g, b) = (c[0].data(), c[1].data(), c[2].data());
    let byte = |v: i32| v.clamp(0, 255) as u8;
    Ok(r.iter().zip(g).zip(b).flat_map(|((&r, &g), &b)| [byte(r), byte(g), byte(b)]).collect())
}

/// Decodes TIFF LZW `data` into `out` until either ends; returns the bytes written.
fn lzw(data: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let mut decoder = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
    let (mut read, mut written) = (0, 0);
    while written < out.len() {
        let step = decoder.decode_bytes(&data[read..], &mut out[written..]);
        read += step.consumed_in;
        written += step.consumed_out;
        match step.status.map_err(|e| format!("LZW data: {e}"))? {
            weezl::LzwStatus::Ok => {}
            weezl::LzwStatus::Done | weezl::LzwStatus::NoProgress => break,
        }
    }
    Ok(written)
}

fn short(got: usize, want: usize) -> String {
    format!("the tile holds {got} bytes of pixels, {want} expected")
}
