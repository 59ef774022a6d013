//! Datasets built from slides named as users' slides are named (GDC's `<barcode>.<uuid>.svs`,
//! `mask` in a PANDA id) are listed whole by the release's loaders: checked by
//! `tools/release_listing.py`, which lists by the documented rule.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use patchtcga_dataset::{read_slides_csv, split, DatasetKind, Index, ManifestRow, Task, UnknownFolders};

const GDC: &str = "TCGA-AA-3861-01Z-00-DX1.9cc9a5a0-7d7a-4c1a-b3d5-0a8a3f8b1c2e";

/// Links the sample slide under `name` in `dir`.
fn slide_named(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::os::unix::fs::symlink(sample_slide(), &p).unwrap();
    p
}

/// Runs the Python lister on a built dataset; panics with its reasons when it finds any.
fn python_check(root: &Path, kind: &str, pickle: Option<&Path>) -> serde_json::Value {
    let script = patchtcga_testkit::repo_root().join("tools/release_listing.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(root).arg(kind);
    if let Some(p) = pickle {
        cmd.arg("--pickle").arg(p);
    }
    let out = cmd.output().expect("python3 runs (the CI installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Six skin slides, two with GDC's full names (dots), the others barcodes only.
fn gdc_slides(dir: &Path) -> PathBuf {
    let mut csv = String::from("slide,organ\n");
    for i in 0..6 {
        let name = match i {
            0 => format!("{GDC}.svs"),
            1 => "TCGA-BB-0001-01Z-00-DX2.0a1b2c3d-0000-4000-8000-000000000001.svs".to_string(),
            _ => format!("TCGA-CC-000{i}-01Z-00-DX1.svs"),
        };
        csv.push_str(&format!("{},skin\n", slide_named(dir, &name).display()));
    }
    write_csv(dir, "slides.csv", &csv)
}

#[test]
fn ptcga200_from_gdc_names_is_listed_whole_and_its_pickle_points_at_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let csv = gdc_slides(dir.path());
    let out = dir.path().join("PTCGA200");
    let mut opts = options(&out);
    opts.per_slide = Some(2);
    let r = run(&Task::Ptcga200, &csv, &opts);
    assert_eq!((r.built, r.new_patches, r.failures.len()), (6, 12, 0), "{:?}", r.failures);

    let index = Index::scan(&out, None).unwrap();
    assert_eq!(index.entries.len(), 12);
    assert!(index.problems.is_empty(), "{:?}", index.problems);
    let first = &index.entries[0];
    assert_eq!(first.slide, GDC, "the manifest keeps the slide id as given");
    assert!(first.path.to_string_lossy().starts_with("skin/TCGA-AA-3861-01Z-00-DX1_9cc9a5a0-"), "{:?}", first.path);
    let manifest: Vec<ManifestRow> =
        csv::Reader::from_path(out.join("manifest.csv")).unwrap().deserialize().map(Result::unwrap).collect();
    let row = manifest.iter().find(|m| m.slide == GDC).unwrap();
    assert_eq!(row.slide_file, format!("{GDC}.svs"));

    let params = split::SplitParams { seed: 1, ..Default::default() };
    let s = split::make(&index, &params).unwrap();
    let pickle = out.join("3fold_dict_idx_filenames.pickle");
    split::write_pickle(&pickle, &s).unwrap();
    let summary = python_check(&out, "ptcga200", Some(&pickle));
    assert_eq!(summary["listed"], 12);
    assert_eq!(summary["pickle_entries"], 36);
}

#[test]
fn segpanda200_with_mask_and_dots_in_ids_finds_every_mask() {
    let dir = tempfile::tempdir().unwrap();
    let mask = image::RgbImage::from_fn(2220, 2967, |_, y| image::Rgb([((y / 500) % 6) as u8, 0, 0]));
    write_tiled_tiff(&dir.path().join("m.tiff"), &mask, None).unwrap();
    let csv = write_csv(
        dir.path(),
        "train.csv",
        &format!(
            "slide,mask,data_provider,isup_grade,gleason_score,id,split\n\
             {0},m.tiff,radboud,3,4+3,masked0a1b2c,train\n\
             {0},m.tiff,radboud,1,3+3,case.7f.v2,val\n",
            sample_slide().display()
        ),
    );
    let out = dir.path().join("segPANDA200");
    let mut opts = options(&out);
    opts.per_slide = Some(2);
    let r = run(&Task::SegPanda200, &csv, &opts);
    assert_eq!((r.built, r.new_patches), (2, 4), "{:?}", r.failures);
    let index = Index::scan(&out, None).unwrap();
    assert_eq!(index.kind, DatasetKind::SegPanda200);
    assert_eq!(index.entries.len(), 4);
    assert!(index.entries.iter().all(|e| e.mask.is_some()));
    for e in &index.entries {
        let name = e.path.file_name().unwrap().to_string_lossy().into_owned();
        let want = if e.slide == "masked0a1b2c" { "msked0a1b2c_" } else { "case_7f_v2_" };
        assert!(name.starts_with(want), "{name} of slide {}", e.slide);
    }
    let summary = python_check(&out, "segpanda200", None);
    assert_eq!(summary["listed"], 4);
}

#[test]
fn a_build_with_the_old_names_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let csv = gdc_slides(dir.path());
    let out = dir.path().join("PTCGA200");
    let mut opts = options(&out);
    opts.per_slide = Some(2);
    run(&Task::Ptcga200, &csv, &opts);

    // Turn the build into one of an earlier version: dotted names, no slide_file column.
    let record = out.join(format!(".patchtcga/slides/{GDC}.json"));
    let mut rows: Vec<ManifestRow> = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    for r in &mut rows {
        let old = format!("skin/{GDC}_{}_{}.jpg", r.x, r.y);
        std::fs::rename(out.join(&r.file), out.join(&old)).unwrap();
        r.file = old;
        r.slide_file.clear();
    }
    std::fs::write(&record, serde_json::to_vec(&rows).unwrap()).unwrap();
    let stale = Index::scan(&out, None).unwrap();
    assert_eq!(stale.entries.len(), 10, "the release's rule skips the dotted names");
    assert_eq!(stale.problems.len(), 2, "{:?}", stale.problems);
    assert!(stale.problems[0].cause.contains("from the first '.'"), "{}", stale.problems[0].cause);

    let again = run(&Task::Ptcga200, &csv, &opts);
    assert_eq!((again.built, again.skipped, again.renamed), (0, 6, 2));
    let index = Index::scan(&out, None).unwrap();
    assert_eq!(index.entries.len(), 12);
    assert!(index.problems.is_empty());
    python_check(&out, "ptcga200", None);
    // The files' checksums still hold under the new names.
    let v = patchtcga_dataset::archive::verify(&out.join("MD5SUMS"), None, &indicatif::ProgressBar::hidden()).unwrap();
    assert!(v.passed() && v.ok == 12, "{v:?}");
}

#[test]
fn two_slides_that_would_share_a_name_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(
        dir.path(),
        "slides.csv",
        &format!("slide,organ,id\n{0},skin,a.b\n{0},skin,a_b\n", sample_slide().display()),
    );
    let rows = read_slides_csv(&csv).unwrap();
    let e = patchtcga_dataset::build(
        &Task::Ptcga200,
        &rows,
        &options(&dir.path().join("o")),
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("\"a.b\"") && e.contains("\"a_b\"") && e.contains("line 2") && e.contains("line 3"), "{e}");
}

#[test]
fn files_the_release_would_skip_or_misread_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let img = image::RgbImage::new(4, 4);
    let case = root.join("train/3/c1");
    std::fs::create_dir_all(&case).unwrap();
    for name in [
        "ok_0_0.png",
        "ok_0_0_mask.png",
        "dotted.v2_0_0.png",
        "dotted_mask.png",
        "bare_0_0.jpg",
        "x.jpeg",
        "masked_0_0.png",
    ] {
        img.save_with_format(case.join(name), image::ImageFormat::Png).unwrap();
    }
    std::fs::write(case.join("notes.txt"), "not an image").unwrap();
    let e = Index::scan(root, None).unwrap_err().to_string();
    assert!(e.contains("bare_0_0.jpg") && e.contains("bare_0_0_mask.png"), "{e}");
    let index = Index::scan_with(root, None, UnknownFolders::Skip).unwrap();
    let listed: Vec<String> =
        index.entries.iter().map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(listed, ["ok_0_0.png"]);
    let problems: Vec<(String, &str)> = index
        .problems
        .iter()
        .map(|p| (p.path.file_name().unwrap().to_string_lossy().into_owned(), p.cause.as_str()))
        .collect();
    let names: Vec<&str> = problems.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["bare_0_0.jpg", "dotted.v2_0_0.png", "dotted_mask.png", "masked_0_0.png", "x.jpeg"]);
    assert!(problems[1].1.contains("`.v2_0_0.png`"), "{}", problems[1].1);
    assert!(problems[3].1.contains("containing `mask`"), "{}", problems[3].1);
}
