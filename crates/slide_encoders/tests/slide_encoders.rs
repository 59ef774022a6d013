//! Slide encoders against their reference code (goldens of tools/make_slide_encoder_goldens.py),
//! the probe against scikit-learn, and `embed_folder` over TRIDENT-layout files.

use std::path::{Path, PathBuf};

use patchtcga_slide_encoders::embed::features_made;
use patchtcga_slide_encoders::{
    embed_folder, probe, LogisticProbe, PatchFeatures, SlideEmbeddings, SlideEncoder, SlideEncoderKind,
    SlideProbeOptions,
};
use tch::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn golden() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("goldens.json")).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn feather() -> SlideEncoder {
    let (encoder, report) =
        SlideEncoder::load(SlideEncoderKind::Feather, Some(&fixture("feather.safetensors")), Device::Cpu).unwrap();
    let report = report.unwrap();
    assert_eq!((report.prefix.as_str(), report.loaded), ("model.", 8), "{report:?}");
    assert_eq!(report.skipped_heads.len(), 2, "the classifier is not part of the encoder: {report:?}");
    encoder
}

#[test]
fn feather_matches_mil_labs_abmil() {
    let g = &golden()["feather"];
    let x = Tensor::from_slice(&floats(&g["features"])).reshape([40, 32]);
    let SlideEncoder::Feather(net) = feather() else { panic!("FEATHER") };
    let (z, attention) = net.forward(&x);
    let (z, attention) = (Vec::<f32>::try_from(z).unwrap(), Vec::<f32>::try_from(attention).unwrap());
    let (want_z, want_a) = (floats(&g["embedding"]), floats(&g["attention"]));
    let scale = want_z.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max_diff(&z, &want_z) <= 1e-4 * scale, "{z:?} vs {want_z:?}");
    assert!(max_diff(&attention, &want_a) <= 1e-4 * want_a.iter().fold(0f32, |m, v| m.max(v.abs())));
}

#[test]
fn titan_matches_its_published_slide_encoder() {
    let g = &golden()["titan"];
    let (encoder, report) =
        SlideEncoder::load(SlideEncoderKind::Titan, Some(&fixture("titan.safetensors")), Device::Cpu).unwrap();
    let report = report.unwrap();
    assert_eq!(report.prefix, "vision_encoder.");
    assert_eq!(report.outside_prefix, 1, "the text encoder is left out");
    let coords: Vec<[i64; 2]> =
        g["coords"].as_array().unwrap().chunks(2).map(|c| [c[0].as_i64().unwrap(), c[1].as_i64().unwrap()]).collect();
    let n = coords.len() as i64;
    let patches = PatchFeatures {
        features: Tensor::from_slice(&floats(&g["features"])).reshape([n, 32]),
        coords,
        footprint: Some(g["footprint"].as_i64().unwrap()),
    };
    let z = Vec::<f32>::try_from(encoder.encode(&patches).unwrap()).unwrap();
    let want = floats(&g["embedding"]);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max_diff(&z, &want) <= 1e-4 * scale, "{z:?} vs {want:?}");
    // The grid matters: the same features one cell apart embed otherwise.
    let moved = PatchFeatures { coords: patches.coords.iter().map(|&[x, y]| [x, y * 2]).collect(), ..patches };
    let other = Vec::<f32>::try_from(encoder.encode(&moved).unwrap()).unwrap();
    assert!(max_diff(&other, &want) > 1e-3 * scale);
    // Without the footprint it is refused.
    let e = encoder.encode(&PatchFeatures { footprint: None, ..moved }).unwrap_err().to_string();
    assert!(e.contains("patch_size_level0"), "{e}");
}

#[test]
fn the_probe_matches_scikit_learns_optimum() {
    let g = &golden()["probe"];
    let y: Vec<usize> = g["y"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let fitted = LogisticProbe::fit(&floats(&g["x"]), 6, &y, 3, g["cost"].as_f64().unwrap()).unwrap();
    let probs = fitted.probs(&floats(&g["test"]), 6).unwrap();
    let want = floats(&g["probs"]);
    assert!(max_diff(&probs, &want) < 1e-4, "{probs:?} vs {want:?}");
    // The fit depends on the penalty: a much weaker one moves the probabilities.
    let loose = LogisticProbe::fit(&floats(&g["x"]), 6, &y, 3, 100.0).unwrap().probs(&floats(&g["test"]), 6).unwrap();
    assert!(max_diff(&loose, &want) > 1e-2);
}

/// A TRIDENT-layout `.h5`: `features`, `coords` with `patch_size` and `target_magnification`.
fn trident_h5(path: &Path, features: &Tensor, patch_size: i64, magnification: i64) {
    let file = hdf5_metno::File::create(path).unwrap();
    let (n, d) = (features.size()[0] as usize, features.size()[1] as usize);
    let values = Vec::<f32>::try_from(features.reshape([-1])).unwrap();
    let x = ndarray::Array2::from_shape_vec((n, d), values).unwrap();
    file.new_dataset_builder().with_data(&x).create("features").unwrap();
    let c = ndarray::Array2::from_shape_fn((n, 2), |(i, j)| (i * 512 + j) as i64);
    let coords = file.new_dataset_builder().with_data(&c).create("coords").unwrap();
    coords.new_attr::<i64>().create("patch_size").unwrap().write_scalar(&patch_size).unwrap();
    coords.new_attr::<i64>().create("target_magnification").unwrap().write_scalar(&magnification).unwrap();
}

/// Slides of two kinds: features drawn around one of two centres.
fn slide_features(i: usize, width: i64) -> Tensor {
    let g = tch::Tensor::randn([30 + i as i64, width], (tch::Kind::Float, Device::Cpu));
    g + if i.is_multiple_of(2) { 1.5 } else { -1.5 }
}

#[test]
fn embed_folder_writes_one_row_per_slide_and_keeps_the_contract() {
    tch::manual_seed(3);
    let dir = tempfile::tempdir().unwrap();
    let feats = dir.path().join("feats");
    std::fs::create_dir(&feats).unwrap();
    let slides: Vec<Tensor> = (0..12).map(|i| slide_features(i, 32)).collect();
    for (i, x) in slides.iter().enumerate() {
        trident_h5(&feats.join(format!("s{i:02}.h5")), x, 512, 20);
    }
    let encoder = feather();
    let weights = fixture("feather.safetensors");
    let hidden = indicatif::ProgressBar::hidden();
    let made = embed_folder((&encoder, SlideEncoderKind::Feather, Some(&weights)), &feats, None, &hidden).unwrap();
    let md5 = patchtcga_dataset::archive::md5_file(&weights, &hidden).unwrap();
    assert_eq!((made.encoder.as_str(), made.weights_md5.as_str()), ("feather", md5.as_str()));
    assert_eq!(made.slides[..3], ["s00", "s01", "s02"]);
    assert_eq!((made.width, made.features.len()), (16, 12 * 16));
    let patches = PatchFeatures { features: slides[5].shallow_clone(), coords: Vec::new(), footprint: None };
    let direct = Vec::<f32>::try_from(encoder.encode(&patches).unwrap()).unwrap();
    assert_eq!(made.features[5 * 16..6 * 16], direct[..]);

    let out = dir.path().join("slides.h5");
    made.write(&out).unwrap();
    assert_eq!(SlideEmbeddings::read(&out).unwrap(), made);

    // The probe separates the two kinds; labels unrelated to them it cannot.
    let labels = dir.path().join("labels.csv");
    let rows: String = (0..12).map(|i| format!("s{i:02},case{i},{}\n", ["a", "b"][i % 2])).collect();
    std::fs::write(&labels, format!("slide,case,label\n{rows}")).unwrap();
    let o = SlideProbeOptions { folds: 3, cost: 1.0, seed: 0 };
    let report = probe(&made, &labels, &o).unwrap();
    assert_eq!((report.folds.len(), report.slides, report.classes.len()), (3, 12, 2));
    assert!(report.balanced_accuracy.mean > 0.99, "{report}");
    let unrelated: String = (0..12).map(|i| format!("s{i:02},case{i},{}\n", ["a", "b"][(i / 2) % 2])).collect();
    std::fs::write(&labels, format!("slide,case,label\n{unrelated}")).unwrap();
    assert!(probe(&made, &labels, &o).unwrap().balanced_accuracy.mean < 0.8);

    // A labelled slide without an embedding is named.
    std::fs::write(&labels, format!("slide,case,label\n{rows}gone,gone,a\n")).unwrap();
    let e = probe(&made, &labels, &o).unwrap_err().to_string();
    assert!(e.contains("labels.csv") && e.contains("gone"), "{e}");
}

#[test]
fn features_other_than_the_encoders_are_refused_with_what_to_run() {
    tch::manual_seed(4);
    let dir = tempfile::tempdir().unwrap();
    let encoder = feather();
    let embed = |feats: &Path| {
        embed_folder((&encoder, SlideEncoderKind::Feather, None), feats, None, &indicatif::ProgressBar::hidden())
    };
    // 256 px patches at 20×: half the footprint.
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    trident_h5(&small.join("s.h5"), &slide_features(0, 32), 256, 20);
    assert_eq!(features_made(&small.join("s.h5")).unwrap().magnification, Some(20.0));
    let e = embed(&small).unwrap_err().to_string();
    assert!(e.contains("s.h5") && e.contains("128 µm patches") && e.contains("256 µm patches (512 px at 20×)"), "{e}");
    assert!(e.contains("--arch conch-v15 --image-size 448 --mpp 0.5714"), "{e}");
    assert!(e.contains("--patch_encoder conch_v15 --patch_size 512 --mag 20"), "{e}");
    // The same footprint at 10× in 256 px patches is the same patches, read smaller.
    let at_10x = dir.path().join("at10x");
    std::fs::create_dir(&at_10x).unwrap();
    trident_h5(&at_10x.join("s.h5"), &slide_features(0, 32), 256, 10);
    assert!(embed(&at_10x).is_ok());
    // Of another width than the weights take.
    let wide = dir.path().join("wide");
    std::fs::create_dir(&wide).unwrap();
    trident_h5(&wide.join("s.h5"), &slide_features(0, 24), 512, 20);
    let e = embed(&wide).unwrap_err().to_string();
    assert!(e.contains("24-wide features") && e.contains("768 wide"), "{e}");
    // Mean pooling takes any features, and no weights.
    let (mean, _) = SlideEncoder::load(SlideEncoderKind::Mean, None, Device::Cpu).unwrap();
    let made = embed_folder((&mean, SlideEncoderKind::Mean, None), &wide, None, &indicatif::ProgressBar::hidden());
    assert_eq!(made.unwrap().width, 24);
    let e = SlideEncoder::load(SlideEncoderKind::FeatherUni2, None, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("needs --weights") && e.contains("abmil.base.uni_v2"), "{e}");
}
