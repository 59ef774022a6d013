//! Pyramidal tiled TIFFs written from an image: SVS-like (abbreviated JPEG tiles with shared tables and an Aperio description), RGB or YCbCr JPEG, Deflate, LZW, stored.

use std::io::Write;
use std::path::Path;

use image::RgbImage;
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

/// How the tiles are encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Coding {
    /// Stored as they are.
    Raw,
    /// Deflate, optionally after horizontal differencing (predictor 2).
    Deflate { predictor: bool },
    /// LZW.
    Lzw,
    /// JPEG at quality 90; `ycbcr` false stores R, G, B without a colour transform
    /// (photometric RGB, as Aperio does); `shared_tables` puts the quantisation and Huffman
    /// tables in `JPEGTables` and leaves each tile an abbreviated stream.
    Jpeg { ycbcr: bool, shared_tables: bool },
}

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TiffSpec {
    /// Tile side in pixels.
    pub tile: u32,
    /// Tile encoding.
    pub coding: Coding,
    /// Pyramid levels, each half the previous (box-averaged).
    pub levels: u32,
    /// µm/px in the resolution tags (pixels per centimetre).
    pub mpp: Option<f64>,
    /// An Aperio `ImageDescription` with `MPP = …` (OpenSlide then reads the file as Aperio).
    pub aperio_mpp: Option<f64>,
    /// Motorola byte order ("MM") instead of Intel ("II").
    pub big_endian: bool,
    /// Levels after the first as sub-directories of the first (`SubIFDs`, OME-TIFF's pyramid)
    /// instead of the main chain.
    pub sub_ifds: bool,
    /// BigTIFF (64-bit offsets, as scanners write files over 4 GB).
    pub big_tiff: bool,
}

impl Default for TiffSpec {
    fn default() -> Self {
        Self {
            tile: 256,
            coding: Coding::Raw,
            levels: 1,
            mpp: None,
            aperio_mpp: None,
            big_endian: false,
            sub_ifds: false,
            big_tiff: false,
        }
    }
}

impl TiffSpec {
    /// Writes `image` at `path` as this spec says; returns the file's bytes too.
    pub fn write(&self, path: &Path, image: &RgbImage) -> std::io::Result<Vec<u8>> {
        let mut file = Builder { out: Vec::new(), big: self.big_endian, big_tiff: self.big_tiff };
        file.out.extend(if self.big_endian { b"MM" } else { b"II" });
        if self.big_tiff {
            file.out.extend(file.u16s(&[43, 8, 0]));
            file.out.extend([0; 8]);
        } else {
            file.out.extend(file.u16s(&[42]));
            file.out.extend([0; 4]);
        }
        let levels = pyramid(image, self.levels);
        let mut link = if self.big_tiff { 8 } else { 4 }; // where the next directory's offset goes
        if self.sub_ifds {
            let mut subs = Vec::new();
            for l in &levels[1..] {
                let ifd = file.level(self, l, false);
                subs.push(file.directory(ifd).0);
            }
            let mut first = file.level(self, &levels[0], true);
            first.push(file.offsets(330, &subs));
            let (at, _) = file.directory(first);
            file.set_offset(link, at);
        } else {
            for (i, l) in levels.iter().enumerate() {
                let ifd = file.level(self, l, i == 0);
                let (at, next) = file.directory(ifd);
                file.set_offset(link, at);
                link = next;
            }
        }
        std::fs::File::create(path)?.write_all(&file.out)?;
        Ok(file.out)
    }
}

/// Writes `image` as a single-level, uncompressed, 256×256-tiled RGB TIFF (OpenSlide's
/// generic-tiff format). With `mpp`, the resolution tags say that many µm per pixel.
pub fn write_tiled_tiff(path: &Path, image: &RgbImage, mpp: Option<f64>) -> std::io::Result<()> {
    TiffSpec { mpp, ..TiffSpec::default() }.write(path, image).map(drop)
}

/// A tag: number, type, count, value bytes (in the file's byte order).
type Entry = (u16, u16, u32, Vec<u8>);

struct Builder {
    out: Vec<u8>,
    /// Motorola byte order.
    big: bool,
    /// 64-bit offsets.
    big_tiff: bool,
}

impl Builder {
    fn u16s(&self, v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| if self.big { x.to_be_bytes() } else { x.to_le_bytes() }).collect()
    }

    fn u32s(&self, v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| if self.big { x.to_be_bytes() } else { x.to_le_bytes() }).collect()
    }

    fn u64s(&self, v: &[u64]) -> Vec<u8> {
        v.iter().flat_map(|x| if self.big { x.to_be_bytes() } else { x.to_le_bytes() }).collect()
    }

    /// Bytes of an offset field: 4 in TIFF, 8 in BigTIFF.
    fn offset_bytes(&self, v: u64) -> Vec<u8> {
        if self.big_tiff {
            self.u64s(&[v])
        } else {
            self.u32s(&[v as u32])
        }
    }

    fn set_offset(&mut self, at: usize, v: u64) {
        let b = self.offset_bytes(v);
        self.out[at..at + b.len()].copy_from_slice(&b);
    }

    /// A tag of offsets: LONG in TIFF, LONG8 in BigTIFF.
    fn offsets(&self, tag: u16, v: &[u64]) -> Entry {
        if self.big_tiff {
            (tag, 16, v.len() as u32, self.u64s(v))
        } else {
            (tag, 4, v.len() as u32, self.u32s(&v.iter().map(|&o| o as u32).collect::<Vec<_>>()))
        }
    }

    /// Appends one level's tiles and returns its directory's entries.
    fn level(&mut self, spec: &TiffSpec, img: &RgbImage, first: bool) -> Vec<Entry> {
        let t = spec.tile;
        let (w, h) = img.dimensions();
        let (mut offsets, mut counts) = (Vec::new(), Vec::new());
        let mut tables = None;
        for tile in tiles(img, t) {
            let (data, tab) = encode(&tile, spec.coding);
            tables = tables.or(tab);
            offsets.push(self.out.len() as u64);
            counts.push(data.len() as u32);
            self.out.extend(data);
        }
        let (compression, photometric) = match spec.coding {
            Coding::Raw => (1, 2),
            Coding::Lzw => (5, 2),
            Coding::Deflate { .. } => (8, 2),
            Coding::Jpeg { ycbcr, .. } => (7, if ycbcr { 6 } else { 2 }),
        };
        let mut e: Vec<Entry> = vec![
            (256, 4, 1, self.u32s(&[w])),
            (257, 4, 1, self.u32s(&[h])),
            (258, 3, 3, self.u16s(&[8, 8, 8])),
            (259, 3, 1, self.u16s(&[compression])),
            (262, 3, 1, self.u16s(&[photometric])),
            (277, 3, 1, self.u16s(&[3])),
            (284, 3, 1, self.u16s(&[1])),
            (322, 4, 1, self.u32s(&[t])),
            (323, 4, 1, self.u32s(&[t])),
            self.offsets(324, &offsets),
            (325, 4, counts.len() as u32, self.u32s(&counts)),
        ];
        if let Some(tab) = tables {
            e.push((347, 7, tab.len() as u32, tab));
        }
        if spec.coding == (Coding::Deflate { predictor: true }) {
            e.push((317, 3, 1, self.u16s(&[2])));
        }
        if !first {
            e.push((254, 4, 1, self.u32s(&[1]))); // a reduced-resolution image
        }
        if first {
            if let Some(m) = spec.mpp {
                let ppcm = (1e4 / m * 1000.0).round() as u32;
                e.push((282, 5, 1, self.u32s(&[ppcm, 1000])));
                e.push((283, 5, 1, self.u32s(&[ppcm, 1000])));
                e.push((296, 3, 1, self.u16s(&[3])));
            }
            if let Some(m) = spec.aperio_mpp {
                let text =
                    format!("Aperio Image Library vTest \r\n{w}x{h} ({t}x{t}) JPEG/RGB Q=90|AppMag = 20|MPP = {m}\0");
                e.push((270, 2, text.len() as u32, text.into_bytes()));
            }
        }
        e
    }

    /// Appends a directory (values that do not fit inline first) and returns where it starts
    /// and where its next-directory offset lies.
    fn directory(&mut self, mut entries: Vec<Entry>) -> (u64, usize) {
        entries.sort_by_key(|e| e.0);
        let inline = if self.big_tiff { 8 } else { 4 };
        let mut fields = Vec::new();
        for (_, _, _, bytes) in &entries {
            if bytes.len() > inline {
                fields.push(self.out.len() as u64);
                self.out.extend(bytes);
                if self.out.len() % 2 == 1 {
                    self.out.push(0);
                }
            } else {
                fields.push(0);
            }
        }
        if self.out.len() % 2 == 1 {
            self.out.push(0); // directories start on a word boundary
        }
        let at = self.out.len() as u64;
        let n = entries.len() as u64;
        let count = if self.big_tiff { self.u64s(&[n]) } else { self.u16s(&[n as u16]) };
        self.out.extend(count);
        for ((tag, kind, count, bytes), field) in entries.iter().zip(fields) {
            self.out.extend(self.u16s(&[*tag, *kind]));
            let count = if self.big_tiff { self.u64s(&[u64::from(*count)]) } else { self.u32s(&[*count]) };
            self.out.extend(count);
            if bytes.len() > inline {
                self.out.extend(self.offset_bytes(field));
            } else {
                let mut value = bytes.clone();
                value.resize(inline, 0);
                self.out.extend(value);
            }
        }
        let link = self.out.len();
        self.out.extend(vec![0; inline]);
        (at, link)
    }
}

/// `image` and `levels - 1` reductions, each half the previous (box-averaged).
pub(crate) fn pyramid(image: &RgbImage, levels: u32) -> Vec<RgbImage> {
    let mut out = vec![image.clone()];
    for _ in 1..levels {
        let l = out.last().expect("one level at least");
        out.push(image::imageops::resize(l, l.width() / 2, l.height() / 2, image::imageops::Triangle));
    }
    out
}

/// The `t`×`t` tiles of `img`, row by row; those past its edge repeat its last column and row.
pub(crate) fn tiles(img: &RgbImage, t: u32) -> impl Iterator<Item = RgbImage> + '_ {
    let (w, h) = img.dimensions();
    (0..h.div_ceil(t)).flat_map(move |ty| {
        (0..w.div_ceil(t)).map(move |tx| {
            RgbImage::from_fn(t, t, |x, y| *img.get_pixel((tx * t + x).min(w - 1), (ty * t + y).min(h - 1)))
        })
    })
}

/// One tile's bytes, and the tables it shares with the others (shared-table JPEG only).
pub(crate) fn encode(tile: &RgbImage, coding: Coding) -> (Vec<u8>, Option<Vec<u8>>) {
    match coding {
        Coding::Raw => (tile.as_raw().clone(), None),
        Coding::Deflate { predictor } => {
            let mut data = tile.as_raw().clone();
            if predictor {
                let row = tile.width() as usize * 3;
                for line in data.chunks_exact_mut(row) {
                    for i in (3..row).rev() {
                        line[i] = line[i].wrapping_sub(line[i - 3]);
                    }
                }
            }
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&data).expect("in memory");
            (z.finish().expect("in memory"), None)
        }
        Coding::Lzw => {
            let mut lzw = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
            (lzw.encode(tile.as_raw()).expect("in memory"), None)
        }
        Coding::Jpeg { ycbcr, shared_tables } => jpeg_tile(tile, ycbcr, shared_tables),
    }
}

/// A JPEG tile without JFIF marker; with shared tables, split into tables and the rest.
fn jpeg_tile(tile: &RgbImage, ycbcr: bool, shared_tables: bool) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut full = Vec::new();
    let mut enc = Encoder::new(&mut full, 90);
    // Declared as YCbCr, RGB samples are stored as they are, with no colour transform.
    let (colour, sampling) =
        if ycbcr { (ColorType::Rgb, SamplingFactor::R_4_2_0) } else { (ColorType::Ycbcr, SamplingFactor::R_4_4_4) };
    enc.set_sampling_factor(sampling);
    enc.encode(tile.as_raw(), tile.width() as u16, tile.height() as u16, colour).expect("in memory");
    let (mut tables, mut rest) = (vec![0xFF, 0xD8], vec![0xFF, 0xD8]);
    let mut i = 2;
    while i + 4 <= full.len() {
        let marker = full[i + 1];
        let len = u16::from_be_bytes([full[i + 2], full[i + 3]]) as usize;
        let segment = &full[i..i + 2 + len];
        match marker {
            0xE0..=0xEF => {}
            0xDB | 0xC4 if shared_tables => tables.extend(segment),
            0xDA => {
                rest.extend(&full[i..]);
                break;
            }
            _ => rest.extend(segment),
        }
        i += 2 + len;
    }
    tables.extend([0xFF, 0xD9]);
    (rest, shared_tables.then_some(tables))
}
