//! Camelyon / ASAP XML annotations: tumour and exclusion polygons, and how much of a region they cover.

use std::path::{Path, PathBuf};

use geo::{BoundingRect, Contains, Coord, Intersects, LineString, Polygon, Rect};
use quick_xml::{events::Event, Reader};

use crate::{Result, SlideError};

/// Which `PartOfGroup` names of an ASAP/Camelyon XML file mark tumour and which mark exclusions
/// (non-tumour areas cut out of tumour regions). Names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct AnnotationGroups {
    /// Annotation groups that mark tumour, comma-separated (Camelyon16: `Tumor`, `_0`, `_1`;
    /// Camelyon17: `metastases`).
    #[arg(long = "tumor-groups", value_delimiter = ',', default_value = "Tumor,_0,_1,metastases")]
    pub tumor: Vec<String>,
    /// Annotation groups cut out of tumour, comma-separated (Camelyon16: `_2`; also `Exclusion`).
    #[arg(long = "exclusion-groups", value_delimiter = ',', default_value = "_2,Exclusion")]
    pub exclusion: Vec<String>,
}

impl Default for AnnotationGroups {
    fn default() -> Self {
        crate::flag_defaults()
    }
}

/// Tumour polygons of one slide in level-0 pixel coordinates, minus exclusion polygons.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    tumor: Vec<(Polygon<f64>, Rect<f64>)>,
    exclusion: Vec<(Polygon<f64>, Rect<f64>)>,
}

impl Annotations {
    /// No tumour anywhere (a normal slide).
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads an ASAP/Camelyon XML annotation file. Groups named in neither list of `groups`
    /// are an error, so a renamed group never silently turns tumour into normal tissue.
    pub fn load(path: impl AsRef<Path>, groups: &AnnotationGroups) -> Result<Self> {
        let path = path.as_ref();
        let err = |cause: String| SlideError::Annotation { path: path.to_path_buf(), cause };
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SlideError::Missing { path: PathBuf::from(path) },
            _ => err(e.to_string()),
        })?;
        let mut reader = Reader::from_str(&text);
        let mut out = Self::default();
        let mut current: Option<(bool, String, Vec<Coord<f64>>)> = None;
        let is = |list: &[String], g: &str| list.iter().any(|n| n.eq_ignore_ascii_case(g));
        loop {
            let event =
                reader.read_event().map_err(|e| err(format!("XML error at byte {}: {e}", reader.error_position())))?;
            match event {
                Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                    b"Annotation" => {
                        let group = attr(&e, b"PartOfGroup").map_err(&err)?.unwrap_or_default();
                        let name = attr(&e, b"Name").map_err(&err)?.unwrap_or_default();
                        let tumor = if is(&groups.tumor, &group) {
                            true
                        } else if is(&groups.exclusion, &group) {
                            false
                        } else {
                            return Err(err(format!(
                                "annotation {name:?} is in group {group:?}, which is neither a tumour group {:?} \
                                 nor an exclusion group {:?} (see --tumor-groups / --exclusion-groups)",
                                groups.tumor, groups.exclusion
                            )));
                        };
                        current = Some((tumor, name, Vec::new()));
                    }
                    b"Coordinate" => {
                        let (_, name, coords) =
                            current.as_mut().ok_or_else(|| err("a Coordinate outside any Annotation".into()))?;
                        let num = |k: &[u8]| -> std::result::Result<f64, String> {
                            let v = attr(&e, k)?.ok_or_else(|| {
                                format!("a Coordinate of {name:?} has no {}", String::from_utf8_lossy(k))
                            })?;
                            v.trim()
                                .replace(',', ".")
                                .parse::<f64>()
                                .map_err(|_| format!("coordinate {v:?} of {name:?} is not a number"))
                        };
                        let c = Coord { x: num(b"X").map_err(&err)?, y: num(b"Y").map_err(&err)? };
                        coords.push(c);
                    }
                    _ => {}
                },
                Event::End(e) if e.name().as_ref() == b"Annotation" => {
                    if let Some((tumor, name, coords)) = current.take() {
                        if coords.len() < 3 {
                            return Err(err(format!(
                                "annotation {name:?} has {} points; a polygon needs 3",
                                coords.len()
                            )));
                        }
                        let poly = Polygon::new(LineString::from(coords), vec![]);
                        let rect = poly.bounding_rect().expect("a polygon with points has a bounding box");
                        if tumor {
                            out.tumor.push((poly, rect))
                        } else {
                            out.exclusion.push((poly, rect))
                        }
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(out)
    }

    /// Number of tumour polygons.
    pub fn tumor_polygons(&self) -> usize {
        self.tumor.len()
    }

    /// Whether level-0 point (`x`, `y`) is tumour: inside a tumour polygon and no exclusion.
    pub fn is_tumor(&self, x: f64, y: f64) -> bool {
        let p = Coord { x, y };
        let inside = |list: &[(Polygon<f64>, Rect<f64>)]| {
            list.iter().any(|(poly, rect)| rect.intersects(&p) && poly.contains(&p))
        };
        inside(&self.tumor) && !inside(&self.exclusion)
    }

    /// Fraction of an `n`×`n` lattice of points over the level-0 rectangle that is tumour.
    pub fn tumor_fraction(&self, x: f64, y: f64, w: f64, h: f64, n: u32) -> f64 {
        let n = n.max(1);
        let step = |i: u32, len: f64| (i as f64 + 0.5) / n as f64 * len;
        let hits = (0..n)
            .flat_map(|j| (0..n).map(move |i| (i, j)))
            .filter(|&(i, j)| self.is_tumor(x + step(i, w), y + step(j, h)))
            .count();
        hits as f64 / (n * n) as f64
    }

    /// Whether any tumour polygon touches the level-0 rectangle (normal patches must not).
    pub fn touches_tumor(&self, x: f64, y: f64, w: f64, h: f64) -> bool {
        let r = Rect::new(Coord { x, y }, Coord { x: x + w, y: y + h });
        self.tumor.iter().any(|(poly, rect)| rect.intersects(&r) && poly.intersects(&r))
    }
}

fn attr(e: &quick_xml::events::BytesStart, key: &[u8]) -> std::result::Result<Option<String>, String> {
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        if a.key.as_ref() == key {
            return Ok(Some(a.unescape_value().map_err(|e| e.to_string())?.into_owned()));
        }
    }
    Ok(None)
}
