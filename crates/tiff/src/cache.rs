//! The decoded-tile cache one slide's readers share: concurrent, capped in bytes, each tile decoded once however many threads ask.

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

/// A decoded tile: its level, DCT scale and index in the level's grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TileKey {
    pub(crate) level: u16,
    pub(crate) eighths: u8,
    pub(crate) index: u32,
}

/// RGB bytes of a decoded tile.
type Pixels = Arc<Vec<u8>>;

#[derive(Debug, Clone)]
struct Bytes;

impl Weighter<TileKey, Pixels> for Bytes {
    fn weight(&self, _: &TileKey, tile: &Pixels) -> u64 {
        tile.len() as u64
    }
}

/// Decoded tiles, least recently used dropped first once the cap is reached.
#[derive(Debug)]
pub(crate) struct TileCache {
    tiles: Option<Cache<TileKey, Pixels, Bytes>>,
}

/// A typical decoded tile (256 × 256 RGB), to size the cache's index.
const TYPICAL_TILE_BYTES: u64 = 256 * 256 * 3;

impl TileCache {
    /// A cache holding up to `cap_bytes` of tiles; 0 keeps none.
    pub(crate) fn new(cap_bytes: u64) -> Self {
        let tiles = (cap_bytes > 0).then(|| {
            let items = (cap_bytes / TYPICAL_TILE_BYTES).max(16) as usize;
            Cache::with_weighter(items, cap_bytes, Bytes)
        });
        Self { tiles }
    }

    /// The tile for `key`, decoded by `decode` unless cached (concurrent askers wait for one
    /// decode).
    pub(crate) fn get_or_decode<E>(
        &self,
        key: TileKey,
        decode: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Pixels, E> {
        match &self.tiles {
            Some(c) => c.get_or_insert_with(&key, || decode().map(Arc::new)),
            None => decode().map(Arc::new),
        }
    }
}
