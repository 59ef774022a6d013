//! Fixtures for tests: the bundled sample slide and slides derived from it, written as the
//! generic tiled TIFFs OpenSlide reads (with or without resolution tags).

use std::io::Write;
use std::path::{Path, PathBuf};

use image::RgbImage;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The bundled real H&E slide (Aperio SVS, 2220×2967 px, 0.499 µm/px).
pub fn sample_slide() -> PathBuf {
    repo_root().join("assets/cmu1_small_region.svs")
}

/// Writes `image` as a single-level, uncompressed, 256×256-tiled RGB TIFF (OpenSlide's
/// generic-tiff format). With `mpp`, the resolution tags say that many µm per pixel (in
/// pixels per centimetre, ResolutionUnit 3); without, the file carries no resolution.
// The whole file layout in one place: the offsets computed for the header, extra data and IFD
// are the ones the tiles are written at.
pub fn write_tiled_tiff(path: &Path, image: &RgbImage, mpp: Option<f64>) -> std::io::Result<()> {
    const TILE: u32 = 256;
    let (w, h) = image.dimensions();
    let (tx, ty) = (w.div_ceil(TILE), h.div_ceil(TILE));
    let n_tiles = (tx * ty) as usize;
    let tile_bytes = (TILE * TILE * 3) as usize;

    // Layout: header | extra data (bits, resolutions, offsets, counts) | IFD | tiles.
    let mut extra = Vec::<u8>::new();
    let data_start = 8u32;
    let bits_off = data_start;
    extra.extend([8u16, 8, 8].iter().flat_map(|v| v.to_le_bytes()));
    let res_off = data_start + extra.len() as u32;
    let px_per_cm = mpp.map(|m| (1e4 / m * 1000.0).round() as u32);
    for _ in 0..2 {
        extra.extend(px_per_cm.unwrap_or(0).to_le_bytes());
        extra.extend(1000u32.to_le_bytes());
    }
    let offsets_off = data_start + extra.len() as u32;
    extra.resize(extra.len() + 4 * n_tiles, 0);
    let counts_off = data_start + extra.len() as u32;
    for _ in 0..n_tiles {
        extra.extend((tile_bytes as u32).to_le_bytes());
    }
    let ifd_off = data_start + extra.len() as u32;
    let mut entries: Vec<(u16, u16, u32, u32)> = vec![
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, 3, bits_off),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (277, 3, 1, 3),
        (284, 3, 1, 1),
        (322, 4, 1, TILE),
        (323, 4, 1, TILE),
        (324, 4, n_tiles as u32, offsets_off),
        (325, 4, n_tiles as u32, counts_off),
    ];
    if mpp.is_some() {
        entries.extend([(282, 5, 1, res_off), (283, 5, 1, res_off + 8), (296, 3, 1, 3)]);
    }
    entries.sort_by_key(|e| e.0);
    let ifd_len = 2 + 12 * entries.len() as u32 + 4;
    let tiles_start = ifd_off + ifd_len;
    for i in 0..n_tiles {
        let off = tiles_start + (i * tile_bytes) as u32;
        let at = (offsets_off - data_start) as usize + 4 * i;
        extra[at..at + 4].copy_from_slice(&off.to_le_bytes());
    }

    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"II*\0")?;
    f.write_all(&ifd_off.to_le_bytes())?;
    f.write_all(&extra)?;
    f.write_all(&(entries.len() as u16).to_le_bytes())?;
    for (tag, typ, count, value) in entries {
        f.write_all(&tag.to_le_bytes())?;
        f.write_all(&typ.to_le_bytes())?;
        f.write_all(&count.to_le_bytes())?;
        // A single SHORT sits in the first two bytes of the value field; a single LONG array
        // element (one tile's offset or byte count) is stored inline, not pointed to.
        if typ == 3 && count == 1 {
            f.write_all(&(value as u16).to_le_bytes())?;
            f.write_all(&[0, 0])?;
        } else if (tag == 324 || tag == 325) && count == 1 {
            let at = (value - data_start) as usize;
            f.write_all(&extra[at..at + 4])?;
        } else {
            f.write_all(&value.to_le_bytes())?;
        }
    }
    f.write_all(&0u32.to_le_bytes())?;
    let mut tile = vec![0u8; tile_bytes];
    for j in 0..ty {
        for i in 0..tx {
            tile.fill(255);
            for y in 0..TILE.min(h - j * TILE) {
                for x in 0..TILE.min(w - i * TILE) {
                    let p = image.get_pixel(i * TILE + x, j * TILE + y).0;
                    let o = ((y * TILE + x) * 3) as usize;
                    tile[o..o + 3].copy_from_slice(&p);
                }
            }
            f.write_all(&tile)?;
        }
    }
    f.flush()
}

/// Runs test `name` of the calling test binary again as each rank of a `world`-process run on a
/// fresh loopback rendezvous (torchrun's variables set, plus `env`), and returns their outputs
/// in rank order. The test tells parent from child by a variable of `env`.
pub fn run_ranks(name: &str, world: usize, env: &[(&str, &str)]) -> Vec<std::process::Output> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("port").port();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args([name, "--exact", "--nocapture", "--test-threads", "1"])
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .envs(env.iter().copied())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start a rank")
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().expect("a rank's output")).collect()
}

/// Asserts that every rank of [`run_ranks`] succeeded and printed `rank N ok`.
pub fn assert_ranks_ok(outputs: &[std::process::Output]) {
    for (rank, o) in outputs.iter().enumerate() {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains(&format!("rank {rank} ok")),
            "rank {rank}: {text}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
