//! TIFF and BigTIFF headers and image file directories, every offset, count and size checked against the file.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::{Result, TiffError};

/// At most this many directories are followed (a slide has a handful; a loop never ends).
const MAX_DIRECTORIES: usize = 4096;
/// At most this many entries in one directory.
const MAX_ENTRIES: u64 = 4096;
/// The largest value one tag may hold (tile offsets of a 200k × 200k slide take ~5 MB).
const MAX_VALUE_BYTES: u64 = 256 << 20;

/// The file, read with positioned reads (no shared cursor), so threads read tiles concurrently.
#[derive(Debug)]
pub(crate) struct Source {
    file: File,
    len: u64,
}

impl Source {
    pub(crate) fn new(file: File) -> Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }

    /// The file's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// `len` bytes at `offset`, refused (naming `what`) when they are not all inside the file.
    pub(crate) fn read(&self, offset: u64, len: u64, what: impl Fn() -> String) -> Result<Vec<u8>> {
        let end = offset.checked_add(len).filter(|&e| e <= self.len);
        if end.is_none() {
            return Err(TiffError::Format(format!(
                "{} at byte {offset} + {len} bytes lies past the end of the file ({} bytes): truncated or corrupt",
                what(),
                self.len
            )));
        }
        let mut buf = vec![0; len as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// Byte order and offset width of a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    little: bool,
    big_tiff: bool,
}

impl Layout {
    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.little {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    }

    fn u64(&self, b: &[u8]) -> u64 {
        let a: [u8; 8] = b[..8].try_into().expect("8 bytes");
        if self.little {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    }

    /// An offset-sized field (4 bytes in TIFF, 8 in BigTIFF).
    fn offset(&self, b: &[u8]) -> u64 {
        if self.big_tiff {
            self.u64(b)
        } else {
            self.u32(b).into()
        }
    }
}

/// Reads the header: the layout and the offset of the first directory. `None` when the file
/// is not a TIFF at all.
pub(crate) fn header(src: &Source) -> Result<Option<(Layout, u64)>> {
    if src.len() < 8 {
        return Ok(None);
    }
    let h = src.read(0, 16.min(src.len()), || "the header".into())?;
    let little = match &h[..2] {
        b"II" => true,
        b"MM" => false,
        _ => return Ok(None),
    };
    let mut layout = Layout { little, big_tiff: false };
    match layout.u16(&h[2..4]) {
        42 => Ok(Some((layout, layout.u32(&h[4..8]).into()))),
        43 if h.len() == 16 && layout.u16(&h[4..6]) == 8 => {
            layout.big_tiff = true;
            Ok(Some((layout, layout.u64(&h[8..16]))))
        }
        _ => Ok(None),
    }
}

/// One tag's value: its TIFF type and raw bytes in the file's byte order.
#[derive(Debug)]
struct Value {
    kind: u16,
    count: u64,
    bytes: Vec<u8>,
}

/// Bytes per element of a TIFF field type; `None` for types this reader does not know.
fn type_size(kind: u16) -> Option<u64> {
    Some(match kind {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 | 16 | 17 | 18 => 8,
        _ => return None,
    })
}

/// One image file directory: its tags and values.
#[derive(Debug)]
pub(crate) struct Ifd {
    layout: Layout,
    values: BTreeMap<u16, Value>,
}

impl Ifd {
    /// The unsigned integers of `tag` (BYTE, SHORT, LONG, LONG8, IFD types).
    pub(crate) fn uints(&self, tag: u16) -> Option<Vec<u64>> {
        let v = self.values.get(&tag)?;
        let l = &self.layout;
        let n = v.count as usize;
        let out = match v.kind {
            1 | 7 => v.bytes.iter().map(|&b| b.into()).collect(),
            3 => (0..n).map(|i| l.u16(&v.bytes[2 * i..]).into()).collect(),
            4 | 13 => (0..n).map(|i| l.u32(&v.bytes[4 * i..]).into()).collect(),
            16 | 18 => (0..n).map(|i| l.u64(&v.bytes[8 * i..])).collect(),
            _ => return None,
        };
        Some(out)
    }

    /// The first unsigned integer of `tag`.
    pub(crate) fn uint(&self, tag: u16) -> Option<u64> {
        self.uints(tag)?.first().copied()
    }

    /// The first RATIONAL (or FLOAT/DOUBLE) of `tag` as a number.
    pub(crate) fn real(&self, tag: u16) -> Option<f64> {
        let v = self.values.get(&tag).filter(|v| v.count > 0)?;
        let l = &self.layout;
        match v.kind {
            5 => {
                let (n, d) = (l.u32(&v.bytes[0..]), l.u32(&v.bytes[4..]));
                (d != 0).then(|| n as f64 / d as f64)
            }
            11 => Some(f32::from_bits(l.u32(&v.bytes)) as f64),
            12 => Some(f64::from_bits(l.u64(&v.bytes))),
            _ => self.uint(tag).map(|u| u as f64),
        }
    }

    /// The ASCII text of `tag`, up to its first NUL.
    pub(crate) fn text(&self, tag: u16) -> Option<String> {
        let v = self.values.get(&tag).filter(|v| v.kind == 2)?;
        let end = v.bytes.iter().position(|&b| b == 0).unwrap_or(v.bytes.len());
        Some(String::from_utf8_lossy(&v.bytes[..end]).into_owned())
    }

    /// The raw bytes of `tag` (UNDEFINED or BYTE values such as `JPEGTables`).
    pub(crate) fn bytes(&self, tag: u16) -> Option<&[u8]> {
        self.values.get(&tag).filter(|v| matches!(v.kind, 1 | 7)).map(|v| v.bytes.as_slice())
    }

    /// Whether `tag` is present.
    pub(crate) fn has(&self, tag: u16) -> bool {
        self.values.contains_key(&tag)
    }
}

/// Reads every directory of the file in order: the main chain, and after each directory the
/// sub-directories it names (`SubIFDs`, where OME-TIFF keeps its pyramid). Returns each with
/// whether it is a sub-directory. A directory visited twice (a loop) or a chain longer than
/// [`MAX_DIRECTORIES`] is refused.
pub(crate) fn directories(src: &Source, layout: Layout, first: u64) -> Result<Vec<(Ifd, bool)>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut next = first;
    while next != 0 {
        let (ifd, following) = read_ifd(src, layout, next, out.len(), &mut seen)?;
        let subs = ifd.uints(330).unwrap_or_default();
        out.push((ifd, false));
        for sub in subs {
            let (ifd, _) = read_ifd(src, layout, sub, out.len(), &mut seen)?;
            out.push((ifd, true));
        }
        next = following;
    }
    Ok(out)
}

fn read_ifd(src: &Source, l: Layout, at: u64, index: usize, seen: &mut HashSet<u64>) -> Result<(Ifd, u64)> {
    if !seen.insert(at) || seen.len() > MAX_DIRECTORIES {
        return Err(TiffError::Format(format!(
            "directory {index} at byte {at}: the directory chain loops back or exceeds {MAX_DIRECTORIES} directories"
        )));
    }
    let what = || format!("directory {index}");
    let (count_len, entry_len, inline) = if l.big_tiff { (8, 20, 8) } else { (2, 12, 4) };
    let head = src.read(at, count_len, what)?;
    let count = if l.big_tiff { l.u64(&head) } else { l.u16(&head).into() };
    if count > MAX_ENTRIES {
        return Err(TiffError::Format(format!("directory {index} claims {count} entries (at most {MAX_ENTRIES})")));
    }
    let body = src.read(at + count_len, count * entry_len + inline, what)?;
    let mut values = BTreeMap::new();
    for e in body.chunks_exact(entry_len as usize).take(count as usize) {
        let (tag, kind) = (l.u16(&e[0..]), l.u16(&e[2..]));
        let n = if l.big_tiff { l.u64(&e[4..]) } else { l.u32(&e[4..]).into() };
        let Some(size) = type_size(kind) else { continue };
        let total = n.checked_mul(size).filter(|&t| t <= MAX_VALUE_BYTES).ok_or_else(|| {
            TiffError::Format(format!("directory {index}: tag {tag} claims {n} values (an absurd size)"))
        })?;
        let field = &e[(entry_len - inline) as usize..];
        let bytes = if total <= inline {
            field[..total as usize].to_vec()
        } else {
            src.read(l.offset(field), total, || format!("directory {index}: tag {tag}'s values"))?
        };
        values.insert(tag, Value { kind, count: n, bytes });
    }
    let tail = &body[(count * entry_len) as usize..];
    Ok((Ifd { layout: l, values }, l.offset(tail)))
}
