use image::{GrayImage, Luma, Rgb, RgbImage};
use patchtcga_augment::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn patch() -> RgbImage {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../slide/tests/golden/cmu1_0.39_512_800_800.png");
    image::open(p).unwrap().to_rgb8()
}

#[test]
fn presets_make_the_views_their_methods_need() {
    let img = patch();
    let sizes = |preset: Preset| -> Vec<u32> {
        let r = Recipe::preset(preset, 224, 6);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        r.views.iter().map(|v| v.apply(&img, None, &mut rng).unwrap().image.width()).collect()
    };
    assert_eq!(sizes(Preset::Supervised), vec![224]);
    assert_eq!(sizes(Preset::Eval), vec![224]);
    assert_eq!(sizes(Preset::SimClr), vec![224, 224]);
    assert_eq!(sizes(Preset::Byol), vec![224, 224]);
    assert_eq!(sizes(Preset::Dino), vec![224, 224, 96, 96, 96, 96, 96, 96]);
    assert_eq!(sizes(Preset::Mae), vec![224]);
    let byol = Recipe::preset(Preset::Byol, 224, 0);
    assert_eq!(
        (byol.views[0].blur, byol.views[1].blur, byol.views[0].solarize, byol.views[1].solarize),
        (1.0, 0.1, 0.0, 0.2)
    );
    // Each preset is named as on the command line (and in bench/loader_torchvision.py).
    use clap::ValueEnum;
    let names: Vec<String> = Preset::value_variants().iter().map(Preset::to_string).collect();
    assert_eq!(names, ["supervised", "eval", "none", "simclr", "byol", "dino", "mae", "segmentation"]);
    assert!(names.iter().zip(Preset::value_variants()).all(|(n, p)| Preset::from_str(n, false) == Ok(*p)));
}

#[test]
fn eval_is_centre_crop_287_then_resize_224() {
    let img = patch();
    let r = Recipe::preset(Preset::Eval, 224, 0);
    let v = r.views[0].apply(&img, None, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    assert_eq!(v.image, resize(&center_crop(&img, 287).unwrap(), 224, 224).unwrap());
}

#[test]
fn views_are_deterministic_under_a_seed_and_vary_across_seeds() {
    let img = patch();
    let r = Recipe::preset(Preset::SimClr, 224, 0);
    let make = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        r.views.iter().map(|v| v.apply(&img, None, &mut rng).unwrap().image).collect::<Vec<_>>()
    };
    assert_eq!(make(5), make(5));
    assert_ne!(make(5), make(6));
    let two = make(5);
    assert_ne!(two[0], two[1], "the two views differ");
}

#[test]
fn random_resized_crop_respects_scale_and_ratio() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..2000 {
        let (t, l, h, w) = random_resized_crop_params(&mut rng, 512, 512, (0.08, 1.0), (0.75, 4.0 / 3.0));
        assert!(t + h <= 512 && l + w <= 512);
        let area = (w * h) as f64 / (512.0 * 512.0);
        assert!((0.075..=1.0).contains(&area), "area {area}");
        let ratio = w as f64 / h as f64;
        assert!((0.74..=1.35).contains(&ratio), "ratio {ratio}");
    }
    // An impossible range falls back to the centred crop of the nearest allowed ratio.
    assert_eq!(random_resized_crop_params(&mut rng, 400, 100, (0.9, 1.0), (1.0, 1.0)), (0, 150, 100, 100));
}

#[test]
fn segmentation_moves_image_and_mask_together() {
    // Every pixel's class is written in its colour, so after augmentation the mask must still
    // be a function of the image.
    let img =
        RgbImage::from_fn(300, 260, |x, y| Rgb([((x * 7 + y * 3) % 6 * 40) as u8, (x % 251) as u8, (y % 241) as u8]));
    let mask = GrayImage::from_fn(300, 260, |x, y| Luma([((x * 7 + y * 3) % 6) as u8]));
    let r = Recipe::preset(Preset::Segmentation, 128, 0);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut saw_rotation_or_flip = false;
    for _ in 0..20 {
        let v = r.views[0].apply(&img, Some(&mask), &mut rng).unwrap();
        let m = v.mask.unwrap();
        assert_eq!(m.dimensions(), (128, 128));
        for (x, y, p) in v.image.enumerate_pixels() {
            assert_eq!(p.0[0] / 40, m.get_pixel(x, y).0[0]);
        }
        // Orientation check: in the source, class rises by 7 per x step; detect other orientations.
        let (a, b) = (m.get_pixel(0, 0).0[0] as i32, m.get_pixel(1, 0).0[0] as i32);
        saw_rotation_or_flip |= (b - a).rem_euclid(6) != 1;
    }
    assert!(saw_rotation_or_flip);
    let wrong = GrayImage::new(10, 10);
    assert!(r.views[0].apply(&img, Some(&wrong), &mut rng).is_err());
}

#[test]
fn stain_jitter_changes_colours_but_not_geometry() {
    let img = patch();
    let mut spec = Recipe::preset(Preset::Eval, 224, 0).views[0].clone();
    let plain = spec.apply(&img, None, &mut ChaCha8Rng::seed_from_u64(2)).unwrap().image;
    spec.stain = Some(StainJitter { sigma: 0.05, p: 1.0 });
    let stained = spec.apply(&img, None, &mut ChaCha8Rng::seed_from_u64(2)).unwrap().image;
    assert_ne!(plain, stained);
    let mean_diff = plain.as_raw().iter().zip(stained.as_raw()).map(|(&a, &b)| a.abs_diff(b) as f64).sum::<f64>()
        / plain.as_raw().len() as f64;
    assert!(mean_diff > 0.5 && mean_diff < 40.0, "{mean_diff}");
}
