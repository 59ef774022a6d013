//! Attention heat maps as CLAM draws them: a MIL model's attention over a slide's patches (from the
//! slide's `.h5`), as percentiles, painted over the slide's thumbnail.

use std::path::{Path, PathBuf};

use patchtcga_slide::{tile_object, Slide};

use patchtcga_engine::LearnError;
use patchtcga_features::qupath::save_detections;
use patchtcga_features::slide_map::{draw, save_picture, Legend, SlideMap};

/// A slide's patches as an `.h5` lists them: level-0 top-left corners and the patch's level-0 side.
pub struct PatchGrid {
    pub coords: Vec<[i64; 2]>,
    pub footprint: f64,
}

/// Reads `coords` and the patch footprint from `path`: from the file's `mpp` and `patch_size`
/// (`patchtcga embed --slides`), or from `coords`' `patch_size` and `patch_level` (CLAM).
pub fn read_grid(path: &Path, slide: &Slide) -> Result<PatchGrid, LearnError> {
    let bad = |what: String| LearnError::Config(format!("{}: {what}", path.display()));
    let file = hdf5_metno::File::open(path).map_err(|e| bad(format!("not a readable HDF5 file ({e})")))?;
    let ds = file.dataset("coords").map_err(|_| bad("no `coords` dataset".into()))?;
    let coords =
        patchtcga_features::slide_features::read_coords(path)?.into_iter().map(|(x, y)| [x as i64, y as i64]).collect();
    let scalar_f = |attr: hdf5_metno::Result<hdf5_metno::Attribute>| attr.and_then(|a| a.read_scalar::<f64>()).ok();
    let scalar_i = |attr: hdf5_metno::Result<hdf5_metno::Attribute>| attr.and_then(|a| a.read_scalar::<i64>()).ok();
    let footprint = match (scalar_f(file.attr("mpp")), scalar_i(file.attr("patch_size"))) {
        (Some(mpp), Some(size)) => size as f64 * mpp / slide.mpp().x,
        _ => match (scalar_i(ds.attr("patch_size")), scalar_i(ds.attr("patch_level"))) {
            (Some(size), Some(level)) => size as f64 * slide.level_downsample(level as u32),
            _ => {
                return Err(bad(
                    "no patch size: neither `mpp` + `patch_size` nor coords' `patch_size` + `patch_level`".into()
                ))
            }
        },
    };
    Ok(PatchGrid { coords, footprint })
}

/// Each value's percentile among `values` (0 for the lowest, 1 for the highest), as CLAM shows
/// attention.
pub fn percentiles(values: &[f32]) -> Vec<f32> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let top = (values.len().max(2) - 1) as f32;
    let mut out = vec![0.0; values.len()];
    for (rank, i) in order.into_iter().enumerate() {
        out[i] = rank as f32 / top;
    }
    out
}

/// A map with one cell per patch footprint: each patch's attention percentile, NaN elsewhere.
pub fn attention_map(slide: &Slide, grid: &PatchGrid, attention: &[f32]) -> SlideMap {
    let (w, h) = slide.dimensions();
    let cols = (w as f64 / grid.footprint).ceil() as usize;
    let rows = (h as f64 / grid.footprint).ceil() as usize;
    let mut values = vec![f32::NAN; rows * cols];
    for (c, p) in grid.coords.iter().zip(percentiles(attention)) {
        let (col, row) =
            ((c[0] as f64 / grid.footprint).round() as usize, (c[1] as f64 / grid.footprint).round() as usize);
        if row < rows && col < cols {
            values[row * cols + col] = p;
        }
    }
    SlideMap {
        values,
        rows,
        cols,
        cell: (grid.footprint, grid.footprint),
        windows: grid.coords.len(),
        grid_windows: rows * cols,
    }
}

/// Paints `attention` (one value per patch of `grid`, in its order) over the slide's thumbnail
/// into the PNG `out`, and writes the raw values beside it (`.npy`, whose path is returned) and
/// the patches as QuPath detections with their attention and its percentile (`.geojson`); all
/// atomically.
pub fn paint(slide: &Slide, grid: &PatchGrid, attention: &[f32], out: &Path) -> Result<PathBuf, LearnError> {
    if grid.coords.len() != attention.len() {
        return Err(LearnError::Config(format!(
            "{}: {} patches for {} attention values",
            slide.path().display(),
            grid.coords.len(),
            attention.len()
        )));
    }
    let side = (grid.footprint, grid.footprint);
    let patches: Vec<_> = grid
        .coords
        .iter()
        .zip(attention.iter().zip(percentiles(attention)))
        .map(|(c, (&a, p))| {
            let measurements =
                vec![("attention".to_string(), a as f64), ("attention percentile".to_string(), p as f64)];
            tile_object((c[0] as f64, c[1] as f64), side, None, measurements)
        })
        .collect();
    save_detections(slide, &patches, out)?;
    let picture = draw(slide, &attention_map(slide, grid, attention), Legend::Attention)?;
    save_picture(&picture, &tch::Tensor::from_slice(attention), out)
}

#[cfg(test)]
mod tests {
    use super::percentiles;

    #[test]
    fn percentiles_rank_from_zero_to_one() {
        assert_eq!(percentiles(&[0.5, 0.1, 0.9]), vec![0.5, 0.0, 1.0]);
        assert_eq!(percentiles(&[0.3]), vec![0.0]);
    }
}
