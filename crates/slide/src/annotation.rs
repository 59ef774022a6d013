//! Tumour and exclusion polygons from Camelyon / ASAP XML or QuPath GeoJSON, and how much of a region they cover.

use std::path::{Path, PathBuf};

use geo::{BoundingRect, Contains, Coord, Intersects, LineString, Polygon, Rect};
use quick_xml::{events::Event, Reader};

use crate::qupath::{looks_like_json, read_polygons};
use crate::{Result, SlideError};

/// Which `PartOfGroup` names of an ASAP/Camelyon XML file, or classification names of a QuPath
/// GeoJSON file, mark tumour and which mark exclusions (non-tumour areas cut out of tumour
/// regions). Names compare case-insensitively; a QuPath object without a class is `Unclassified`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct AnnotationGroups {
    /// Annotation groups (QuPath: classes) that mark tumour, comma-separated (Camelyon16:
    /// `Tumor`, `_0`, `_1`; Camelyon17: `metastases`).
    #[arg(long = "tumor-groups", value_delimiter = ',', default_value = "Tumor,_0,_1,metastases")]
    pub tumor: Vec<String>,
    /// Annotation groups (QuPath: classes) cut out of tumour, comma-separated (Camelyon16: `_2`;
    /// also `Exclusion`, QuPath's `Ignore*`).
    #[arg(long = "exclusion-groups", value_delimiter = ',', default_value = "_2,Exclusion,Ignore*")]
    pub exclusion: Vec<String>,
}

impl AnnotationGroups {
    /// Whether `group` marks tumour (true) or an exclusion (false); `None` when neither list
    /// names it.
    fn side(&self, group: &str) -> Option<bool> {
        let matches = |n: &String| n.eq_ignore_ascii_case(group);
        if self.tumor.iter().any(matches) {
            Some(true)
        } else if self.exclusion.iter().any(matches) {
            Some(false)
        } else {
            None
        }
    }
}

impl Default for AnnotationGroups {
    fn default() -> Self {
        crate::flag_defaults()
    }
}

/// Where a slide's annotations must lie: its level-0 size, and where QuPath's coordinates start
/// (`openslide.bounds-x/y`: QuPath shows an OpenSlide slide cropped to its bounds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnnotationFrame {
    /// Level-0 width and height.
    pub dims: (u32, u32),
    /// Level-0 position of QuPath's (0, 0).
    pub qupath_offset: (f64, f64),
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

    /// Reads an annotation file, ASAP/Camelyon XML or QuPath GeoJSON (told apart by content), for
    /// a slide of `frame`. A group or class named in neither list of `groups` is an error, so a
    /// renamed group never silently turns tumour into normal tissue; so is a file that yields no
    /// region at all (an empty `annotation` cell is how a normal slide is given) and a vertex
    /// outside the slide.
    pub fn load(path: impl AsRef<Path>, groups: &AnnotationGroups, frame: &AnnotationFrame) -> Result<Self> {
        let path = path.as_ref();
        let err = |cause: String| SlideError::Annotation { path: path.to_path_buf(), cause };
        let text = read_text(path)?;
        let out = if looks_like_json(&text) {
            Self::from_geojson(&text, groups, frame.qupath_offset).map_err(err)?
        } else if text.trim_start_matches('\u{feff}').trim_start().starts_with('<') {
            Self::from_xml(&text, groups).map_err(err)?
        } else {
            return Err(err("neither ASAP/Camelyon XML nor QuPath GeoJSON".into()));
        };
        if out.tumor.is_empty() && out.exclusion.is_empty() {
            return Err(err(
                "no region in the file (no polygon); leave the slide list's annotation cell empty for a slide without tumour"
                    .into(),
            ));
        }
        out.check_inside(frame.dims).map_err(err)?;
        Ok(out)
    }

    /// Polygons of a QuPath GeoJSON export, by class, moved from QuPath's coordinates to level 0.
    fn from_geojson(text: &str, groups: &AnnotationGroups, (dx, dy): (f64, f64)) -> std::result::Result<Self, String> {
        use geo::MapCoords;
        let mut out = Self::default();
        for p in read_polygons(text)? {
            let tumor = groups.side(&p.class).ok_or_else(|| {
                format!(
                    "{} has class {:?}, which is neither a tumour class {:?} nor an exclusion class {:?} \
                     (see --tumor-groups / --exclusion-groups)",
                    p.name, p.class, groups.tumor, groups.exclusion
                )
            })?;
            out.push(tumor, p.polygon.map_coords(|c| Coord { x: c.x + dx, y: c.y + dy }));
        }
        Ok(out)
    }

    /// Polygons of an ASAP/Camelyon XML file, by `PartOfGroup`.
    fn from_xml(text: &str, groups: &AnnotationGroups) -> std::result::Result<Self, String> {
        let mut reader = Reader::from_str(text);
        let mut out = Self::default();
        let mut current: Option<(bool, String, Vec<Coord<f64>>)> = None;
        loop {
            let event =
                reader.read_event().map_err(|e| format!("XML error at byte {}: {e}", reader.error_position()))?;
            match event {
                Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                    b"Annotation" => {
                        let group = attr(&e, b"PartOfGroup")?.unwrap_or_default();
                        let name = attr(&e, b"Name")?.unwrap_or_default();
                        let Some(tumor) = groups.side(&group) else {
                            return Err(format!(
                                "annotation {name:?} is in group {group:?}, which is neither a tumour group {:?} \
                                 nor an exclusion group {:?} (see --tumor-groups / --exclusion-groups)",
                                groups.tumor, groups.exclusion
                            ));
                        };
                        current = Some((tumor, name, Vec::new()));
                    }
                    b"Coordinate" => {
                        let (_, name, coords) =
                            current.as_mut().ok_or_else(|| "a Coordinate outside any Annotation".to_string())?;
                        let num = |k: &[u8]| -> std::result::Result<f64, String> {
                            let v = attr(&e, k)?.ok_or_else(|| {
                                format!("a Coordinate of {name:?} has no {}", String::from_utf8_lossy(k))
                            })?;
                            v.trim()
                                .replace(',', ".")
                                .parse::<f64>()
                                .map_err(|_| format!("coordinate {v:?} of {name:?} is not a number"))
                        };
                        let c = Coord { x: num(b"X")?, y: num(b"Y")? };
                        coords.push(c);
                    }
                    _ => {}
                },
                Event::End(e) if e.name().as_ref() == b"Annotation" => {
                    if let Some((tumor, name, coords)) = current.take() {
                        if coords.len() < 3 {
                            return Err(format!("annotation {name:?} has {} points; a polygon needs 3", coords.len()));
                        }
                        out.push(tumor, Polygon::new(LineString::from(coords), vec![]));
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(out)
    }

    fn push(&mut self, tumor: bool, polygon: Polygon<f64>) {
        let rect = polygon.bounding_rect().expect("a polygon with points has a bounding box");
        if tumor {
            self.tumor.push((polygon, rect))
        } else {
            self.exclusion.push((polygon, rect))
        }
    }

    /// Refuses polygons reaching more than a pixel outside a slide of level-0 size `dims`.
    fn check_inside(&self, (w, h): (u32, u32)) -> std::result::Result<(), String> {
        let outside = |r: &Rect<f64>| {
            r.min().x < -1.0 || r.min().y < -1.0 || r.max().x > w as f64 + 1.0 || r.max().y > h as f64 + 1.0
        };
        match self.tumor.iter().chain(&self.exclusion).find(|(_, r)| outside(r)) {
            Some((_, r)) => Err(format!(
                "a polygon spans ({:.0}, {:.0})–({:.0}, {:.0}), outside the {w} × {h} px slide: is this the slide's \
                 annotation, in level-0 pixels?",
                r.min().x,
                r.min().y,
                r.max().x,
                r.max().y
            )),
            None => Ok(()),
        }
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

/// A region of interest: the polygons of a QuPath GeoJSON file (every annotation, whatever its
/// class), in level-0 pixels; tissue outside it is left out.
#[derive(Debug, Clone)]
pub struct Roi {
    polygons: Vec<(Polygon<f64>, Rect<f64>)>,
}

impl Roi {
    /// Reads the region from `path` for a slide of `frame`: a QuPath GeoJSON export, refused in
    /// words when it is not one, holds no polygon, or reaches off the slide.
    pub fn load(path: impl AsRef<Path>, frame: &AnnotationFrame) -> Result<Self> {
        use geo::MapCoords;
        let path = path.as_ref();
        let err = |cause: String| SlideError::Annotation { path: path.to_path_buf(), cause };
        let text = read_text(path)?;
        if !looks_like_json(&text) {
            return Err(err(
                "a region of interest is read from QuPath GeoJSON (File ▸ Export objects as GeoJSON)".into()
            ));
        }
        let (dx, dy) = frame.qupath_offset;
        let mut regions = Annotations::default();
        for p in read_polygons(&text).map_err(err)? {
            regions.push(true, p.polygon.map_coords(|c| Coord { x: c.x + dx, y: c.y + dy }));
        }
        if regions.tumor.is_empty() {
            return Err(err("no region in the file (no polygon annotation)".into()));
        }
        regions.check_inside(frame.dims).map_err(err)?;
        Ok(Self { polygons: regions.tumor })
    }

    /// Whether level-0 point (`x`, `y`) lies in the region.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        let p = Coord { x, y };
        self.polygons.iter().any(|(poly, rect)| rect.intersects(&p) && poly.contains(&p))
    }
}

/// An annotation or region file's text; a missing file is [`SlideError::Missing`].
fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SlideError::Missing { path: PathBuf::from(path) },
        _ => SlideError::Annotation { path: path.to_path_buf(), cause: e.to_string() },
    })
}
