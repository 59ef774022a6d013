//! Damaged files fail with one message naming the directory or tile, never a panic, an out-of-bounds read or an unbounded allocation; a fuzzer over mutated headers and directories keeps it so.

use std::path::Path;

use image::RgbImage;
use patchtcga_testkit::tiff_bytes::{array_value, entry, tile_data, u32_at};
use patchtcga_testkit::{Coding, TiffSpec};
use patchtcga_tiff::{TiffError, TiffSlide};
use proptest::prelude::*;

/// A small SVS-like file: two levels of 240 px JPEG tiles with shared tables.
fn svs_like(dir: &Path) -> Vec<u8> {
    let img = RgbImage::from_fn(600, 500, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8]));
    let spec = TiffSpec {
        tile: 240,
        coding: Coding::Jpeg { ycbcr: false, shared_tables: true },
        levels: 2,
        aperio_mpp: Some(0.25),
        ..TiffSpec::default()
    };
    spec.write(&dir.join("original.svs"), &img).unwrap()
}

/// Opens `bytes` and reads every tile of every level; the first error, if any.
fn open_and_read_all(dir: &Path, bytes: &[u8]) -> Result<(), TiffError> {
    let p = dir.join("damaged.svs");
    std::fs::write(&p, bytes).unwrap();
    let slide = TiffSlide::open(&p, 1 << 20)?;
    for (i, l) in slide.levels().iter().enumerate() {
        slide.read(i, 8, 0, 0, l.width, l.height, [255; 3])?;
    }
    Ok(())
}

#[test]
fn the_undamaged_file_reads() {
    let dir = tempfile::tempdir().unwrap();
    let b = svs_like(dir.path());
    open_and_read_all(dir.path(), &b).unwrap();
}

#[test]
fn a_truncated_file_names_what_lies_past_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let b = svs_like(dir.path());
    for keep in [b.len() / 2, b.len() - 7, 12] {
        let e = open_and_read_all(dir.path(), &b[..keep]).unwrap_err().to_string();
        assert!(e.contains("past the end of the file") || e.contains("not a TIFF"), "{e}");
    }
}

#[test]
fn a_tile_offset_outside_the_file_names_the_level_and_tile() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = svs_like(dir.path());
    let past = (b.len() - 10) as u32;
    let at = array_value(&b, 324, 1); // tile (1, 0)
    b[at..at + 4].copy_from_slice(&past.to_le_bytes());
    let e = open_and_read_all(dir.path(), &b).unwrap_err();
    assert!(matches!(e, TiffError::Tile { level: 0, col: 1, row: 0, .. }), "{e}");
    assert!(e.to_string().contains("past the end of the file"), "{e}");
}

#[test]
fn a_corrupt_jpeg_tile_names_the_level_and_tile() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = svs_like(dir.path());
    let t = tile_data(&b, 0);
    b[t..t + 2].copy_from_slice(&[0x12, 0x34]); // no start-of-image marker
    let e = open_and_read_all(dir.path(), &b).unwrap_err().to_string();
    assert!(e.starts_with("level 0, tile (0, 0):") && e.contains("not a JPEG"), "{e}");

    let mut b = svs_like(dir.path());
    let t = tile_data(&b, 0);
    let n = u32_at(&b, array_value(&b, 325, 0)) as usize;
    b[t + n / 2..t + n].fill(0xFF); // entropy-coded data destroyed
    let e = open_and_read_all(dir.path(), &b).unwrap_err().to_string();
    assert!(e.starts_with("level 0, tile (0, 0): JPEG"), "{e}");
}

#[test]
fn a_directory_loop_and_absurd_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = svs_like(dir.path());
    let first = u32_at(&b, 4);
    let n = u16::from_le_bytes([b[first as usize], b[first as usize + 1]]) as usize;
    let next = first as usize + 2 + 12 * n;
    b[next..next + 4].copy_from_slice(&first.to_le_bytes());
    let e = open_and_read_all(dir.path(), &b).unwrap_err().to_string();
    assert!(e.contains("loops back"), "{e}");

    let mut b = svs_like(dir.path());
    let w = entry(&b, 256);
    b[w + 8..w + 12].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let e = open_and_read_all(dir.path(), &b).unwrap_err().to_string();
    assert!(e.contains("absurd dimensions"), "{e}");

    let mut b = svs_like(dir.path());
    let c = entry(&b, 324);
    b[c + 4..c + 8].copy_from_slice(&u32::MAX.to_le_bytes()); // 4 billion tile offsets
    let e = open_and_read_all(dir.path(), &b).unwrap_err().to_string();
    assert!(e.contains("absurd size"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any bytes of the header and first directory (and the JPEG tables) changed: an error or
    /// pixels, never a panic.
    #[test]
    fn mutated_headers_and_directories_never_panic(changes in prop::collection::vec((0usize..4096, any::<u8>()), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        let _ = open_and_read_all(dir.path(), &mutated(svs_like(dir.path()), &changes));
    }
}

/// `b` with `changes` made: each (target, byte) sets one of the 8-byte header and the bytes from
/// 2 KiB before the first directory (tile offsets, byte counts, tables) to the end of the file.
fn mutated(mut b: Vec<u8>, changes: &[(usize, u8)]) -> Vec<u8> {
    let ifd = u32_at(&b, 4) as usize;
    let targets: Vec<usize> = (0..8).chain(ifd.saturating_sub(2048)..b.len()).collect();
    for &(at, byte) in changes {
        b[targets[at % targets.len()]] = byte;
    }
    b
}

#[test]
fn a_tile_size_whose_area_overflows_is_refused() {
    // The fuzzer's find: TileWidth's type made LONG8 (16), so its value is read from elsewhere
    // as a 64-bit number whose product with the tile height overflowed.
    let dir = tempfile::tempdir().unwrap();
    let b = mutated(svs_like(dir.path()), &[(2156, 16)]);
    let e = open_and_read_all(dir.path(), &b).unwrap_err().to_string();
    assert!(e.contains("absurd tile size"), "{e}");
}

#[test]
fn a_failed_decode_leaves_this_thread_able_to_decode_the_next_file() {
    // libjpeg-turbo handles are kept per thread; one that failed mid-stream must not spoil the
    // next tile (it did: "Bogus DQT index" on every later tile of the thread).
    let dir = tempfile::tempdir().unwrap();
    let good = svs_like(dir.path());
    let t = tile_data(&good, 0);
    let n = u32_at(&good, array_value(&good, 325, 0)) as usize;
    let mut bad: Vec<Vec<u8>> = [3, n / 3, n - 2]
        .iter()
        .map(|&cut| {
            let mut b = good.clone();
            b[t + cut..t + n].fill(0);
            b
        })
        .collect();
    // OpenSlide's own damaged Aperio test file (corrupt JPEG data in its tiles).
    bad.push(std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../slide/tests/data/unreadable.svs")).unwrap());
    for (i, b) in bad.iter().enumerate() {
        assert!(open_and_read_all(dir.path(), b).is_err());
        open_and_read_all(dir.path(), &good).unwrap_or_else(|e| panic!("after damaged file {i}: {e}"));
    }
}
