//! Stain normalisation against torchstain's NumPy backend (goldens from
//! tools/make_stain_goldens.py: real H&E crops of the bundled slide, one re-stained as another
//! site's, fitted to a third), and the inputs with too little stain to estimate from.

use std::path::PathBuf;

use image::{Rgb, RgbImage};
use patchtcga_augment::{Macenko, Normalized, Reinhard, Vahadane};

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
    let (m, r, v) = (Macenko::fit(&target).unwrap(), Reinhard::fit(&target), vahadane());
    let side = target.width();
    let mut mosaic = RgbImage::from_pixel(side * 5, side * 2, Rgb([255, 255, 255]));
    image::imageops::replace(&mut mosaic, &target, 0, 0);
    for i in 0..2u32 {
        let source = golden(&format!("stain_source_{i}.png"));
        let row =
            [source.clone(), image(m.normalize(&source)), image(r.normalize(&source)), image(v.normalize(&source))];
        for (col, tile) in row.iter().enumerate() {
            image::imageops::replace(&mut mosaic, tile, (side * (col as u32 + 1)) as i64, (side * i) as i64);
        }
    }
    assert_eq!(mosaic.dimensions(), (5 * side, 2 * side));
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
        assert!(Vahadane::fit(&flat).is_none(), "{colour:?}");
        assert_eq!(vahadane().normalize(&flat), Normalized::Unchanged, "{colour:?}");
    }
    // Mostly glass with a few stained pixels: still too little for Macenko.
    let mut sparse = RgbImage::from_pixel(32, 32, Rgb([245, 245, 245]));
    for x in 0..5 {
        sparse.put_pixel(x, 0, Rgb([150, 80, 160]));
    }
    assert_eq!(m.normalize(&sparse), Normalized::Unchanged);
}

/// Vahadane fitted to the target patch.
fn vahadane() -> Vahadane {
    Vahadane::fit(&golden("stain_target.png")).unwrap()
}

/// Degrees between two directions.
fn angle(a: [f64; 3], b: [f64; 3]) -> f64 {
    let dot: f64 = (0..3).map(|i| a[i] * b[i]).sum();
    let norm = |v: [f64; 3]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    (dot / (norm(a) * norm(b))).clamp(-1.0, 1.0).acos().to_degrees()
}

/// A 96 × 96 mixture of two known stains (Ruifrok and Johnston's H and E vectors): a fifth glass,
/// the rest hematoxylin alone, eosin alone or both, at concentrations from a fixed sequence.
fn mixture(h: [f64; 3], e: [f64; 3]) -> RgbImage {
    let mut state = 12345u64;
    let mut uniform = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    RgbImage::from_fn(96, 96, |_, _| {
        let kind = uniform();
        let (ch, ce) = match kind {
            k if k < 0.2 => (0.0, 0.0),
            k if k < 0.5 => (0.3 + 1.2 * uniform(), 0.0),
            k if k < 0.8 => (0.0, 0.4 + 0.8 * uniform()),
            _ => (0.3 + 0.9 * uniform(), 0.3 + 0.6 * uniform()),
        };
        Rgb(std::array::from_fn(|c| (255.0 * (-(ch * h[c] + ce * e[c])).exp()).round() as u8))
    })
}

#[test]
fn vahadane_recovers_the_stain_vectors_of_a_synthetic_mixture() {
    let unit = |v: [f64; 3]| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.map(|x| x / n)
    };
    let (h, e) = (unit([0.65, 0.70, 0.29]), unit([0.07, 0.99, 0.11]));
    let fitted = Vahadane::fit(&mixture(h, e)).unwrap();
    let (dh, de) = (angle(fitted.stains[0], h), angle(fitted.stains[1], e));
    eprintln!("Vahadane on a synthetic mixture: H {dh:.3}°, E {de:.3}° from the true vectors");
    assert!(dh < 2.0 && de < 2.0, "H {dh:.2}°, E {de:.2}° (H first)");
    assert!(fitted.stains.iter().flatten().all(|&v| v >= 0.0), "non-negative stains");
}

/// `rgb` as another site would stain it: each channel's optical density scaled (as the goldens'
/// second source).
fn restain(rgb: &RgbImage, scale: [f64; 3]) -> RgbImage {
    let mut out = rgb.clone();
    for p in out.pixels_mut() {
        p.0 = std::array::from_fn(|c| {
            let od = -((p.0[c] as f64 + 1.0) / 256.0).ln();
            (256.0 * (-od * scale[c]).exp() - 1.0).clamp(0.0, 255.0) as u8
        });
    }
    out
}

#[test]
fn vahadane_undoes_a_change_of_stain() {
    // Two-stain models cannot give back what is neither stain (glass tints, grey): each is judged
    // against Macenko (equal to torchstain's) on the same images.
    let target = golden("stain_target.png");
    let (v, m) = (vahadane(), Macenko::fit(&target).unwrap());
    let own = |n: Normalized| mad(&target, &image(n));
    let (v_own, m_own) = (own(v.normalize(&target)), own(m.normalize(&target)));
    eprintln!("the target normalised to itself: Vahadane {v_own:.2} levels off, Macenko {m_own:.2}");
    assert!(v_own < m_own, "Vahadane {v_own:.2}, Macenko {m_own:.2}");
    for scale in [[1.35, 0.8, 1.1], [0.8, 1.2, 0.9]] {
        let restained = restain(&target, scale);
        let changed = mad(&restained, &target);
        let (v_back, m_back) = (own(v.normalize(&restained)), own(m.normalize(&restained)));
        eprintln!(
            "re-stained by {scale:?}: {changed:.2} levels from the original; normalised back, Vahadane {v_back:.2}, Macenko {m_back:.2}"
        );
        assert!(
            v_back < changed && v_back <= m_back,
            "{scale:?}: Vahadane {v_back:.2}, Macenko {m_back:.2}, before {changed:.2}"
        );
    }
    // Another crop of the same slide: moved towards the target, its stains the target's.
    for i in 0..2 {
        let source = golden(&format!("stain_source_{i}.png"));
        assert!(mad(&source, &image(v.normalize(&source))) > 2.0, "source {i}: normalising changed the image");
    }
}
