//! The quality control of the datasets the runs trained on: each build's `qc.csv` (tissue and
//! pen-ink areas, patches kept and dropped by reason, per slide) with its totals, and the slides'
//! thumbnail maps (tissue, ink, patches) from `thumbnail_position_map/`.

use std::path::{Path, PathBuf};

use crate::ReportError;

/// The QC table a build writes beside its patches.
const QC_FILE: &str = "qc.csv";
/// The folder of slide thumbnail maps a build writes.
const MAPS: &str = "thumbnail_position_map";
/// Maps embedded per dataset at most (a cohort's hundreds would make the page unwieldy).
pub const MAPS_SHOWN: usize = 12;

/// One dataset's QC: its `qc.csv` as read, a totals row, and its first maps.
#[derive(Debug, Clone)]
pub struct DatasetQc {
    pub dir: PathBuf,
    /// The dataset folder's name.
    pub name: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// The column sums (`total` under `slide`), the areas to two decimals.
    pub totals: Vec<String>,
    /// Up to [`MAPS_SHOWN`] slide maps, sorted.
    pub maps: Vec<PathBuf>,
    /// How many maps the folder holds.
    pub map_count: usize,
}

impl DatasetQc {
    /// The QC of the dataset at `dir`, or `None` when it has no `qc.csv` (not built by
    /// patchtcga, or built before QC was recorded).
    pub fn read(dir: &Path) -> Result<Option<Self>, ReportError> {
        let path = dir.join(QC_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let bad = |cause: String| ReportError::Run { path: path.clone(), cause };
        let mut reader = csv::Reader::from_path(&path).map_err(|e| bad(e.to_string()))?;
        let header: Vec<String> = reader.headers().map_err(|e| bad(e.to_string()))?.iter().map(str::to_owned).collect();
        let rows = reader
            .records()
            .map(|r| r.map(|r| r.iter().map(str::to_owned).collect::<Vec<_>>()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let totals = totals(&header, &rows);
        let mut maps: Vec<PathBuf> = std::fs::read_dir(dir.join(MAPS))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "png"))
                    .collect()
            })
            .unwrap_or_default();
        maps.sort();
        let map_count = maps.len();
        maps.truncate(MAPS_SHOWN);
        let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(Some(Self { dir: dir.to_path_buf(), name, header, rows, totals, maps, map_count }))
    }
}

/// Column sums: `total` in the slide column, areas (`…_mm2`) to two decimals, counts whole;
/// empty where a column does not hold numbers.
fn totals(header: &[String], rows: &[Vec<String>]) -> Vec<String> {
    header
        .iter()
        .enumerate()
        .map(|(c, name)| {
            if name == "slide" {
                return "total".to_owned();
            }
            let values: Option<Vec<f64>> = rows.iter().map(|r| r.get(c)?.parse::<f64>().ok()).collect();
            match values {
                Some(v) if name.ends_with("_mm2") => format!("{:.2}", v.iter().sum::<f64>()),
                Some(v) => format!("{}", v.iter().sum::<f64>()),
                None => String::new(),
            }
        })
        .collect()
}

/// The QC of each distinct dataset the `dirs` name that has one, in the order given.
pub fn datasets(dirs: impl IntoIterator<Item = PathBuf>) -> Result<Vec<DatasetQc>, ReportError> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for dir in dirs {
        let key = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.extend(DatasetQc::read(&dir)?);
    }
    Ok(out)
}
