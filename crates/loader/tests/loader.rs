use std::path::{Path, PathBuf};

use patchtcga_augment::{Preset, Recipe, IMAGENET_MEAN, IMAGENET_STD};
use patchtcga_dataset::Index;
use patchtcga_loader::*;

fn real_patch() -> image::RgbImage {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../slide/tests/golden/cmu1_0.39_512_800_800.png");
    image::open(p).unwrap().to_rgb8()
}

/// A PTCGA200 layout of 256 px JPEG crops of a real patch: 7 in lung, 6 in skin.
fn dataset(root: &Path) -> Index {
    let src = real_patch();
    for i in 0..13u32 {
        let organ = if i < 7 { "lung" } else { "skin" };
        let p = root.join(organ).join(format!("s{}_{}_0.jpg", i / 2, i * 16));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        image::imageops::crop_imm(&src, i * 16, i * 8, 256, 256).to_image().save(&p).unwrap();
    }
    Index::scan(root, None).unwrap()
}

fn config(workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: 4,
        shuffle: true,
        drop_last: false,
        seed: 11,
        rank: 0,
        world_size: 1,
        workers,
        prefetch: 2,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        on_bad_input: OnBadInput::Fail,
    }
}

fn all_batches(l: &Loader, epoch: u64) -> Vec<Batch> {
    l.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn batches_are_nchw_normalised_and_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let index = dataset(dir.path());
    let l = Loader::new(samples(&index, None).unwrap(), Recipe::preset(Preset::SimClr, 96, 0), config(2)).unwrap();
    let batches = all_batches(&l, 0);
    assert_eq!(batches.len(), 4);
    assert_eq!(l.batches_per_epoch(), 4);
    let b = &batches[0];
    assert_eq!(b.views.len(), 2);
    assert_eq!(b.views[0].shape, [4, 3, 96, 96]);
    assert_eq!(b.views[0].data.len(), 4 * 3 * 96 * 96);
    for (i, &idx) in b.indices.iter().enumerate() {
        assert_eq!(b.labels[i], if idx < 7 { 10 } else { 15 });
    }
    // ImageNet-normalised H&E: values in the range (0 - 0.485) / 0.229 .. (1 - 0.406) / 0.225.
    assert!(b.views[0].data.iter().all(|v| (-2.2..=2.7).contains(v)));
    let seen: std::collections::BTreeSet<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen.len(), 13, "one epoch visits every sample");
}

#[test]
fn the_same_seed_gives_bit_identical_batches_whatever_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let index = dataset(dir.path());
    let s = samples(&index, None).unwrap();
    let one = Loader::new(s.clone(), Recipe::preset(Preset::Dino, 96, 2), config(1)).unwrap();
    let four = Loader::new(s, Recipe::preset(Preset::Dino, 96, 2), config(4)).unwrap();
    assert_eq!(all_batches(&one, 3), all_batches(&four, 3));
    assert_ne!(all_batches(&one, 3), all_batches(&one, 4), "each epoch reshuffles and re-augments");
}

#[test]
fn ranks_take_disjoint_equal_shares_reshuffled_each_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let index = dataset(dir.path());
    let s = samples(&index, None).unwrap();
    for drop_last in [false, true] {
        let shares: Vec<Vec<usize>> = (0..3)
            .map(|rank| {
                let c = LoaderConfig { rank, world_size: 3, drop_last, ..config(1) };
                Loader::new(s.clone(), Recipe::preset(Preset::Eval, 64, 0), c).unwrap().shard(0)
            })
            .collect();
        let len = if drop_last { 4 } else { 5 };
        assert!(shares.iter().all(|sh| sh.len() == len), "{shares:?}");
        let mut all: Vec<usize> = shares.concat();
        all.sort();
        if drop_last {
            all.dedup();
            assert_eq!(all.len(), 12, "disjoint");
        } else {
            all.dedup();
            assert_eq!(all.len(), 13, "complete: padding repeats samples, misses none");
        }
    }
    let c = LoaderConfig { rank: 1, world_size: 3, ..config(1) };
    let l = Loader::new(s.clone(), Recipe::preset(Preset::Eval, 64, 0), c).unwrap();
    assert_ne!(l.shard(0), l.shard(1));
    // Evaluation (dataset order, no drop): each of the 13 samples on one rank, once.
    let shares: Vec<Vec<usize>> = (0..3)
        .map(|rank| {
            let c = LoaderConfig { rank, world_size: 3, shuffle: false, ..config(1) };
            Loader::new(s.clone(), Recipe::preset(Preset::Eval, 64, 0), c).unwrap().shard(0)
        })
        .collect();
    assert_eq!(shares.iter().map(Vec::len).collect::<Vec<_>>(), [5, 4, 4]);
    let mut all = shares.concat();
    all.sort();
    assert_eq!(all, (0..13).collect::<Vec<_>>());
}

#[test]
fn bad_images_are_skipped_and_counted_or_fail_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let index = dataset(dir.path());
    let victim: PathBuf = index.root.join(&index.entries[2].path);
    assert_eq!(samples(&index, None).unwrap()[2].image.path(), victim);
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..200]).unwrap();
    let s = samples(&index, None).unwrap();

    let skip = LoaderConfig { on_bad_input: OnBadInput::Skip, ..config(2) };
    let l = Loader::new(s.clone(), Recipe::preset(Preset::Supervised, 64, 0), skip).unwrap();
    let mut epoch = l.epoch(0);
    let n: usize = epoch.by_ref().map(|b| b.unwrap().labels.len()).sum();
    assert_eq!(n, 12);
    let skipped = epoch.skipped();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].to_string().contains(&victim.display().to_string()));

    let l = Loader::new(s, Recipe::preset(Preset::Supervised, 64, 0), config(2)).unwrap();
    let results: Vec<_> = l.epoch(0).collect();
    let err = results.iter().find_map(|r| r.as_ref().err()).expect("the bad file ends the epoch");
    assert!(err.to_string().contains("unreadable JPEG"), "{err}");
    assert!(results.last().unwrap().is_err());
}

#[test]
fn segmentation_batches_carry_masks_and_a_missing_mask_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("train/3/case1");
    std::fs::create_dir_all(&case).unwrap();
    let src = real_patch();
    for i in 0..3u32 {
        image::imageops::crop_imm(&src, i * 10, 0, 200, 200)
            .to_image()
            .save(case.join(format!("s_{i}_0.png")))
            .unwrap();
        let mask = image::RgbImage::from_fn(200, 200, |x, _| image::Rgb([(x / 40) as u8, 0, 0]));
        mask.save(case.join(format!("s_{i}_0_mask.png"))).unwrap();
    }
    let index = Index::scan(dir.path(), None).unwrap();
    let c = LoaderConfig { batch_size: 3, ..config(2) };
    let l =
        Loader::new(samples(&index, None).unwrap(), Recipe::preset(Preset::Segmentation, 128, 0), c.clone()).unwrap();
    let b = l.epoch(0).next().unwrap().unwrap();
    let m = b.masks.unwrap();
    assert_eq!(m.len(), 3 * 128 * 128);
    assert!(m.iter().all(|&v| v <= 4) && m.iter().any(|&v| v > 0));
    assert_eq!(b.labels, vec![3, 3, 3], "the grade folder");

    // A mask of the wrong size names its image.
    let small = case.join("s_2_0_mask.png");
    image::RgbImage::new(50, 50).save(&small).unwrap();
    let l =
        Loader::new(samples(&index, None).unwrap(), Recipe::preset(Preset::Segmentation, 128, 0), c.clone()).unwrap();
    let e = l.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(e.contains("s_2_0.png") && e.contains("mask is (50, 50)"), "{e}");
    image::RgbImage::from_fn(200, 200, |x, _| image::Rgb([(x / 40) as u8, 0, 0])).save(&small).unwrap();

    let mut s = samples(&index, None).unwrap();
    s[1].mask = Some(case.join("gone_mask.png"));
    let l = Loader::new(s, Recipe::preset(Preset::Segmentation, 128, 0), c).unwrap();
    let e = l.epoch(0).next().unwrap().unwrap_err();
    assert!(e.to_string().contains("gone_mask.png"), "{e}");
}

#[test]
fn impossible_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let index = dataset(dir.path());
    let s = samples(&index, None).unwrap();
    assert!(Loader::new(vec![], Recipe::preset(Preset::Eval, 64, 0), config(1)).is_err());
    let c = LoaderConfig { rank: 2, world_size: 2, ..config(1) };
    assert!(Loader::new(s.clone(), Recipe::preset(Preset::Eval, 64, 0), c).is_err());
    assert!(samples(&index, Some(&[0, 99])).unwrap_err().to_string().contains("99"));
    assert_eq!(samples(&index, Some(&[3, 0])).unwrap()[0].image, s[3].image);
}

#[test]
fn the_original_pcam_h5_files_load_with_their_labels() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let s = pcam_samples(&dir, "valid").unwrap();
    assert_eq!(s.iter().map(|s| s.label).collect::<Vec<_>>(), vec![0, 1, 1, 0, 1, 0]);
    // Image 4 through the loader with the identity-like eval recipe at 96 px equals h5py's pixels.
    let c = LoaderConfig { batch_size: 6, shuffle: false, mean: [0.0; 3], std: [1.0; 3], ..config(2) };
    let l = Loader::new(s, Recipe::preset(Preset::Eval, 96, 0), c).unwrap();
    let b = l.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.labels, vec![0, 1, 1, 0, 1, 0]);
    let want = image::open(dir.join("valid_x_4.png")).unwrap().to_rgb8();
    let plane = 96 * 96;
    let got = &b.views[0].data[4 * 3 * plane..5 * 3 * plane];
    for (i, p) in want.pixels().enumerate() {
        for c in 0..3 {
            assert!((got[c * plane + i] - p.0[c] as f32 / 255.0).abs() < 1e-6);
        }
    }
    let e = pcam_samples(&dir, "train").unwrap_err().to_string();
    assert!(e.contains("train_x.h5"), "{e}");
}

#[test]
fn the_official_pcam_download_names_load_and_gzipped_files_get_the_command_to_unpack() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let dir = tempfile::tempdir().unwrap();
    for part in ["x", "y"] {
        let official = dir.path().join(format!("camelyonpatch_level_2_split_valid_{part}.h5"));
        std::fs::copy(fixture.join(format!("valid_{part}.h5")), official).unwrap();
    }
    assert!(pcam_has_split(dir.path(), "valid") && !pcam_has_split(dir.path(), "train"));
    let s = pcam_samples(dir.path(), "valid").unwrap();
    assert_eq!(s.iter().map(|s| s.label).collect::<Vec<_>>(), vec![0, 1, 1, 0, 1, 0]);

    for part in ["x", "y"] {
        std::fs::write(dir.path().join(format!("camelyonpatch_level_2_split_test_{part}.h5.gz")), b"\x1f\x8b").unwrap();
    }
    assert!(pcam_has_split(dir.path(), "test"));
    let e = pcam_samples(dir.path(), "test").unwrap_err().to_string();
    assert!(
        e.contains("gunzip -k")
            && e.contains("camelyonpatch_level_2_split_test_x.h5.gz")
            && e.contains("camelyonpatch_level_2_split_test_y.h5.gz"),
        "{e}"
    );
    let e = pcam_samples(dir.path(), "train").unwrap_err().to_string();
    assert!(e.contains("train_x.h5 or camelyonpatch_level_2_split_train_x.h5"), "{e}");
}

#[test]
fn an_epoch_resumed_at_a_batch_continues_with_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let l = Loader::new(samples(&dataset(dir.path()), None).unwrap(), Recipe::preset(Preset::SimClr, 32, 0), config(2))
        .unwrap();
    let whole = all_batches(&l, 3);
    let rest: Vec<Batch> = l.epoch_from(3, 2).map(Result::unwrap).collect();
    assert!(whole.len() > 2);
    assert_eq!(rest, whole[2..]);
    assert_eq!(l.epoch_from(3, whole.len() + 5).count(), 0);
}
