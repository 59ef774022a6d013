mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use indicatif::ProgressBar;
use patchtcga_dataset::{archive, split, stats, Index, Task};

/// A PTCGA200 listing of tiny images: organs lung and skin, 6 slides each, 2 patches a slide.
fn synthetic_ptcga200(root: &Path) {
    for organ in ["lung", "skin"] {
        for i in 0..6 {
            for x in [0, 512] {
                let p = root.join(organ).join(format!("TCGA-{organ}-{i}_{x}_0.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let img =
                    image::RgbImage::from_fn(8, 8, |u, v| image::Rgb([(u * 30) as u8, (v * 30) as u8, (i * 40) as u8]));
                img.save(&p).unwrap();
            }
        }
    }
    std::fs::create_dir_all(root.join("thumbnail_position_map")).unwrap();
    image::RgbImage::new(4, 4).save(root.join("thumbnail_position_map/TCGA-lung-0.png")).unwrap();
}

fn golden_pickle() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/release_style_split.pickle")
}

#[test]
fn the_release_pickle_reads_and_checks_against_the_listing() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_ptcga200(dir.path());
    let index = Index::scan(dir.path(), None).unwrap();
    assert_eq!(index.entries.len(), 24, "thumbnail_position_map is skipped");
    assert_eq!(index.entries[0].path, Path::new("lung/TCGA-lung-0_0_0.png"));
    assert_eq!(index.entries[0].label, 10);
    assert_eq!(index.entries[12].label, 15);
    let s = split::read_pickle(&golden_pickle()).unwrap();
    let counts = split::check(&index, &s, &split::SplitParams::default(), &golden_pickle()).unwrap();
    assert_eq!(counts["0"], [16, 4, 4]);
    assert_eq!(s["1"]["val"].imgs[0], "TCGA-lung-2_0_0.png");

    // A listing that differs from the pickle's (one file gone) is caught.
    std::fs::remove_file(dir.path().join("lung/TCGA-lung-0_0_0.png")).unwrap();
    let shifted = Index::scan(dir.path(), None).unwrap();
    let e = split::check(&shifted, &s, &split::SplitParams::default(), &golden_pickle()).unwrap_err();
    assert!(
        e.to_string().contains("release_style_split.pickle") && e.to_string().contains("but the split names"),
        "{e}"
    );
}

#[test]
fn drawn_splits_are_by_slide_disjoint_across_trials_and_round_trip_through_python() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_ptcga200(dir.path());
    let index = Index::scan(dir.path(), None).unwrap();
    let params = split::SplitParams { seed: 3, ..Default::default() };
    let s = split::make(&index, &params).unwrap();
    assert_eq!(s.len(), 3);
    let counts = split::check(&index, &s, &params, dir.path()).unwrap();
    // 6 slides per organ: ceil(2%) = 1 val and ceil(1%) = 1 test slide per organ and trial.
    for c in counts.values() {
        assert_eq!(*c, [16, 4, 4]);
    }
    let slides = |t: &str, set: &str| -> std::collections::BTreeSet<String> {
        s[t][set].imgs.iter().map(|n| n.split('_').next().unwrap().to_string()).collect()
    };
    for a in ["0", "1", "2"] {
        for b in ["0", "1", "2"] {
            if a != b {
                assert!(slides(a, "val").is_disjoint(&slides(b, "val")));
                assert!(slides(a, "test").is_disjoint(&slides(b, "test")));
            }
        }
    }
    assert_eq!(s, split::make(&index, &params).unwrap(), "same seed, same split");
    assert_ne!(s, split::make(&index, &split::SplitParams { seed: 4, ..params }).unwrap());

    let json = dir.path().join("splits.json");
    let pickle = dir.path().join("3fold_dict_idx_filenames.pickle");
    split::write_json(&json, &s).unwrap();
    split::write_pickle(&pickle, &s).unwrap();
    assert_eq!(split::read_json(&json).unwrap(), s);
    assert_eq!(split::read_pickle(&pickle).unwrap(), s);
    // Python's own pickle module reads ours as the release's dict.
    let py = Command::new("python3")
        .args(["-c", "import json,pickle,sys; d=pickle.load(open(sys.argv[1],'rb')); assert type(d['0']['train']['idx'][0]) is int; print(json.dumps(d, sort_keys=True))"])
        .arg(&pickle)
        .output()
        .expect("python3 runs (the CI installs it)");
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let from_python: split::Splits = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(from_python, s);

    // A slide split across two sets is refused.
    let mut bad = s.clone();
    let train = bad.get_mut("0").unwrap().get_mut("train").unwrap();
    let (moved_idx, moved_img) = (train.idx.pop().unwrap(), train.imgs.pop().unwrap());
    let test = bad.get_mut("0").unwrap().get_mut("test").unwrap();
    test.idx.push(moved_idx);
    test.imgs.push(moved_img);
    let e = split::check(&index, &bad, &params, &json).unwrap_err().to_string();
    assert!(e.contains("straddles"), "{e}");

    // Too few slides for three disjoint trials: a clear error.
    std::fs::remove_dir_all(dir.path().join("skin")).unwrap();
    for i in 2..6 {
        for x in [0, 512] {
            std::fs::remove_file(dir.path().join(format!("lung/TCGA-lung-{i}_{x}_0.png"))).unwrap();
        }
    }
    let small = Index::scan(dir.path(), None).unwrap();
    let e = split::make(&small, &params).unwrap_err().to_string();
    assert!(e.contains("\"lung\" has 2 slide(s)") && e.contains("need at least 6"), "{e}");
}

#[test]
fn an_unknown_organ_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_ptcga200(dir.path());
    std::fs::create_dir_all(dir.path().join("spleen")).unwrap();
    let e = Index::scan(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("spleen") && e.contains("organ"), "{e}");
    let lenient = Index::scan_with(dir.path(), None, patchtcga_dataset::UnknownFolders::Skip).unwrap();
    assert_eq!(lenient.entries.len(), 24);
    assert_eq!(lenient.skipped_folders, vec![dir.path().join("spleen")]);
}

#[test]
fn verify_reports_mismatched_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.bin"), b"hello").unwrap();
    std::fs::write(dir.path().join("b.bin"), b"world").unwrap();
    let list = dir.path().join("MD5SUMS");
    std::fs::write(
        &list,
        "5d41402abc4b2a76b9719d911017c592  a.bin\n\
         7d793037a0760186574b0282f2f435e7 *b.bin\n\
         00000000000000000000000000000000  c.bin\n",
    )
    .unwrap();
    let r = archive::verify(&list, None, &ProgressBar::hidden()).unwrap();
    assert_eq!((r.ok, r.mismatched.len(), r.missing.len()), (2, 0, 1));
    std::fs::write(dir.path().join("b.bin"), b"w0rld").unwrap();
    let r = archive::verify(&list, None, &ProgressBar::hidden()).unwrap();
    assert_eq!(r.mismatched, vec![dir.path().join("b.bin")]);
    std::fs::write(&list, "not a checksum line\n").unwrap();
    assert!(archive::verify(&list, None, &ProgressBar::hidden()).unwrap_err().to_string().contains("line 1"));
}

/// A tar.gz of `files`, split into `n` parts named `<prefix>aa`, `<prefix>ab`, … (as `split` does).
fn split_archive(dir: &Path, prefix: &str, files: &[(&str, &[u8])], n: usize) -> Vec<PathBuf> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    {
        let mut b = tar::Builder::new(&mut gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.finish().unwrap();
    }
    let bytes = gz.finish().unwrap();
    let chunk = bytes.len().div_ceil(n);
    bytes
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| {
            let p = dir.join(format!("{prefix}a{}", (b'a' + i as u8) as char));
            std::fs::write(&p, c).unwrap();
            p
        })
        .collect()
}

#[test]
fn extract_joins_parts_in_order_checks_md5_and_unpacks() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let parts =
        split_archive(dir.path(), "PTCGA200_p_", &[("PTCGA200/lung/a.jpg", &big), ("PTCGA200/skin/b.jpg", b"bee")], 3);
    assert_eq!(parts.len(), 3);
    let found = archive::find_parts(&dir.path().join("PTCGA200_p_")).unwrap();
    assert_eq!(found, parts);
    let joined: Vec<u8> = parts.iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    let list = dir.path().join("md5.txt");
    std::fs::write(&list, format!("{}  PTCGA200.tar.gz\n", patchtcga_dataset::md5_hex(&joined))).unwrap();
    let out = dir.path().join("data");
    let r = archive::extract(&found, &out, Some((&list, "PTCGA200.tar.gz")), &ProgressBar::hidden()).unwrap();
    assert_eq!(r.files, 2);
    assert_eq!(std::fs::read(out.join("PTCGA200/lung/a.jpg")).unwrap(), big);
    assert_eq!(std::fs::read(out.join("PTCGA200/skin/b.jpg")).unwrap(), b"bee");

    // A corrupted part: the checksum stops it before anything is written.
    let mut bytes = std::fs::read(&parts[1]).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&parts[1], bytes).unwrap();
    let out2 = dir.path().join("data2");
    let e = archive::extract(&found, &out2, Some((&list, "PTCGA200.tar.gz")), &ProgressBar::hidden()).unwrap_err();
    assert!(e.to_string().contains("MD5") && e.to_string().contains("md5.txt"), "{e}");
    assert!(!out2.exists());
}

#[test]
fn extract_refuses_paths_that_escape() {
    let dir = tempfile::tempdir().unwrap();
    for (i, evil) in ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"].iter().enumerate() {
        let sub = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let parts = split_archive(&sub, "x_", &[("ok.txt", b"fine"), (evil, b"bad")], 1);
        let out = sub.join("out");
        let e = archive::extract(&parts, &out, None, &ProgressBar::hidden()).unwrap_err().to_string();
        assert!(e.contains("refusing") && e.contains("evil.txt"), "{e}");
        assert!(!sub.join("evil.txt").exists() && !dir.path().join("evil.txt").exists());
    }
    // A symbolic link pointing out of the target folder.
    let sub = dir.path().join("links");
    std::fs::create_dir_all(&sub).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    {
        let mut b = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "escape", "../../etc").unwrap();
        b.finish().unwrap();
    }
    std::fs::write(sub.join("l_aa"), gz.finish().unwrap()).unwrap();
    let e =
        archive::extract(&[sub.join("l_aa")], &sub.join("out"), None, &ProgressBar::hidden()).unwrap_err().to_string();
    assert!(e.contains("refusing link escape"), "{e}");
}

#[test]
fn stats_count_classes_and_measure_channels_exactly() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_ptcga200(dir.path());
    let index = Index::scan(dir.path(), None).unwrap();
    let s = stats::compute(&index, None, 0, &ProgressBar::hidden()).unwrap();
    assert_eq!((s.patches, s.slides, s.measured), (24, 12, 24));
    assert_eq!(s.classes.len(), 2);
    assert_eq!(
        (s.classes[0].name.as_str(), s.classes[0].label, s.classes[0].patches, s.classes[0].slides),
        ("lung", 10, 12, 6)
    );
    // Direct computation over the same pixels.
    let mut v: [Vec<f64>; 3] = Default::default();
    for e in &index.entries {
        for p in image::open(dir.path().join(&e.path)).unwrap().to_rgb8().pixels() {
            for (vc, &pc) in v.iter_mut().zip(&p.0) {
                vc.push(pc as f64 / 255.0);
            }
        }
    }
    for (c, vc) in v.iter().enumerate() {
        let n = vc.len() as f64;
        let m = vc.iter().sum::<f64>() / n;
        let sd = (vc.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt();
        assert!(
            (s.mean[c] - m).abs() < 1e-9 && (s.std[c] - sd).abs() < 1e-9,
            "channel {c}: {} {} vs {m} {sd}",
            s.mean[c],
            s.std[c]
        );
    }
    let sampled = stats::compute(&index, Some(5), 1, &ProgressBar::hidden()).unwrap();
    assert_eq!(sampled.measured, 5);
    let (mosaic, rows) = stats::mosaic(&index, 3, 16, 0).unwrap();
    assert_eq!(rows, vec!["lung", "skin"]);
    // Label column: 4 letters × 8 px + 2 × 4 px gap; then 3 tiles of 16 px with 4 px gaps.
    assert_eq!(mosaic.dimensions(), (40 + 3 * 20 + 4, 2 * 20 + 4));
    let dark = |x0: u32, x1: u32| {
        (x0..x1)
            .flat_map(|x| (0..mosaic.height()).map(move |y| (x, y)))
            .filter(|&(x, y)| mosaic.get_pixel(x, y).0 == [0, 0, 0])
            .count()
    };
    assert!(dark(0, 40) > 20, "class names are written in the label column");

    // A corrupt image is named.
    std::fs::write(dir.path().join("skin/TCGA-skin-0_0_0.png"), b"not a png").unwrap();
    let e = stats::compute(&index, None, 0, &ProgressBar::hidden()).unwrap_err().to_string();
    assert!(e.contains("TCGA-skin-0_0_0.png") && e.contains("unreadable"), "{e}");
}

#[test]
fn stats_of_a_built_segpanda_dataset_count_mask_classes() {
    let dir = tempfile::tempdir().unwrap();
    let mask = image::RgbImage::from_fn(2220, 2967, |x, _| image::Rgb([if x < 1400 { 1 } else { 3 }, 0, 0]));
    write_tiled_tiff(&dir.path().join("mask.tiff"), &mask, None).unwrap();
    let csv = write_csv(
        dir.path(),
        "s.csv",
        &format!("slide,mask,provider,grade,split\n{},mask.tiff,radboud,2,train\n", sample_slide().display()),
    );
    let out = dir.path().join("seg");
    let mut opts = options(&out);
    opts.per_slide = Some(3);
    assert!(run(&Task::SegPanda200, &csv, &opts).failures.is_empty());
    let index = Index::scan(&out, None).unwrap();
    let s = stats::compute(&index, None, 0, &ProgressBar::hidden()).unwrap();
    let m = s.mask_pixels.unwrap();
    assert_eq!(m.iter().sum::<u64>(), 3 * 512 * 512);
    assert_eq!((m[0], m[2], m[4], m[5]), (0, 0, 0, 0));
    assert!(m[1] > 0 || m[3] > 0);
}
