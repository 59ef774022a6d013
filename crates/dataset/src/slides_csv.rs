//! The slide list a builder reads (a CSV with a header) and its checks.

use std::path::{Path, PathBuf};

use crate::kind::Split;
use crate::{DatasetError, Result};

/// One row of a builder's slide list (a CSV with a header).
///
/// Columns: `slide` (path, relative to the CSV or absolute; required), `id` (default: the
/// slide's file stem), `case` (default: the id), `split` (`train`/`val`/`test`; default:
/// assigned by case), and per builder `organ` (PTCGA200), `annotation` (PCam200; empty for a
/// normal slide), `mask`, `data_provider` (or `provider`), `isup_grade` (or `grade`) and
/// `gleason_score` (segPANDA200; PANDA's own `train.csv` column names work).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlideRow {
    /// 1-based line in the CSV (for messages).
    pub line: usize,
    /// Slide file.
    pub slide: PathBuf,
    /// Slide id used in patch names.
    pub id: String,
    /// Case id.
    pub case: String,
    /// Given split, if any.
    pub split: Option<Split>,
    /// PTCGA200 organ folder.
    pub organ: Option<String>,
    /// PCam200 annotation: ASAP XML or QuPath GeoJSON.
    pub annotation: Option<PathBuf>,
    /// A region of interest (QuPath GeoJSON): only the tissue inside it is tiled or embedded.
    pub roi: Option<PathBuf>,
    /// segPANDA200 label-mask slide.
    pub mask: Option<PathBuf>,
    /// segPANDA200 data provider.
    pub provider: Option<String>,
    /// segPANDA200 ISUP grade.
    pub grade: Option<String>,
    /// segPANDA200 Gleason score.
    pub gleason_score: Option<String>,
    /// Level-0 µm/px for a slide whose file states none (or a wrong one): the `mpp` column.
    pub mpp: Option<f64>,
}

/// Reads a slide list. Structural problems (no `slide` column, a duplicated id) are errors;
/// problems of one slide (a missing file, an unknown organ) are left to that slide's build.
pub fn read_slides_csv(path: &Path) -> Result<Vec<SlideRow>> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(path).map_err(|e| match e.kind() {
        csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            DatasetError::invalid(path, "no such file")
        }
        _ => DatasetError::invalid(path, e.to_string()),
    })?;
    let headers = reader.headers().map_err(|e| DatasetError::invalid(path, e.to_string()))?.clone();
    let col = |names: &[&str]| names.iter().find_map(|n| headers.iter().position(|h| h.eq_ignore_ascii_case(n)));
    let slide_col = col(&["slide"]).ok_or_else(|| DatasetError::invalid(path, "no `slide` column in the header"))?;
    let cols = [
        col(&["id"]),
        col(&["case"]),
        col(&["split"]),
        col(&["organ"]),
        col(&["annotation"]),
        col(&["mask"]),
        col(&["data_provider", "provider"]),
        col(&["isup_grade", "grade"]),
        col(&["gleason_score"]),
        col(&["roi"]),
        col(&["mpp"]),
    ];
    let resolve = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    let mut rows = Vec::new();
    let mut ids = std::collections::HashMap::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| DatasetError::invalid(path, format!("line {line}: {e}")))?;
        let get = |c: Option<usize>| c.and_then(|c| rec.get(c)).map(str::to_string).filter(|s| !s.is_empty());
        let slide_str = rec.get(slide_col).unwrap_or_default();
        if slide_str.is_empty() {
            return Err(DatasetError::invalid(path, format!("line {line}: empty `slide`")));
        }
        let slide = resolve(slide_str);
        let id = get(cols[0]).unwrap_or_else(|| slide.file_stem().unwrap_or_default().to_string_lossy().into_owned());
        if let Some(prev) = ids.insert(id.clone(), line) {
            return Err(DatasetError::invalid(
                path,
                format!("line {line}: slide id {id:?} already used on line {prev}; give an `id` column"),
            ));
        }
        if id.contains(['/', '\\']) || id.starts_with('.') {
            return Err(DatasetError::invalid(path, format!("line {line}: slide id {id:?} cannot be a file name")));
        }
        let split = get(cols[2])
            .map(|s| s.parse::<Split>())
            .transpose()
            .map_err(|e| DatasetError::invalid(path, format!("line {line}: {e}")))?;
        let mpp = match get(cols[10]) {
            None => None,
            Some(v) => Some(v.parse::<f64>().ok().filter(|m| m.is_finite() && *m > 0.0).ok_or_else(|| {
                DatasetError::invalid(path, format!("line {line}: mpp {v:?} is not a positive number of µm/px"))
            })?),
        };
        rows.push(SlideRow {
            line,
            case: get(cols[1]).unwrap_or_else(|| id.clone()),
            id,
            slide,
            split,
            organ: get(cols[3]),
            annotation: get(cols[4]).map(|p| resolve(&p)),
            mask: get(cols[5]).map(|p| resolve(&p)),
            provider: get(cols[6]),
            grade: get(cols[7]),
            gleason_score: get(cols[8]),
            roi: get(cols[9]).map(|p| resolve(&p)),
            mpp,
        });
    }
    if rows.is_empty() {
        return Err(DatasetError::invalid(path, "lists no slides"));
    }
    Ok(rows)
}
