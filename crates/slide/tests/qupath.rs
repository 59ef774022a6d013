//! `patchtcga tissue`'s GeoJSON on a pen-marked slide, read back by our reader and by shapely.

use std::path::Path;

use geo::{Contains, Coord};
use patchtcga_slide::*;
use patchtcga_testkit::{mark_with_pen, repo_root, sample_slide, write_tiled_tiff};

/// Shapely's reading of a GeoJSON file (validity, area, class per feature), or `None` where
/// shapely is not installed and `PATCHTCGA_REQUIRE_SHAPELY` is unset.
fn shapely(path: &Path) -> Option<Vec<serde_json::Value>> {
    let root = repo_root();
    let out = std::process::Command::new("python3")
        .env("PYTHONPATH", root.join(".pytools"))
        .arg(root.join("tools/check_geojson.py"))
        .arg(path)
        .output()
        .expect("python3 runs");
    if !out.status.success() {
        let missing = String::from_utf8_lossy(&out.stderr).contains("No module named 'shapely'");
        assert!(
            missing && std::env::var_os("PATCHTCGA_REQUIRE_SHAPELY").is_none(),
            "shapely's reading failed (make test installs it into .pytools): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("shapely is not installed: skipping the reference reading");
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn tissue_and_ink_outlines_are_valid_and_cover_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let s = Slide::open(sample_slide(), &SlideOptions::default()).unwrap();
    let (w, h) = s.dimensions();
    let (marked, _) = mark_with_pen(&s.read_rgb(0, 0, 0, w, h).unwrap());
    let slide = dir.path().join("marked.tiff");
    write_tiled_tiff(&slide, &marked, Some(0.499)).unwrap();
    let out = dir.path().join("tissue.geojson");
    let args = TissueArgs {
        slide: slide.clone(),
        out: out.clone(),
        roi: None,
        open: SlideOptions::default(),
        tissue: TissueParams::default(),
    };
    let said = args.run().unwrap().to_string();
    assert!(said.contains("tissue piece") && said.contains("pen-ink region"), "{said}");

    // Rasterised back at the mask's scale, the tissue polygons are the mask the build uses.
    let mask =
        TissueMask::detect(&Slide::open(&slide, &SlideOptions::default()).unwrap(), &TissueParams::default()).unwrap();
    let features: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let read = |class: &str| -> Vec<geo::Polygon<f64>> {
        features["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["properties"]["classification"]["name"] == class)
            .flat_map(|f| {
                let g: geojson::Geometry = serde_json::from_value(f["geometry"].clone()).unwrap();
                geo::MultiPolygon::<f64>::try_from(g.value.clone())
                    .map(|m| m.0)
                    .unwrap_or_else(|_| vec![geo::Polygon::try_from(g.value).unwrap()])
            })
            .collect()
    };
    let tissue = read("Tissue");
    let (mut both, mut either) = (0usize, 0usize);
    let d = mask.downsample();
    for (x, y, p) in mask.mask().enumerate_pixels() {
        let c = Coord { x: (x as f64 + 0.5) * d, y: (y as f64 + 0.5) * d };
        let (m, g) = (p.0[0] != 0, tissue.iter().any(|t| t.contains(&c)));
        both += (m && g) as usize;
        either += (m || g) as usize;
    }
    let iou = both as f64 / either as f64;
    assert!(iou >= 0.98, "IoU {iou:.4} of the tissue polygons and the mask");
    let holes: usize = tissue.iter().map(|p| p.interiors().len()).sum();
    assert!(holes > 0, "the blue ring and black dots leave holes in the tissue");
    for ink in ["Blue ink", "Green ink", "Black ink", "Red ink"] {
        assert!(!read(ink).is_empty(), "no {ink} region written");
    }

    // Shapely reads every feature as valid, with the areas geo computes.
    let Some(reference) = shapely(&out) else { return };
    assert_eq!(reference.len(), features["features"].as_array().unwrap().len());
    assert!(reference.iter().all(|f| f["valid"] == true), "invalid geometry: {reference:?}");
    let tissue_area: f64 =
        reference.iter().filter(|f| f["class"] == "Tissue").map(|f| f["area"].as_f64().unwrap()).sum();
    let ours: f64 = tissue.iter().map(geo::Area::unsigned_area).sum();
    assert!((tissue_area - ours).abs() <= 1e-9 * ours, "shapely {tissue_area} vs geo {ours}");
}

/// `--roi`: only the tissue inside a QuPath region is outlined; a region file that is not GeoJSON
/// or reaches off the slide is refused naming it.
#[test]
fn a_region_of_interest_keeps_only_the_tissue_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let roi = dir.path().join("roi.geojson");
    let square = r#"{"type": "Feature", "properties": {"objectType": "annotation"},
      "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1100, 0], [1100, 1500], [0, 1500], [0, 0]]]}}"#;
    std::fs::write(&roi, square).unwrap();
    let run = |roi: Option<std::path::PathBuf>, out: &str| {
        let out = dir.path().join(out);
        let args = TissueArgs {
            slide: sample_slide(),
            out: out.clone(),
            roi,
            open: SlideOptions::default(),
            tissue: TissueParams::default(),
        };
        args.run().map(|_| serde_json::from_slice::<serde_json::Value>(&std::fs::read(out).unwrap()).unwrap())
    };
    let (whole, inside) = (run(None, "whole.geojson").unwrap(), run(Some(roi.clone()), "inside.geojson").unwrap());
    let corners = |v: &serde_json::Value| -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for f in
            v["features"].as_array().unwrap().iter().filter(|f| f["properties"]["classification"]["name"] == "Tissue")
        {
            let g: geojson::Geometry = serde_json::from_value(f["geometry"].clone()).unwrap();
            let polygons = geo::MultiPolygon::<f64>::try_from(g.value.clone())
                .map(|m| m.0)
                .unwrap_or_else(|_| vec![geo::Polygon::try_from(g.value).unwrap()]);
            out.extend(polygons.iter().flat_map(|p| p.exterior().0.iter().map(|c| (c.x, c.y))));
        }
        out
    };
    let (all, kept) = (corners(&whole), corners(&inside));
    assert!(!kept.is_empty() && all.iter().any(|&(x, y)| x > 1200.0 || y > 1600.0));
    // A mask pixel is 16 level-0 px: outlines stay within a pixel of the region.
    assert!(kept.iter().all(|&(x, y)| x <= 1100.0 + 16.0 && y <= 1500.0 + 16.0), "tissue outside the region");
    std::fs::write(&roi, "<ASAP_Annotations/>").unwrap();
    let e = run(Some(roi.clone()), "xml.geojson").map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("roi.geojson") && e.contains("QuPath GeoJSON"), "{e}");
    std::fs::write(&roi, square.replace("1500]", "9500]")).unwrap();
    let e = run(Some(roi), "far.geojson").map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("outside the 2220 × 2967 px slide"), "{e}");
}
