//! Byte offsets inside the little-endian classic TIFFs that [`TiffSpec`](crate::TiffSpec)
//! writes, for tests that damage a file on purpose.

/// The `u32` at `at`.
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

/// Where the 12-byte entry of `tag` in the first directory starts.
pub fn entry(b: &[u8], tag: u16) -> usize {
    let ifd = u32_at(b, 4) as usize;
    let n = u16::from_le_bytes([b[ifd], b[ifd + 1]]) as usize;
    (0..n).map(|i| ifd + 2 + 12 * i).find(|&e| u16::from_le_bytes([b[e], b[e + 1]]) == tag).expect("tag present")
}

/// Where value `index` of the first directory's out-of-line `u32` array `tag` lies (324
/// TileOffsets, 325 TileByteCounts).
pub fn array_value(b: &[u8], tag: u16, index: usize) -> usize {
    u32_at(b, entry(b, tag) + 8) as usize + 4 * index
}

/// Where the data of tile `index` (row-major) of the first directory starts.
pub fn tile_data(b: &[u8], index: usize) -> usize {
    u32_at(b, array_value(b, 324, index)) as usize
}
