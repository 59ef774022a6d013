//! Stain normalisation against torchstain's NumPy backend (goldens from
//! tools/make_stain_goldens.py: real H&E crops of the bundled slide, one re-stained as another
//! site's, fitted to a third), and the inputs with too little stain to estimate from.

use std::path::PathBuf;

use image::{Rgb, RgbImage};
use patchtcga_augment::{Macenko, Normalized, Reinhard};

fn golden(name: &str) -> RgbImage {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).to_rgb8()
}

fn fitted() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/stain.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|x| x.as_array().cloned().unwrap_or_else(|| vec![x.clone()]))
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Mean absolute difference per channel value, in levels of 255.
fn mad(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / a.as_raw().len() as f64
}

/// `ours`, normalised from `source`, within a level on average of torchstain's `golden`, and
/// visibly changed from the source.
fn close_to_torchstain(source: &RgbImage, ours: &RgbImage, golden_name: &str) {
    let (d, moved) = (mad(ours, &golden(golden_name)), mad(source, ours));
    eprintln!("{golden_name}: {d:.4} levels from torchstain's, {moved:.2} from the source");
    assert!(d <= 1.0, "{golden_name}: mean absolute difference {d:.3} levels");
    assert!(moved > 5.0 * d.max(0.1), "{golden_name}: normalising changed the image by {moved:.2}");
}

fn image(n: Normalized) -> RgbImage {
    match n {
        Normalized::Image(i) => i,
        Normalized::Unchanged => panic!("left unchanged"),
    }
}

#[test]
fn macenko_matches_torchstain() {
    let g = fitted();
    let m = Macenko::fit(&golden("stain_target.png")).unwrap();
    let (stains, maxc) = (floats(&g["macenko_stains"]), floats(&g["macenko_max_concentrations"]));
    for (ours, theirs) in m.stains.iter().flatten().zip(&stains) {
        assert!((ours - theirs).abs() < 1e-6, "stain vectors {:?} vs {stains:?}", m.stains);
    }
    for (ours, theirs) in m.max_concentrations.iter().zip(&maxc) {
        assert!((ours - theirs).abs() < 1e-6, "max concentrations {:?} vs {maxc:?}", m.max_concentrations);
    }
    for i in 0..2 {
        let source = golden(&format!("stain_source_{i}.png"));
        let ours = image(m.normalize(&source));
        close_to_torchstain(&source, &ours, &format!("stain_macenko_{i}.png"));
        let (h, e) = m.stain_images(&source).unwrap();
        assert!(mad(&h, &golden(&format!("stain_macenko_h_{i}.png"))) <= 1.0);
        assert!(mad(&e, &golden(&format!("stain_macenko_e_{i}.png"))) <= 1.0);
    }
}

#[test]
fn reinhard_matches_torchstain() {
    let g = fitted();
    let r = Reinhard::fit(&golden("stain_target.png"));
    let (means, stds) = (floats(&g["reinhard_means"]), floats(&g["reinhard_stds"]));
    for c in 0..3 {
        assert!(
            (r.means[c] - means[c]).abs() < 1e-3 && (r.stds[c] - stds[c]).abs() < 1e-3,
            "{r:?} vs {means:?} {stds:?}"
        );
    }
    for i in 0..2 {
        let source = golden(&format!("stain_source_{i}.png"));
        let ours = image(r.normalize(&source));
        close_to_torchstain(&source, &ours, &format!("stain_reinhard_{i}.png"));
    }
}

/// The before/after mosaic of docs/loading.md: the target, then per source row the source, Macenko
/// and Reinhard. `PATCHTCGA_STAIN_PICTURE=docs/images/stain_mosaic.png cargo test -p patchtcga-augment --test stain`
#[test]
fn mosaic_of_the_normalised_sources() {
    let target = golden("stain_target.png");
    let (m, r) = (Macenko::fit(&target).unwrap(), Reinhard::fit(&target));
    let side = target.width();
    let mut mosaic = RgbImage::from_pixel(side * 4, side * 2, Rgb([255, 255, 255]));
    image::imageops::replace(&mut mosaic, &target, 0, 0);
    for i in 0..2u32 {
        let source = golden(&format!("stain_source_{i}.png"));
        let row = [source.clone(), image(m.normalize(&source)), image(r.normalize(&source))];
        for (col, tile) in row.iter().enumerate() {
            image::imageops::replace(&mut mosaic, tile, (side * (col as u32 + 1)) as i64, (side * i) as i64);
        }
    }
    assert_eq!(mosaic.dimensions(), (4 * side, 2 * side));
    if let Some(path) = std::env::var_os("PATCHTCGA_STAIN_PICTURE") {
        mosaic.save(path).unwrap();
    }
}

/// Glass, a blank patch, one flat colour, all ink: nothing to estimate from, passed through,
/// never NaN.
#[test]
fn degenerate_patches_pass_through() {
    let m = Macenko::REFERENCE;
    let r = Reinhard::fit(&golden("stain_target.png"));
    for colour in [[255u8, 255, 255], [240, 240, 240], [0, 0, 0], [200, 120, 170]] {
        let flat = RgbImage::from_pixel(32, 32, Rgb(colour));
        assert_eq!(m.normalize(&flat), Normalized::Unchanged, "{colour:?}");
        assert_eq!(r.normalize(&flat), Normalized::Unchanged, "{colour:?}");
        assert!(Macenko::fit(&flat).is_none());
    }
    // Mostly glass with a few stained pixels: still too little for Macenko.
    let mut sparse = RgbImage::from_pixel(32, 32, Rgb([245, 245, 245]));
    for x in 0..5 {
        sparse.put_pixel(x, 0, Rgb([150, 80, 160]));
    }
    assert_eq!(m.normalize(&sparse), Normalized::Unchanged);
}
