//! `manifest.csv` (one row per patch: where it came from and its checksum) and `MD5SUMS`.

use std::path::Path;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::{atomic, DatasetError, Result};

/// One patch of a built dataset: what `manifest.csv` lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Image path relative to the dataset root.
    pub file: String,
    /// Slide id (file stem of the slide unless the CSV names it), as given: the patch names carry
    /// it made readable by the release's loaders ([`crate::names::name_id`]).
    pub slide: String,
    /// File name of the slide the patch came from (empty in manifests of earlier versions).
    #[serde(default)]
    pub slide_file: String,
    /// Case (patient) id; splits never separate a case.
    pub case: String,
    /// `train` / `val` / `test`, empty for PTCGA200 (split afterwards).
    pub split: String,
    /// Organ folder, `normal`/`tumor`, or the ISUP grade.
    pub label: String,
    /// Level-0 x of the top-left corner.
    pub x: u32,
    /// Level-0 y of the top-left corner.
    pub y: u32,
    /// Pyramid level read.
    pub level: u32,
    /// µm per pixel of the patch.
    pub mpp: f64,
    /// Tissue-mask fraction of the footprint.
    pub tissue: f64,
    /// Label-mask path relative to the root (segPANDA200), else empty.
    pub mask: String,
    /// MD5 of the image file.
    pub md5: String,
    /// MD5 of the mask file, else empty.
    pub mask_md5: String,
}

/// One slide's quality control in a build: what `qc.csv` lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlideQc {
    /// Slide id.
    pub slide: String,
    /// Tissue area after pen ink was taken out, mm².
    pub tissue_mm2: f64,
    /// Pen-ink area (with its rim), mm².
    pub ink_mm2: f64,
    /// Positions with enough tissue.
    pub candidates: usize,
    /// Of those, left out for holding more ink than `--max-ink`.
    pub dropped_ink: usize,
    /// Left out near a tumour border (PCam200: neither clearly tumour nor normal).
    pub dropped_border: usize,
    /// Read and found blank or blurred (`--max-background`, `--min-sharpness`).
    pub dropped_quality: usize,
    /// Patches written.
    pub kept: usize,
    /// Of those, written as read because they held too little stain to normalise
    /// (`--stain-normalize`).
    pub stain_unchanged: usize,
}

/// Writes `qc.csv`, one row per slide.
pub fn write_qc(root: &Path, rows: &[SlideQc]) -> Result<()> {
    write_csv(&root.join("qc.csv"), rows)
}

/// Writes `rows` as a CSV with a header, atomically.
fn write_csv(path: &Path, rows: &[impl Serialize]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| DatasetError::invalid(path, e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| DatasetError::invalid(path, e.to_string()))?;
    atomic::write(path, &bytes)
}

/// Lower-case hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

/// Writes `manifest.csv` and `MD5SUMS` (md5sum's format, paths relative to `root`).
pub fn write_manifest(root: &Path, rows: &[ManifestRow]) -> Result<()> {
    write_csv(&root.join("manifest.csv"), rows)?;
    let mut sums = String::new();
    for r in rows {
        sums.push_str(&format!("{}  {}\n", r.md5, r.file));
        if !r.mask.is_empty() {
            sums.push_str(&format!("{}  {}\n", r.mask_md5, r.mask));
        }
    }
    atomic::write(&root.join("MD5SUMS"), sums.as_bytes())
}

/// Reads a `manifest.csv`.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>> {
    let mut r = csv::Reader::from_path(path).map_err(|e| DatasetError::invalid(path, e.to_string()))?;
    r.deserialize().collect::<std::result::Result<_, _>>().map_err(|e| DatasetError::invalid(path, e.to_string()))
}

/// Reads one slide's record of a build (a JSON list of rows).
pub fn read_manifest_json(path: &Path) -> Result<Vec<ManifestRow>> {
    let bytes = std::fs::read(path).map_err(DatasetError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| DatasetError::invalid(path, e.to_string()))
}
