//! DICOM VL Whole Slide Microscopy: a series (a folder, or any one `.dcm` of it) as a tiled pyramid — one level per VOLUME instance, frames located in the file and read as tiles.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTable, InMemDicomObject, OpenFileOptions};
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::StatefulDecode;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use crate::decode::{Codec, Colour, Compression};
use crate::ifd::Source;
use crate::level::{check_grid, Level, TileFiles};
use crate::{Result, TiffError};

/// The SOP class of VL Whole Slide Microscopy images.
const WSI_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";
/// Frames past this many per instance are damage.
const MAX_FRAMES: usize = 1 << 22;

/// An open series: its levels (finest first), the files they read, and what identifies it.
pub(crate) struct Series {
    pub(crate) levels: Vec<Level>,
    pub(crate) sources: Vec<Source>,
    pub(crate) about: About,
    /// The label, overview and thumbnail images, named as OpenSlide names them (label, macro,
    /// thumbnail), each one level of its own file.
    pub(crate) associated: Vec<(String, Level)>,
}

/// What identifies a series and its scale.
#[derive(Debug, Clone)]
pub(crate) struct About {
    /// µm/px (x, y) of the finest level, from its pixel spacing.
    pub(crate) mpp: Option<(f64, f64)>,
    pub(crate) study_uid: String,
    pub(crate) series_uid: String,
}

/// What an instance's `ImageType` (its third value) says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageKind {
    Volume,
    Label,
    Overview,
    Thumbnail,
}

impl ImageKind {
    fn of(o: &InMemDicomObject) -> Option<Self> {
        let types = o.element(tags::IMAGE_TYPE).ok()?.to_multi_str().ok()?;
        Some(match types.get(2)?.trim() {
            "VOLUME" => Self::Volume,
            "LABEL" => Self::Label,
            "OVERVIEW" => Self::Overview,
            "THUMBNAIL" => Self::Thumbnail,
            _ => return None,
        })
    }

    /// OpenSlide's name for an associated image of this flavour.
    fn associated_name(self) -> Option<&'static str> {
        match self {
            Self::Volume => None,
            Self::Label => Some("label"),
            Self::Overview => Some("macro"),
            Self::Thumbnail => Some("thumbnail"),
        }
    }
}

/// Whether `path` is a DICOM file (the `DICM` magic after the 128-byte preamble) or a folder.
pub(crate) fn looks_like_dicom(path: &Path) -> bool {
    use std::io::Read;
    if path.is_dir() {
        return true;
    }
    let mut head = [0u8; 132];
    File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head[128..] == b"DICM"
}

/// One instance's attributes, read up to its pixel data.
struct Instance {
    path: PathBuf,
    object: InMemDicomObject,
    transfer_syntax: String,
    pixels: PixelData,
}

/// Where an instance's pixel data lies.
#[derive(Debug, Clone, Copy)]
enum PixelData {
    /// Native frames: `len` bytes from `start`.
    Native { start: u64, len: u64 },
    /// Encapsulated frames: the items (offset table, then fragments) from `items`.
    Encapsulated { items: u64 },
}

fn bad(path: &Path, cause: impl std::fmt::Display) -> TiffError {
    TiffError::Format(format!("{}: {cause}", path.display()))
}

/// Reads an instance's attributes, once its element lengths are known to stay inside the file
/// (dicom-rs allocates what a length says before reading it).
fn read_instance(path: &Path) -> Result<Instance> {
    let file_len = std::fs::metadata(path)?.len();
    let body = check_meta(path, file_len)?;
    let mut reader = BufReader::new(File::open(path)?);
    reader.seek(SeekFrom::Start(128))?;
    let meta = FileMetaTable::from_reader(&mut reader).map_err(|e| bad(path, e))?;
    let transfer_syntax = meta.transfer_syntax().to_string();
    let pixels = pixel_data(path, body, file_len, &transfer_syntax)?;
    let file = OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path).map_err(|e| bad(path, e))?;
    Ok(Instance { path: path.to_path_buf(), object: file.into_inner(), transfer_syntax, pixels })
}

/// Walks the file meta group (explicit VR, little endian, from byte 132), refusing a length
/// past the file's end; returns where the data set starts.
fn check_meta(path: &Path, file_len: u64) -> Result<u64> {
    use std::io::Read;
    let mut head = Vec::new();
    File::open(path)?.take(1 << 16).read_to_end(&mut head)?;
    let mut at = 132usize;
    while at + 8 <= head.len() && u16::from_le_bytes([head[at], head[at + 1]]) == 2 {
        let long = matches!(&head[at + 4..at + 6], b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR");
        let (header, len) = if long {
            let b = head.get(at + 8..at + 12).ok_or_else(|| bad(path, "a truncated file meta group"))?;
            (12, u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
        } else {
            (8, u16::from_le_bytes([head[at + 6], head[at + 7]]) as u64)
        };
        let next = at as u64 + header + len;
        if next > file_len.min(1 << 16) {
            return Err(bad(path, format!("a file meta element at byte {at} runs past the end of the group")));
        }
        at = next as usize;
    }
    Ok(at as u64)
}

/// Walks the data set from `body` to its pixel data without reading values, refusing any
/// length past the file's end.
fn pixel_data(path: &Path, body: u64, file_len: u64, transfer_syntax: &str) -> Result<PixelData> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(|| TiffError::Unsupported(format!("{}: transfer syntax {transfer_syntax}", path.display())))?;
    let mut file = BufReader::new(File::open(path)?);
    file.seek(SeekFrom::Start(body))?;
    let mut reader = LazyDataSetReader::new_with_ts(file, ts).map_err(|e| bad(path, e))?;
    let mut depth = 0usize;
    loop {
        let token = reader.advance().ok_or_else(|| bad(path, "no pixel data"))?.map_err(|e| bad(path, e))?;
        // The decoder counts from the file's start.
        let past_end = |len: Option<u32>, at: u64| len.is_some_and(|l| at + l as u64 > file_len);
        match token {
            // A sequence's stated length allocates nothing; the values inside it are checked.
            LazyDataToken::SequenceStart { .. } | LazyDataToken::ItemStart { .. } => depth += 1,
            LazyDataToken::SequenceEnd | LazyDataToken::ItemEnd => depth = depth.saturating_sub(1),
            LazyDataToken::PixelSequenceStart if depth == 0 => {
                return Ok(PixelData::Encapsulated { items: reader.into_decoder().position() })
            }
            LazyDataToken::LazyValue { header, decoder } => {
                let at = decoder.position();
                if past_end(header.len.get(), at) {
                    return Err(bad(path, format!("element {} runs past the end of the file", header.tag)));
                }
                if depth == 0 && header.tag == tags::PIXEL_DATA {
                    let len = header.len.get().ok_or_else(|| bad(path, "pixel data of undefined length"))?;
                    return Ok(PixelData::Native { start: at, len: len as u64 });
                }
                LazyDataToken::LazyValue { header, decoder }.skip().map_err(|e| bad(path, e))?
            }
            t @ LazyDataToken::LazyItemValue { .. } => t.skip().map_err(|e| bad(path, e))?,
            _ => {}
        }
    }
}

fn text(o: &InMemDicomObject, tag: dicom_object::Tag) -> Option<String> {
    o.element(tag).ok()?.to_str().ok().map(|s| s.trim_end_matches(['\0', ' ']).to_string())
}

fn number(o: &InMemDicomObject, tag: dicom_object::Tag) -> Option<u64> {
    o.element(tag).ok()?.to_int::<u64>().ok()
}

/// The items of sequence `tag`.
fn items(o: &InMemDicomObject, tag: dicom_object::Tag) -> &[InMemDicomObject] {
    o.element(tag).ok().and_then(|e| e.items()).unwrap_or(&[])
}

/// Opens the VOLUME instances of the series `path` names (a folder, or one of its files).
pub(crate) fn open(path: &Path) -> Result<Series> {
    // The file given (if one is) is read once, here, and taken up again in the folder's walk.
    let (folder, mut given) = if path.is_dir() {
        (path.to_path_buf(), None)
    } else {
        (path.parent().unwrap_or(Path::new(".")).to_path_buf(), Some(read_instance(path)?))
    };
    let wanted = given.as_ref().and_then(|g| text(&g.object, tags::SERIES_INSTANCE_UID));
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&folder)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && looks_like_dicom(p))
        .collect();
    candidates.sort();
    let (mut volumes, mut extras) = (Vec::new(), Vec::new());
    let mut uids = None;
    for p in candidates {
        let inst = match given.take_if(|g| g.path == p) {
            Some(g) => g,
            None => read_instance(&p)?,
        };
        let o = &inst.object;
        if text(o, tags::SOP_CLASS_UID).as_deref() != Some(WSI_SOP_CLASS) {
            continue;
        }
        let series = text(o, tags::SERIES_INSTANCE_UID).unwrap_or_default();
        if wanted.as_ref().is_some_and(|w| *w != series) {
            continue;
        }
        match &uids {
            None => uids = Some((text(o, tags::STUDY_INSTANCE_UID).unwrap_or_default(), series)),
            Some((_, s)) if *s != series => {
                return Err(TiffError::Unsupported(format!(
                    "{} holds more than one series ({s} and {series}); open one of its files",
                    folder.display()
                )))
            }
            Some(_) => {}
        }
        match ImageKind::of(o) {
            Some(ImageKind::Volume) => volumes.push(inst),
            Some(f) => extras.push((f, inst)),
            None => {}
        }
    }
    let (study_uid, series_uid) = uids.ok_or_else(|| {
        TiffError::Unsupported(format!("{}: no DICOM whole-slide image (VL Whole Slide Microscopy)", folder.display()))
    })?;
    if volumes.is_empty() {
        return Err(bad(&folder, "no VOLUME image in the series"));
    }
    let size = |i: &Instance| {
        (number(&i.object, tags::TOTAL_PIXEL_MATRIX_COLUMNS), number(&i.object, tags::TOTAL_PIXEL_MATRIX_ROWS))
    };
    volumes.sort_by_key(|i| std::cmp::Reverse(size(i)));
    let mpp = pixel_spacing(&volumes[0].object);
    let (mut levels, mut sources) = (Vec::new(), Vec::new());
    // The instances of one size make one level (concatenations, or sparse parts).
    for group in volumes.chunk_by(|a, b| size(a) == size(b)) {
        let first = sources.len();
        for inst in group {
            sources.push(Source::new(File::open(&inst.path)?)?);
        }
        if sources.len() > u16::MAX as usize {
            return Err(bad(&folder, "more instances than the reader takes"));
        }
        let parts: Vec<(&Instance, usize)> = group.iter().zip(first..).collect();
        levels.push(level(&parts, &sources)?);
    }
    // An associated image the reader cannot decode (JPEG 2000, …) is left out, not an error.
    let mut associated = Vec::new();
    for (flavor, inst) in extras {
        let name = flavor.associated_name().expect("volumes are levels");
        let Ok(source) = Source::new(File::open(&inst.path)?) else { continue };
        if associated.iter().any(|(n, _)| n == name) {
            continue;
        }
        sources.push(source);
        match level(&[(&inst, sources.len() - 1)], &sources) {
            Ok(level) => associated.push((name.to_string(), level)),
            Err(_) => drop(sources.pop()),
        }
    }
    associated.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Series { levels, sources, about: About { mpp, study_uid, series_uid }, associated })
}

/// µm/px (x, y) from the shared functional groups' pixel measures (row spacing, column spacing
/// in mm).
fn pixel_spacing(o: &InMemDicomObject) -> Option<(f64, f64)> {
    let shared = items(o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first()?;
    let measures = items(shared, tags::PIXEL_MEASURES_SEQUENCE).first()?;
    let spacing = measures.element(tags::PIXEL_SPACING).ok()?.to_multi_float64().ok()?;
    match spacing[..] {
        [row, col] if row > 0.0 && col > 0.0 => Some((col * 1000.0, row * 1000.0)),
        _ => None,
    }
}

/// The instances of one level (one, or the parts of a concatenated or sparse level), each with
/// the index of its file in `sources`, as a level: its grid, codec, and where each frame lies.
fn level(parts: &[(&Instance, usize)], sources: &[Source]) -> Result<Level> {
    let (first, _) = parts[0];
    let (width, height, tw, th) = grid(first)?;
    let (across, down) = check_grid(width, height, tw, th).map_err(|c| bad(&first.path, c))?;
    let first_codec = codec(first)?;
    let tiles = (across * down) as usize;
    let (mut offsets, mut counts) = (vec![0u64; tiles], vec![0u64; tiles]);
    let mut files = vec![0u16; if parts.len() > 1 { tiles } else { 0 }];
    for &(inst, file) in parts {
        let (o, path) = (&inst.object, &inst.path);
        let other = codec(inst)?;
        if grid(inst)? != (width, height, tw, th)
            || (other.compression, other.colour) != (first_codec.compression, first_codec.colour)
        {
            return Err(bad(
                path,
                format!(
                    "a part of the level of {} that differs from it in size, frames or encoding",
                    first.path.display()
                ),
            ));
        }
        let frames = number(o, tags::NUMBER_OF_FRAMES).unwrap_or(1) as usize;
        if frames == 0 || frames > MAX_FRAMES {
            return Err(bad(path, format!("{frames} frames")));
        }
        for (tag, name) in
            [(tags::TOTAL_PIXEL_MATRIX_FOCAL_PLANES, "focal planes"), (tags::NUMBER_OF_OPTICAL_PATHS, "optical paths")]
        {
            if number(o, tag).is_some_and(|n| n > 1) {
                return Err(TiffError::Unsupported(format!("{}: several {name}", path.display())));
            }
        }
        let at = frame_positions(inst, &sources[file], frames, tw * th * 3)?;
        let sparse = text(o, tags::DIMENSION_ORGANIZATION_TYPE).as_deref() == Some("TILED_SPARSE");
        // A concatenation's part holds the frames from this offset on.
        let skip = number(o, tags::CONCATENATION_FRAME_OFFSET_NUMBER).unwrap_or(0) as usize;
        let per_frame = items(o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
        for (k, &(offset, count)) in at.iter().enumerate() {
            let index = if sparse {
                sparse_tile(per_frame.get(k), k, (tw, th), (across, down)).map_err(|c| bad(path, c))?
            } else {
                Some(skip + k).filter(|&i| i < tiles).ok_or_else(|| {
                    bad(path, format!("frame {} lies past the TILED_FULL grid of {tiles} tiles", skip + k))
                })?
            };
            if counts[index] > 0 {
                return Err(bad(path, format!("frame {k} lands on a tile another frame holds")));
            }
            offsets[index] = offset;
            counts[index] = count;
            if !files.is_empty() {
                files[index] = file as u16;
            }
        }
    }
    let mut level =
        Level::new(width as u32, height as u32, tw as u32, th as u32, across as u32, offsets, counts, first_codec);
    level.files = if files.is_empty() { TileFiles::All(parts[0].1) } else { TileFiles::Each(files) };
    Ok(level)
}

/// An instance's total size and frame size (width, height, frame width, frame height).
fn grid(inst: &Instance) -> Result<(u64, u64, u64, u64)> {
    let (o, path) = (&inst.object, &inst.path);
    let need = |tag, name: &str| number(o, tag).ok_or_else(|| bad(path, format!("no {name}")));
    let (tw, th) = (need(tags::COLUMNS, "Columns")?, need(tags::ROWS, "Rows")?);
    // A single-frame image (a label) may leave the total pixel matrix out.
    let width = number(o, tags::TOTAL_PIXEL_MATRIX_COLUMNS).unwrap_or(tw);
    let height = number(o, tags::TOTAL_PIXEL_MATRIX_ROWS).unwrap_or(th);
    Ok((width, height, tw, th))
}

/// The tile a TILED_SPARSE frame `k` fills, from its plane position (1-based pixel column, row).
fn sparse_tile(
    per_frame: Option<&InMemDicomObject>,
    k: usize,
    (tw, th): (u64, u64),
    (across, down): (u64, u64),
) -> std::result::Result<usize, String> {
    let position = per_frame
        .and_then(|f| items(f, tags::PLANE_POSITION_SLIDE_SEQUENCE).first())
        .ok_or_else(|| format!("TILED_SPARSE frame {k} has no plane position"))?;
    let col = number(position, tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX);
    let row = number(position, tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX);
    let (Some(col @ 1..), Some(row @ 1..)) = (col, row) else {
        return Err(format!("frame {k}: no column/row position"));
    };
    let (c, r) = ((col - 1) / tw, (row - 1) / th);
    if c >= across || r >= down {
        return Err(format!("frame {k} at ({col}, {row}) lies outside the image"));
    }
    Ok((r * across + c) as usize)
}

/// How the frames are encoded, or why they are not read natively.
fn codec(inst: &Instance) -> Result<Codec> {
    let o = &inst.object;
    let unsupported = |what: String| TiffError::Unsupported(format!("{}: {what}", inst.path.display()));
    if number(o, tags::SAMPLES_PER_PIXEL) != Some(3) || number(o, tags::BITS_ALLOCATED) != Some(8) {
        return Err(unsupported("frames other than 8-bit, 3-sample colour".into()));
    }
    let photometric = text(o, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    let compression = match inst.transfer_syntax.as_str() {
        "1.2.840.10008.1.2.4.50" => Compression::Jpeg,
        "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2" => Compression::None,
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => Compression::Jpeg2000,
        ts => return Err(unsupported(format!("transfer syntax {ts}"))),
    };
    let colour = match (compression, photometric.as_str()) {
        (_, "RGB") => Colour::Rgb,
        (Compression::Jpeg, "YBR_FULL_422" | "YBR_FULL") => Colour::YCbCr,
        // The codestream's multiple-component transform undoes these.
        (Compression::Jpeg2000, "YBR_ICT" | "YBR_RCT") => Colour::Rgb,
        (_, p) => return Err(unsupported(format!("photometric interpretation {p}"))),
    };
    if compression == Compression::None && number(o, tags::PLANAR_CONFIGURATION).is_some_and(|p| p != 0) {
        return Err(unsupported("separate colour planes".into()));
    }
    Ok(Codec { compression, colour, predictor: false, tables: None })
}

/// Where each frame lies in the file, (offset, bytes): the fragments of encapsulated pixel data
/// (one per frame), or consecutive `frame_bytes` of native pixel data.
fn frame_positions(inst: &Instance, source: &Source, frames: usize, frame_bytes: u64) -> Result<Vec<(u64, u64)>> {
    match inst.pixels {
        PixelData::Native { start, len } => {
            if len < frame_bytes * frames as u64 {
                return Err(bad(&inst.path, format!("{len} bytes of pixel data for {frames} frames of {frame_bytes}")));
            }
            Ok((0..frames as u64).map(|k| (start + k * frame_bytes, frame_bytes)).collect())
        }
        PixelData::Encapsulated { items } => fragments(source, items, frames).map_err(|c| bad(&inst.path, c)),
    }
}

/// The fragments of encapsulated pixel data whose items start at `at`: the basic offset table
/// item, then one fragment per frame, up to the sequence delimiter.
fn fragments(source: &Source, mut at: u64, frames: usize) -> std::result::Result<Vec<(u64, u64)>, String> {
    let item = |at: u64| -> std::result::Result<(u16, u16, u64), String> {
        let b = source.read(at, 8, || "a pixel data item header".into()).map_err(|e| e.to_string())?;
        let (group, element) = (u16::from_le_bytes([b[0], b[1]]), u16::from_le_bytes([b[2], b[3]]));
        Ok((group, element, u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as u64))
    };
    let mut out = Vec::with_capacity(frames);
    let mut first = true;
    loop {
        let (group, element, len) = item(at)?;
        match (group, element) {
            (0xFFFE, 0xE0DD) => break,
            (0xFFFE, 0xE000) => {
                if len == 0xFFFF_FFFF || at + 8 + len > source.len() {
                    return Err(format!("a pixel data fragment at byte {at} runs past the end of the file"));
                }
                if !first {
                    out.push((at + 8, len));
                    if out.len() > frames {
                        return Err(format!(
                            "more fragments than the {frames} frames (frames split over fragments are not read)"
                        ));
                    }
                }
                first = false;
                at += 8 + len;
            }
            _ => return Err(format!("no pixel data item at byte {at}")),
        }
    }
    if out.len() != frames {
        return Err(format!("{} fragments for {frames} frames", out.len()));
    }
    Ok(out)
}
