//! QuPath's GeoJSON: classified polygons read from its exports, and masks and patch grids written
//! as annotations and detections it opens (coordinates in level-0 pixels, as QuPath's).

use contour::ContourBuilder;
use geo::{Coord, MultiPolygon, Polygon, Validation};
use geojson::{Feature, FeatureCollection, GeoJson, JsonObject, JsonValue};
use image::GrayImage;

/// A polygon read from a GeoJSON file, with the class QuPath gave it.
#[derive(Debug, Clone)]
pub struct ClassifiedPolygon {
    /// `classification.name`, or [`UNCLASSIFIED`] when the feature has none.
    pub class: String,
    /// The feature's name, or its position in the file.
    pub name: String,
    /// Level-0 pixel coordinates, holes included.
    pub polygon: Polygon<f64>,
}

/// The class a feature without `classification` is read under (QuPath's own word for it).
pub const UNCLASSIFIED: &str = "Unclassified";

/// QuPath object kinds that are not regions someone drew: skipped when reading annotations.
const NOT_ANNOTATIONS: [&str; 3] = ["detection", "cell", "tile"];

/// Whether `text` looks like JSON (its first non-blank character opens an object or an array).
pub fn looks_like_json(text: &str) -> bool {
    matches!(text.trim_start_matches('\u{feff}').trim_start().chars().next(), Some('{' | '['))
}

/// Reads the annotations of a QuPath GeoJSON export: a FeatureCollection, one Feature, or a bare
/// array of features (as QuPath writes "export as a list"). Polygon and MultiPolygon geometries
/// are read, holes included; detections and cells are skipped; any other geometry, a polygon
/// that is not valid (self-intersecting, too few points), or a file that is not JSON is an error
/// (a message without the file's name, which the caller adds).
pub fn read_polygons(text: &str) -> Result<Vec<ClassifiedPolygon>, String> {
    let text = text.trim_start_matches('\u{feff}');
    let value: JsonValue = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let features: Vec<Feature> = match value {
        JsonValue::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| Feature::from_json_value(v).map_err(|e| format!("item {i} is not a GeoJSON Feature: {e}")))
            .collect::<Result<_, _>>()?,
        other => match GeoJson::from_json_value(other).map_err(|e| format!("not GeoJSON: {e}"))? {
            GeoJson::FeatureCollection(c) => c.features,
            GeoJson::Feature(f) => vec![f],
            GeoJson::Geometry(g) => vec![Feature { geometry: Some(g), ..Feature::default() }],
        },
    };
    let mut out = Vec::new();
    for (i, f) in features.iter().enumerate() {
        if object_type(f).is_some_and(|t| NOT_ANNOTATIONS.contains(&t)) {
            continue;
        }
        let name =
            f.property("name").and_then(JsonValue::as_str).map_or_else(|| format!("feature {i}"), str::to_string);
        let class = classification(f).unwrap_or(UNCLASSIFIED).to_string();
        let geometry = f.geometry.as_ref().ok_or_else(|| format!("{name} has no geometry"))?;
        let polygons: Vec<Polygon<f64>> = match &geometry.value {
            geojson::Value::Polygon(_) => vec![Polygon::try_from(&geometry.value).map_err(|e| format!("{name}: {e}"))?],
            geojson::Value::MultiPolygon(_) => {
                MultiPolygon::try_from(&geometry.value).map_err(|e| format!("{name}: {e}"))?.0
            }
            other => {
                return Err(format!(
                    "{name} is a {}; only Polygon and MultiPolygon regions are read",
                    other.type_name()
                ))
            }
        };
        for polygon in polygons {
            check_polygon(&polygon).map_err(|e| format!("{name} ({class}): {e}"))?;
            out.push(ClassifiedPolygon { class: class.clone(), name: name.clone(), polygon });
        }
    }
    Ok(out)
}

fn object_type(f: &Feature) -> Option<&str> {
    f.property("objectType").and_then(JsonValue::as_str)
}

/// `classification.name` (QuPath ≥ 0.2), or a plain string `classification`.
fn classification(f: &Feature) -> Option<&str> {
    match f.property("classification")? {
        JsonValue::String(s) => Some(s),
        JsonValue::Object(o) => o.get("name").and_then(JsonValue::as_str),
        _ => None,
    }
}

/// Refuses rings of fewer than three distinct points and self-intersecting or otherwise invalid
/// polygons (OGC's rules, as shapely's `is_valid`): the point-in-polygon test has no meaning on them.
fn check_polygon(p: &Polygon<f64>) -> Result<(), String> {
    if p.exterior().0.len() < 4 {
        return Err(format!("a polygon needs 3 points, this one has {}", p.exterior().0.len().saturating_sub(1)));
    }
    p.check_validation().map_err(|e| {
        format!("not a valid polygon ({e}); repair it in QuPath (Objects ▸ Annotations ▸ Simplify / Fix) or redraw it")
    })
}

/// A QuPath object to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// A region (tissue, ink, a region of interest): editable in QuPath.
    Annotation,
    /// A measured object (a patch, a tile of a map): shown and coloured by measurement.
    Detection,
}

/// One object of a GeoJSON file for QuPath: its geometry in level-0 pixels, class and measurements.
#[derive(Debug, Clone)]
pub struct QuPathObject {
    /// Annotation or detection.
    pub kind: ObjectType,
    /// The geometry, in level-0 pixels.
    pub geometry: MultiPolygon<f64>,
    /// Class name and colour.
    pub class: Option<(String, [u8; 3])>,
    /// Measurements shown in QuPath's tables and colour maps.
    pub measurements: Vec<(String, f64)>,
}

impl QuPathObject {
    /// The GeoJSON feature QuPath reads back as this object.
    fn to_feature(&self, offset: (f64, f64)) -> Feature {
        let shifted =
            MultiPolygon::new(self.geometry.0.iter().map(|p| shift(p, (-offset.0, -offset.1))).collect::<Vec<_>>());
        let value =
            if shifted.0.len() == 1 { geojson::Value::from(&shifted.0[0]) } else { geojson::Value::from(&shifted) };
        let mut properties = JsonObject::new();
        let kind = match self.kind {
            ObjectType::Annotation => "annotation",
            ObjectType::Detection => "detection",
        };
        properties.insert("objectType".into(), kind.into());
        if let Some((name, colour)) = &self.class {
            properties.insert("classification".into(), serde_json::json!({ "name": name, "color": colour }));
        }
        if !self.measurements.is_empty() {
            let m: JsonObject = self.measurements.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
            properties.insert("measurements".into(), m.into());
        }
        Feature { geometry: Some(geojson::Geometry::new(value)), properties: Some(properties), ..Feature::default() }
    }
}

/// A FeatureCollection of `objects` as QuPath imports it (File ▸ Import objects, or drag and
/// drop), for a slide whose QuPath coordinates start at level-0 `offset` (`openslide.bounds-x/y`).
pub fn feature_collection(objects: &[QuPathObject], offset: (f64, f64)) -> String {
    let collection = FeatureCollection {
        bbox: None,
        features: objects.iter().map(|o| o.to_feature(offset)).collect(),
        foreign_members: None,
    };
    GeoJson::from(collection).to_string()
}

fn shift(p: &Polygon<f64>, (dx, dy): (f64, f64)) -> Polygon<f64> {
    use geo::MapCoords;
    p.map_coords(|c| Coord { x: c.x + dx, y: c.y + dy })
}

/// The outline of a 0/255 mask as polygons with holes, in level-0 pixels for a mask of
/// `downsample` level-0 pixels per pixel: traced by marching squares midway between set and clear
/// pixel centres, so every set pixel's centre is inside and every clear one's outside (the mask
/// rasterised back from the polygons is the mask). One polygon per connected piece.
pub fn mask_polygons(mask: &GrayImage, downsample: f64) -> MultiPolygon<f64> {
    let (w, h) = mask.dimensions();
    // A clear border keeps pieces touching the edge closed. The builder puts value i at
    // origin + (i + 0.5) · step: the border's column at -0.5 pixel, pixel x's centre at x + 0.5.
    let (pw, ph) = (w as usize + 2, h as usize + 2);
    let mut values = vec![0.0f64; pw * ph];
    for (x, y, p) in mask.enumerate_pixels() {
        if p.0[0] != 0 {
            values[(y as usize + 1) * pw + x as usize + 1] = 1.0;
        }
    }
    let builder = ContourBuilder::new(pw, ph, false)
        .x_step(downsample)
        .y_step(downsample)
        .x_origin(-downsample)
        .y_origin(-downsample);
    builder
        .contours(&values, &[0.5])
        .expect("the values fill the grid")
        .into_iter()
        .next()
        .map(|c| c.into_inner().0)
        .unwrap_or_else(|| MultiPolygon::new(vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{Area, Contains};

    #[test]
    fn qupath_exports_are_read_with_holes_and_classes() {
        let text = r#"{"type":"FeatureCollection","features":[
          {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[100,0],[100,100],[0,100],[0,0]],[[40,40],[60,40],[60,60],[40,60],[40,40]]]},
           "properties":{"objectType":"annotation","classification":{"name":"Tumor","color":[200,0,0]}}},
          {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[5,5],[6,5],[6,6],[5,5]]]},
           "properties":{"objectType":"detection","classification":{"name":"Tumor"}}},
          {"type":"Feature","geometry":{"type":"MultiPolygon","coordinates":[[[[200,0],[210,0],[210,10],[200,0]]],[[[300,0],[310,0],[310,10],[300,0]]]]},
           "properties":{"objectType":"annotation","name":"two"}}]}"#;
        let p = read_polygons(text).unwrap();
        assert_eq!(p.len(), 3, "the detection is skipped, the MultiPolygon gives two");
        assert_eq!((p[0].class.as_str(), p[1].class.as_str(), p[1].name.as_str()), ("Tumor", UNCLASSIFIED, "two"));
        assert_eq!(p[0].polygon.unsigned_area(), 100.0 * 100.0 - 20.0 * 20.0);
        assert!(
            !p[0].polygon.contains(&Coord { x: 50.0, y: 50.0 }) && p[0].polygon.contains(&Coord { x: 20.0, y: 20.0 })
        );
        // A bare array, as QuPath's "export as list".
        let array = r#"[{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]},"properties":{}}]"#;
        assert_eq!(read_polygons(array).unwrap().len(), 1);
    }

    #[test]
    fn what_is_not_a_region_is_refused_in_words() {
        let err = |t: &str| read_polygons(t).unwrap_err();
        assert!(err("{\"type\": ").contains("not valid JSON"));
        let line = r#"{"type":"Feature","geometry":{"type":"LineString","coordinates":[[0,0],[1,1]]},"properties":{"name":"cut"}}"#;
        assert_eq!(err(line), "cut is a LineString; only Polygon and MultiPolygon regions are read");
        let bowtie = r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[10,10],[10,0],[0,10],[0,0]]]},"properties":{}}"#;
        assert!(err(bowtie).contains("not a valid polygon"), "{}", err(bowtie));
        assert!(err(r#"{"type":"Feature","geometry":null,"properties":{}}"#).contains("no geometry"));
        assert!(looks_like_json("  \n[{") && looks_like_json("\u{feff}{") && !looks_like_json("<?xml"));
    }

    #[test]
    fn mask_outlines_cover_exactly_the_mask() {
        let mut m = GrayImage::new(30, 20);
        for (x, y, p) in m.enumerate_pixels_mut() {
            let ring = (3..15).contains(&x) && (2..12).contains(&y) && !((6..10).contains(&x) && (5..8).contains(&y));
            if ring || (x >= 25 && y >= 15) {
                p.0[0] = 255;
            }
        }
        let ds = 4.0;
        let polys = mask_polygons(&m, ds);
        assert_eq!(polys.0.len(), 2, "a ring with a hole and a piece at the corner");
        assert!(polys.is_valid());
        for (x, y, p) in m.enumerate_pixels() {
            let centre = Coord { x: (x as f64 + 0.5) * ds, y: (y as f64 + 0.5) * ds };
            assert_eq!(polys.contains(&centre), p.0[0] != 0, "pixel ({x}, {y})");
        }
        // A detection with a measurement, shifted by the slide's bounds, as QuPath reads it.
        let o = QuPathObject {
            kind: ObjectType::Detection,
            geometry: polys.clone(),
            class: Some(("Tissue".into(), [0, 200, 0])),
            measurements: vec![("probability".into(), 0.25)],
        };
        let text = feature_collection(&[o], (10.0, 0.0));
        let v: JsonValue = serde_json::from_str(&text).unwrap();
        let f = &v["features"][0];
        assert_eq!(f["properties"]["measurements"]["probability"], 0.25);
        assert_eq!(f["properties"]["classification"]["name"], "Tissue");
        assert_eq!(f["geometry"]["type"], "MultiPolygon");
        assert!(read_polygons(&text).unwrap().is_empty(), "detections are not read as regions");
        // Written as annotations, read back: the same pieces, moved by the offset.
        let o =
            QuPathObject { kind: ObjectType::Annotation, geometry: polys.clone(), class: None, measurements: vec![] };
        let back = read_polygons(&feature_collection(&[o], (10.0, 0.0))).unwrap();
        assert_eq!(back.len(), 2);
        let area: f64 = back.iter().map(|p| p.polygon.unsigned_area()).sum();
        assert_eq!(area, polys.unsigned_area());
        assert!(back.iter().any(|p| p.polygon.contains(&Coord { x: 3.5 * ds - 10.0, y: 2.5 * ds })));
    }
}
