//! Objects written for QuPath: detections beside a picture, in the slide's QuPath coordinates.

use std::path::{Path, PathBuf};

use patchtcga_engine::LearnError;
use patchtcga_slide::{feature_collection, QuPathObject, Slide};

/// Writes `objects` beside `out` as GeoJSON (`out` with the extension `.geojson`) in QuPath's
/// coordinates for `slide`, atomically; returns its path.
pub fn save_detections(slide: &Slide, objects: &[QuPathObject], out: &Path) -> Result<PathBuf, LearnError> {
    let path = out.with_extension("geojson");
    let text = feature_collection(objects, slide.annotation_frame().qupath_offset);
    patchtcga_atomic::write(&path, text.as_bytes()).map_err(|e| LearnError::io(&path, e))?;
    Ok(path)
}
