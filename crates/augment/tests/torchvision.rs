//! Every operation against torchvision's output (scikit-image's for HED) on a real H&E crop (goldens made by
//! tools/make_augment_goldens.py): exact for geometry, within 1/255 mean absolute difference
//! for colour and resampling.

use std::path::PathBuf;

use image::{GrayImage, RgbImage};
use patchtcga_augment::*;
use serde_json::Value;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn rgb(name: &str) -> RgbImage {
    image::open(golden_dir().join(name)).unwrap().to_rgb8()
}

/// Mean and largest absolute difference, in 8-bit steps.
fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let sum: u64 = a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y) as u64).sum();
    (sum as f64 / a.len() as f64, a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y)).max().unwrap_or(0))
}

/// An in-place operation applied to a copy of `input`.
fn changed(input: &RgbImage, op: impl FnOnce(&mut RgbImage)) -> Vec<u8> {
    let mut img = input.clone();
    op(&mut img);
    img.into_raw()
}

#[test]
fn operations_match_torchvision() {
    let cases: Value = serde_json::from_slice(&std::fs::read(golden_dir().join("cases.json")).unwrap()).unwrap();
    let input = rgb("input.png");
    let mask = image::open(golden_dir().join("mask.png")).unwrap().to_luma8();
    let mut report = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let a = &case["args"];
        let u = |k: &str| a[k].as_u64().unwrap() as u32;
        let f = |k: &str| a[k].as_f64().unwrap() as f32;
        let file = case["file"].as_str().unwrap();
        let (ours, exact): (Vec<u8>, bool) = match case["op"].as_str().unwrap() {
            "rot90" => (rot90(&input, u("k") as i32).into_raw(), true),
            "hflip" => (hflip(&input).into_raw(), true),
            "vflip" => (vflip(&input).into_raw(), true),
            "crop" => (crop(&input, u("top"), u("left"), u("height"), u("width")).unwrap().into_raw(), true),
            "center_crop" => (center_crop(&input, u("size")).unwrap().into_raw(), true),
            "resize" => (resize(&input, u("width"), u("height")).unwrap().into_raw(), false),
            "resized_crop" => (
                resized_crop(&input, u("top"), u("left"), u("height"), u("width"), u("out"), u("out"))
                    .unwrap()
                    .into_raw(),
                false,
            ),
            "brightness" => (changed(&input, |i| adjust_brightness(i, f("factor")).unwrap()), false),
            "contrast" => (changed(&input, |i| adjust_contrast(i, f("factor")).unwrap()), false),
            "saturation" => (changed(&input, |i| adjust_saturation(i, f("factor")).unwrap()), false),
            "hue" => (changed(&input, |i| adjust_hue(i, f("factor")).unwrap()), false),
            "grayscale" => (changed(&input, to_grayscale), true),
            "blur" => (changed(&input, |i| gaussian_blur(i, u("kernel"), f("sigma")).unwrap()), false),
            "solarize" => (changed(&input, |i| solarize(i, u("threshold") as u8)), true),
            "hed" => {
                let v = |k: &str| -> [f32; 3] {
                    let a: Vec<f32> = a[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
                    [a[0], a[1], a[2]]
                };
                (changed(&input, |i| hed_jitter(i, v("alpha"), v("beta"))), false)
            }
            "resize_mask" => {
                let ours = resize_mask(&mask, u("width"), u("height")).unwrap();
                let want: GrayImage = image::open(golden_dir().join(file)).unwrap().to_luma8();
                assert_eq!(ours.dimensions(), want.dimensions());
                assert_eq!(ours.as_raw(), want.as_raw(), "{name}");
                continue;
            }
            "normalize" => {
                let mut out = vec![0f32; 3 * 160 * 120];
                normalize(&input, IMAGENET_MEAN, IMAGENET_STD, &mut out).unwrap();
                let bytes = std::fs::read(golden_dir().join(file)).unwrap();
                let want: Vec<f32> =
                    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                let worst = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-5, "{name}: {worst}");
                continue;
            }
            other => panic!("unknown op {other} in cases.json"),
        };
        let want = rgb(file);
        assert_eq!(ours.len(), want.as_raw().len(), "{name}: size");
        let (mean, max) = diff(&ours, want.as_raw());
        report.push(format!("{name}: mean {mean:.4}, max {max}"));
        if exact {
            assert_eq!(max, 0, "{name} must match exactly");
        } else {
            assert!(mean <= 1.0, "{name}: mean abs diff {mean:.3} > 1/255 (max {max})");
        }
    }
    println!("{}", report.join("\n"));
    assert!(report.len() >= 27, "only {} cases ran", report.len());
}

#[test]
fn masks_follow_geometry_exactly_and_bad_parameters_are_refused() {
    let mask = GrayImage::from_fn(6, 4, |x, y| image::Luma([(x + 10 * y) as u8]));
    assert_eq!(hflip(&mask).get_pixel(0, 0).0[0], 5);
    assert_eq!(rot90(&mask, 1).dimensions(), (4, 6));
    assert_eq!(
        rot90(&mask, 1).get_pixel(0, 0).0[0],
        5,
        "counter-clockwise: the top-right corner comes to the top-left"
    );
    assert_eq!(rot90(&mask, 4), mask);
    assert!(crop(&mask, 0, 0, 5, 7).is_err());
    let mut img = RgbImage::new(8, 8);
    assert!(center_crop(&img, 9).is_err());
    assert!(adjust_hue(&mut img, 0.7).is_err());
    assert!(adjust_brightness(&mut img, -1.0).is_err());
    assert!(gaussian_blur(&mut img, 4, 1.0).is_err());
    assert!(gaussian_blur(&mut img, 23, 1.0).is_err(), "kernel larger than the image");
    let mut out = vec![0f32; 10];
    assert!(normalize(&img, IMAGENET_MEAN, IMAGENET_STD, &mut out).is_err());
}
