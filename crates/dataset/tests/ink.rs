//! Pen ink kept out of built datasets: the sample slide marked as pathologists mark glass
//! (testkit's pen marks), built with ink removal on and off, judged by the strokes' own mask.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::*;
use image::RgbImage;
use patchtcga_dataset::{read_manifest, ImageFormat, Task};
use patchtcga_slide::{PatchGeometry, Slide, SlideOptions};

/// The sample slide at level 0, and the same marked with pen ink (and where the ink is).
fn marked_sample() -> (RgbImage, RgbImage, Vec<bool>) {
    let s = Slide::open(sample_slide(), &SlideOptions::default()).unwrap();
    let (w, h) = s.dimensions();
    let clean = s.read_rgb(0, 0, 0, w, h).unwrap();
    let (marked, ink) = patchtcga_testkit::mark_with_pen(&clean);
    (clean, marked, ink)
}

/// Fraction of ink in the level-0 square at (`x`, `y`) of side `side`.
fn ink_fraction(ink: &[bool], w: u32, (x, y): (u32, u32), side: u32) -> f64 {
    let mut n = 0;
    for yy in y..y + side {
        for xx in x..x + side {
            n += ink[(yy * w + xx) as usize] as usize;
        }
    }
    n as f64 / (side * side) as f64
}

fn build(dir: &Path, name: &str, slide: &RgbImage, keep_ink: bool) -> Vec<(u32, u32)> {
    let path = dir.join(format!("{name}.tiff"));
    write_tiled_tiff(&path, slide, Some(0.499)).unwrap();
    let csv = write_csv(dir, &format!("{name}.csv"), &format!("slide,organ\n{},skin\n", path.display()));
    let out = dir.join(format!("out_{name}"));
    let mut opts = options(&out);
    opts.geometry = PatchGeometry { mpp: 0.499, size: 128 };
    opts.format = ImageFormat::Png;
    opts.tissue.keep_ink = keep_ink;
    let r = run(&Task::Ptcga200, &csv, &opts);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    read_manifest(&out.join("manifest.csv")).unwrap().iter().map(|m| (m.x, m.y)).collect()
}

#[test]
fn marked_slides_give_ink_free_patches_and_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, marked, ink) = marked_sample();
    let w = clean.width();
    let inky = |patches: &[(u32, u32)]| patches.iter().filter(|&&p| ink_fraction(&ink, w, p, 128) > 0.10).count();

    // Without removal, the mask takes ink for tissue: many patches are mostly ink.
    let kept_ink = build(dir.path(), "marked_keep", &marked, true);
    let bad_before = inky(&kept_ink);
    assert!(bad_before * 10 >= kept_ink.len(), "{bad_before} of {} inked without removal", kept_ink.len());

    let unmarked = build(dir.path(), "clean", &clean, false);
    let removed = build(dir.path(), "marked", &marked, false);
    let bad = inky(&removed);
    assert!(bad as f64 <= 0.02 * removed.len() as f64, "{bad} of {} patches hold > 10% ink", removed.len());
    let away: Vec<_> = unmarked.iter().filter(|&&p| ink_fraction(&ink, w, p, 128) == 0.0).collect();
    let written: HashSet<_> = removed.iter().collect();
    let still = away.iter().filter(|p| written.contains(**p)).count();
    assert!(away.len() >= 50, "{} clean patches away from the ink", away.len());
    assert!(
        still as f64 >= 0.9 * away.len() as f64,
        "{still} of {} patches away from the ink still written",
        away.len()
    );
    eprintln!(
        "ink kept: {bad_before}/{} patches > 10% ink; removed: {bad}/{}; clean patches away from ink kept: {still}/{}",
        kept_ink.len(),
        removed.len(),
        away.len()
    );

    // The QC pictures of docs/datasets.md: PATCHTCGA_QC_PICTURES=docs/images cargo test -p patchtcga-dataset --test ink
    if let Some(to) = std::env::var_os("PATCHTCGA_QC_PICTURES") {
        for (build, name) in [("marked", "qc_marked.png"), ("marked_keep", "qc_marked_keep_ink.png")] {
            let map = dir.path().join(format!("out_{build}/thumbnail_position_map/{build}.png"));
            std::fs::copy(map, Path::new(&to).join(name)).unwrap();
        }
    }

    // qc.csv counts what the ink cost; the patch grid opens in QuPath.
    let qc = std::fs::read_to_string(dir.path().join("out_marked/qc.csv")).unwrap();
    let mut lines = qc.lines();
    assert_eq!(
        lines.next().unwrap(),
        "slide,tissue_mm2,ink_mm2,candidates,dropped_ink,dropped_border,dropped_quality,kept,stain_unchanged"
    );
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert!(row[2].parse::<f64>().unwrap() > 0.1, "ink area {}", row[2]);
    assert!(row[4].parse::<usize>().unwrap() > 0, "dropped for ink: {}", row[4]);
    assert_eq!(row[7].parse::<usize>().unwrap(), removed.len());
    let grid = std::fs::read_to_string(dir.path().join("out_marked/thumbnail_position_map/marked.geojson")).unwrap();
    let grid: serde_json::Value = serde_json::from_str(&grid).unwrap();
    let features = grid["features"].as_array().unwrap();
    assert_eq!(features.len(), removed.len());
    assert_eq!(features[0]["properties"]["objectType"], "detection");
    assert_eq!(features[0]["properties"]["classification"]["name"], "skin");
}
