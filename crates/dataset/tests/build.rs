mod common;

use common::*;
use indicatif::ProgressBar;
use patchtcga_dataset::{archive, read_slides_csv, DatasetKind, ImageFormat, Index, Split, Task};

#[test]
fn ptcga200_on_the_sample_slide_matches_openslide_python_and_writes_its_layout() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), "slides.csv", &format!("slide,organ\n{},skin\n", sample_slide().display()));
    let out = dir.path().join("PTCGA200");
    let mut opts = options(&out);
    opts.format = ImageFormat::Png;
    let r = run(&Task::Ptcga200, &csv, &opts);
    assert_eq!((r.built, r.skipped, r.failures.len()), (1, 0, 0), "{:?}", r.failures);
    assert!(r.new_patches >= 8, "{} patches", r.new_patches);

    // The grid cell at (800, 800) is tissue; its pixels are those of openslide-python + Pillow.
    let p = out.join("skin/cmu1_small_region_800_800.png");
    let ours = image::open(&p).unwrap().to_rgb8();
    assert_eq!(ours.dimensions(), (512, 512));
    let db = psnr(&ours, &golden("cmu1_0.39_512_800_800.png"));
    assert!(db > 45.0, "PSNR {db:.1} dB");

    // Index reads the layout back; the manifest and MD5SUMS agree with the files.
    let index = Index::scan(&out, None).unwrap();
    assert_eq!(index.kind, DatasetKind::Ptcga200);
    assert_eq!(index.entries.len(), r.new_patches);
    assert!(index.entries.iter().all(|e| e.label == 15 && e.slide == "cmu1_small_region"));
    let manifest = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
    assert_eq!(manifest.lines().count(), r.new_patches + 1);
    assert!(manifest.lines().nth(1).unwrap().contains(",0.39,"));
    let v = archive::verify(&out.join("MD5SUMS"), None, &ProgressBar::hidden()).unwrap();
    assert!(v.passed() && v.ok == r.new_patches, "{v:?}");
    let map = image::open(out.join("thumbnail_position_map/cmu1_small_region.png")).unwrap();
    assert!(map.width() >= 512);
}

#[test]
fn jpeg_patches_stay_close_to_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), "slides.csv", &format!("slide,organ\n{},skin\n", sample_slide().display()));
    let out = dir.path().join("out");
    run(&Task::Ptcga200, &csv, &options(&out));
    let ours = image::open(out.join("skin/cmu1_small_region_800_800.jpg")).unwrap().to_rgb8();
    let db = psnr(&ours, &golden("cmu1_0.39_512_800_800.png"));
    // 4:2:0 chroma at quality 90 (Pillow's defaults) costs about 31 dB on H&E; a patch read one
    // level-0 pixel off scores below 30 dB even losslessly (see the slide crate's tests).
    assert!(db > 30.5, "PSNR {db:.1} dB at JPEG quality 90");
}

#[test]
fn builds_resume_and_refuse_to_mix_settings() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(
        dir.path(),
        "slides.csv",
        &format!("slide,organ,id\n{0},skin,a\n{0},skin,b\n", sample_slide().display()),
    );
    let out = dir.path().join("out");
    let mut opts = options(&out);
    opts.per_slide = Some(3);
    let first = run(&Task::Ptcga200, &csv, &opts);
    assert_eq!((first.built, first.new_patches), (2, 6));

    let names = |d: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    let before = names(&out.join("skin"));

    // A run killed mid-slide: slide b's record is gone and a half-written file is left over.
    std::fs::remove_file(out.join(".patchtcga/slides/b.json")).unwrap();
    let b_files: Vec<_> = std::fs::read_dir(out.join("skin"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("b_"))
        .collect();
    for f in &b_files {
        std::fs::remove_file(f.path()).unwrap();
    }
    std::fs::write(out.join("skin/.b_1_1.jpg.999.partial"), b"half a jpeg").unwrap();
    assert_eq!(Index::scan(&out, None).unwrap().entries.len(), 3, "loaders never see partial files");

    let second = run(&Task::Ptcga200, &csv, &opts);
    assert_eq!((second.built, second.skipped, second.new_patches, second.total_patches), (1, 1, 3, 6));
    // Same seed, same patches: the resumed slide gets exactly the cells it had.
    assert_eq!(names(&out.join("skin")), before);
    // Each slide draws from its own stream (seed and name), so a and b differ.
    let cells = |p: &str| before.iter().filter(|n| n.starts_with(p)).map(|n| n[2..].to_string()).collect::<Vec<_>>();
    assert_ne!(cells("a_"), cells("b_"));

    opts.per_slide = Some(4);
    let e = patchtcga_dataset::build(&Task::Ptcga200, &read_slides_csv(&csv).unwrap(), &opts, &ProgressBar::hidden())
        .unwrap_err();
    assert!(e.to_string().contains("other settings"), "{e}");
}

#[test]
fn bad_slides_fail_one_by_one_with_the_file_and_cause_named() {
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.tiff");
    write_tiled_tiff(&blank, &image::RgbImage::from_pixel(800, 800, image::Rgb([245, 245, 245])), Some(0.5)).unwrap();
    let csv = write_csv(
        dir.path(),
        "slides.csv",
        &format!(
            "slide,organ,id\n{},skin,good\nmissing.svs,lung,missing\n{},spleen,unknown_organ\n{},lung,unreadable\n{},lung,blank\n",
            sample_slide().display(),
            sample_slide().display(),
            broken_slide("unreadable.svs").display(),
            blank.display()
        ),
    );
    let out = dir.path().join("out");
    let r = run(&Task::Ptcga200, &csv, &options(&out));
    assert_eq!(r.built, 1);
    assert_eq!(r.failures.len(), 4, "{:#?}", r.failures);
    let all = r.failures.join("\n");
    for needle in
        ["missing.svs: no such file", "unknown organ \"spleen\"", "unreadable.svs", "blank.tiff: no tissue found"]
    {
        assert!(all.contains(needle), "no {needle:?} in\n{all}");
    }
    // The good slide is complete and listed.
    assert!(std::fs::read_to_string(out.join("manifest.csv")).unwrap().contains("good_"));
}

#[test]
fn an_unwritable_output_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), "slides.csv", &format!("slide,organ\n{},skin\n", sample_slide().display()));
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("skin"), b"a file where the organ folder should be").unwrap();
    let r = run(&Task::Ptcga200, &csv, &options(&out));
    assert_eq!(r.failures.len(), 1);
    assert!(r.failures[0].contains("/out/skin"), "{}", r.failures[0]);
}

#[test]
fn slide_lists_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let no_col = write_csv(dir.path(), "a.csv", "path,organ\nx.svs,skin\n");
    assert!(read_slides_csv(&no_col).unwrap_err().to_string().contains("no `slide` column"));
    let dup = write_csv(dir.path(), "b.csv", "slide,organ\nx.svs,skin\nother/x.svs,lung\n");
    assert!(read_slides_csv(&dup).unwrap_err().to_string().contains("already used on line 2"));
    let bad_split = write_csv(dir.path(), "c.csv", "slide,split\nx.svs,training\n");
    assert!(read_slides_csv(&bad_split).unwrap_err().to_string().contains("not train, val or test"));
    assert!(read_slides_csv(&dir.path().join("none.csv")).unwrap_err().to_string().contains("none.csv"));
    // Paths are relative to the CSV.
    let rel = write_csv(dir.path(), "d.csv", "slide,organ\nslides/x.svs,skin\n");
    assert_eq!(read_slides_csv(&rel).unwrap()[0].slide, dir.path().join("slides/x.svs"));
    let bad_mpp = write_csv(dir.path(), "e.csv", "slide,organ,mpp\nx.svs,skin,0.25\ny.svs,skin,fine\n");
    assert!(read_slides_csv(&bad_mpp).unwrap_err().to_string().contains("line 3: mpp \"fine\" is not a positive"));
}

#[test]
fn an_mpp_column_serves_slides_that_state_none() {
    let dir = tempfile::tempdir().unwrap();
    let slide = patchtcga_slide::Slide::open(sample_slide(), &Default::default()).unwrap();
    let unmeasured = dir.path().join("unmeasured.tiff");
    write_tiled_tiff(&unmeasured, &slide.read_rgb(0, 0, 0, 2220, 2967).unwrap(), None).unwrap();
    let listed = |mpp: &str| format!("slide,organ,id,mpp\n{},skin,unmeasured,{mpp}\n", unmeasured.display());
    let refused = run(&Task::Ptcga200, &write_csv(dir.path(), "a.csv", &listed("")), &options(&dir.path().join("a")));
    assert_eq!(refused.failures.len(), 1);
    assert!(refused.failures[0].contains("unmeasured.tiff: no µm/px") && refused.failures[0].contains("`mpp` column"));
    // Given the sample's own µm/px in the column, it builds.
    let out = dir.path().join("b");
    let given = run(&Task::Ptcga200, &write_csv(dir.path(), "b.csv", &listed("0.499")), &options(&out));
    assert!(given.failures.is_empty(), "{:?}", given.failures);
    assert!(Index::scan(&out, None).unwrap().entries.len() > 10);
}

const TUMOUR_XML: &str = r#"<?xml version="1.0"?>
<ASAP_Annotations><Annotations>
<Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor" Color="red"><Coordinates>
<Coordinate Order="0" X="700" Y="700" /><Coordinate Order="1" X="1700" Y="700" />
<Coordinate Order="2" X="1700" Y="1700" /><Coordinate Order="3" X="700" Y="1700" />
</Coordinates></Annotation>
</Annotations></ASAP_Annotations>"#;

#[test]
fn pcam200_labels_by_polygon_centre_and_keeps_normal_clear_of_tumour() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tumor_001.xml"), TUMOUR_XML).unwrap();
    let csv = write_csv(
        dir.path(),
        "slides.csv",
        &format!(
            "slide,annotation,id,case,split\n{0},tumor_001.xml,tumor_001,patient_1,train\n{0},,normal_001,patient_2,test\n",
            sample_slide().display()
        ),
    );
    let out = dir.path().join("PCam200");
    let task = Task::Pcam200 { groups: Default::default(), tumor_threshold: 0.5, centre: 0.5 };
    let r = run(&task, &csv, &options(&out));
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let index = Index::scan(&out, None).unwrap();
    assert_eq!(index.kind, DatasetKind::Pcam200);
    let fw = 512.0 * 0.39 / 0.499;
    let mut tumour = 0;
    for e in &index.entries {
        let name = e.path.file_stem().unwrap().to_string_lossy().into_owned();
        let parts: Vec<f64> = name.rsplitn(3, '_').take(2).map(|s| s.parse().unwrap()).collect();
        let (x, y) = (parts[1], parts[0]);
        let (cx, cy) = (x + fw / 2.0, y + fw / 2.0);
        let inside = |px: f64, py: f64| (700.0..=1700.0).contains(&px) && (700.0..=1700.0).contains(&py);
        if e.label == 1 {
            tumour += 1;
            assert_eq!(e.path.parent().unwrap(), std::path::Path::new("train/tumor/patient_1"));
            assert!(inside(cx, cy), "tumour patch centre ({cx}, {cy}) outside the polygon");
        } else {
            let overlaps = x < 1700.0 && x + fw > 700.0 && y < 1700.0 && y + fw > 700.0;
            assert!(e.slide == "normal_001" || !overlaps, "normal patch {name} touches tumour");
        }
    }
    assert!(tumour >= 2, "{tumour} tumour patches");
    assert!(index.entries.iter().any(|e| e.path.starts_with("test/normal/patient_2")));
    assert!(index.entries.iter().any(|e| e.path.starts_with("train/normal/patient_1")));

    let bad = write_csv(dir.path(), "bad.csv", &format!("slide,annotation\n{},gone.xml\n", sample_slide().display()));
    let r = run(&task, &bad, &options(&dir.path().join("other")));
    assert!(r.failures[0].contains("gone.xml: no such file"), "{:?}", r.failures);
}

/// TUMOUR_XML's region as QuPath exports it (a bare array of features, with a classless
/// "Ignore*" exclusion elsewhere and a cell detection that must not count).
const TUMOUR_GEOJSON: &str = r#"[
 {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[700, 700], [1700, 700], [1700, 1700], [700, 1700], [700, 700]]]},
  "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
 {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[100, 100], [200, 100], [200, 200], [100, 100]]]},
  "properties": {"objectType": "annotation", "classification": {"name": "Ignore*"}}},
 {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2200, 0], [2200, 2900], [0, 0]]]},
  "properties": {"objectType": "cell", "classification": {"name": "Tumor"}}}]"#;

#[test]
fn pcam200_from_a_qupath_geojson_equals_its_asap_xml_twin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.xml"), TUMOUR_XML).unwrap();
    std::fs::write(dir.path().join("t.geojson"), TUMOUR_GEOJSON).unwrap();
    let task = Task::Pcam200 { groups: Default::default(), tumor_threshold: 0.5, centre: 0.5 };
    let manifest = |annotation: &str| {
        let slides =
            format!("slide,annotation,id,case,split\n{},{annotation},tumor_001,p1,train\n", sample_slide().display());
        let csv = write_csv(dir.path(), &format!("{annotation}.csv"), &slides);
        let out = dir.path().join(format!("out_{annotation}"));
        let r = run(&task, &csv, &options(&out));
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        std::fs::read_to_string(out.join("manifest.csv")).unwrap()
    };
    let (xml, json) = (manifest("t.xml"), manifest("t.geojson"));
    assert!(xml.contains("/tumor/"), "the twin gives tumour patches");
    assert_eq!(xml, json);
}

#[test]
fn segpanda200_writes_masks_beside_images_with_mapped_classes() {
    let dir = tempfile::tempdir().unwrap();
    // A Radboud-style mask over the sample slide: horizontal bands of classes 0..5, 500 px each.
    let (w, h) = (2220, 2967);
    let mask = image::RgbImage::from_fn(w, h, |_, y| image::Rgb([((y / 500) % 6) as u8, 0, 0]));
    write_tiled_tiff(&dir.path().join("mask.tiff"), &mask, None).unwrap();
    let small = image::RgbImage::from_pixel(100, 100, image::Rgb([0, 0, 0]));
    write_tiled_tiff(&dir.path().join("small_mask.tiff"), &small, None).unwrap();
    let karolinska = image::RgbImage::from_pixel(w, h, image::Rgb([2, 0, 0]));
    write_tiled_tiff(&dir.path().join("k_mask.tiff"), &karolinska, None).unwrap();
    let csv = write_csv(
        dir.path(),
        "train.csv",
        &format!(
            "slide,mask,data_provider,isup_grade,gleason_score,id,split\n\
             {0},mask.tiff,radboud,3,4+3,r1,train\n\
             {0},small_mask.tiff,radboud,0,0+0,wrong_size,train\n\
             {0},k_mask.tiff,karolinska,2,negative,k_negative,train\n\
             {0},k_mask.tiff,karolinska,2,4+3,k_graded,val\n\
             {0},nothing.tiff,radboud,1,3+3,no_mask,train\n",
            sample_slide().display()
        ),
    );
    let out = dir.path().join("segPANDA200");
    let mut opts = options(&out);
    opts.per_slide = Some(4);
    let r = run(&Task::SegPanda200, &csv, &opts);
    let all = r.failures.join("\n");
    assert_eq!(r.failures.len(), 3, "{all}");
    assert!(all.contains("small_mask.tiff: label mask is (100, 100) px"), "{all}");
    assert!(all.contains("k_mask.tiff") && all.contains("no gleason_score"), "{all}");
    assert!(all.contains("nothing.tiff: no such file"), "{all}");

    let index = Index::scan(&out, None).unwrap();
    assert_eq!(index.kind, DatasetKind::SegPanda200);
    assert_eq!(index.entries.len(), 8);
    let scale = 0.39 / 0.499;
    for e in &index.entries {
        let m = image::open(out.join(e.mask.as_ref().unwrap())).unwrap().to_rgb8();
        assert_eq!(m.dimensions(), (512, 512));
        let name = e.path.file_stem().unwrap().to_string_lossy().into_owned();
        let y0: f64 = name.rsplit('_').next().unwrap().parse().unwrap();
        if e.slide == "k_graded" {
            assert!(e.path.starts_with("val/2/k_graded"));
            assert!(m.pixels().all(|p| p.0 == [4, 0, 0]), "Karolinska cancer → primary Gleason 4");
        } else {
            assert!(e.path.starts_with("train/3/r1"));
            for j in (0..512).step_by(37) {
                let y = y0 + (j as f64 + 0.5) * scale;
                let want = ((y / 500.0).floor() as u8) % 6;
                let got = m.get_pixel(100, j).0[0];
                // Nearest-neighbour may land on either side of a band edge.
                let near_edge = (y % 500.0) < 1.0 || (y % 500.0) > 499.0;
                assert!(got == want || near_edge, "row {j}: class {got}, expected {want}");
            }
        }
    }
}

#[test]
fn split_assignment_keeps_cases_together_and_follows_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("slide,annotation,id,case\n");
    for i in 0..10 {
        text.push_str(&format!("{},,s{i},case{}\n", sample_slide().display(), i / 2));
    }
    let csv = write_csv(dir.path(), "slides.csv", &text);
    let out = dir.path().join("out");
    let mut opts = options(&out);
    opts.per_slide = Some(1);
    opts.val_fraction = 0.2;
    opts.test_fraction = 0.2;
    let task = Task::Pcam200 { groups: Default::default(), tumor_threshold: 0.5, centre: 0.5 };
    let r = run(&task, &csv, &opts);
    assert!(r.failures.is_empty());
    let index = Index::scan(&out, None).unwrap();
    let mut split_of = std::collections::HashMap::new();
    for e in &index.entries {
        let prev = split_of.insert(e.case.clone(), e.split);
        assert!(prev.is_none() || prev == Some(e.split), "case {} in two splits", e.case);
    }
    let count = |s: Split| split_of.values().filter(|v| **v == Some(s)).count();
    assert_eq!((count(Split::Train), count(Split::Val), count(Split::Test)), (3, 1, 1));
}

#[test]
fn the_same_seed_gives_the_same_dataset_whatever_the_number_of_workers() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(
        dir.path(),
        "slides.csv",
        &format!("slide,organ,id\n{0},skin,a\n{0},lung,b\n", sample_slide().display()),
    );
    let build_with = |threads: usize, sampling| {
        let out = dir.path().join(format!("out{threads}{sampling:?}"));
        let mut opts = options(&out);
        opts.per_slide = Some(5);
        opts.sampler.sampling = sampling;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| run(&Task::Ptcga200, &csv, &opts));
        std::fs::read_to_string(out.join("MD5SUMS")).unwrap()
    };
    for sampling in [patchtcga_slide::Sampling::Grid, patchtcga_slide::Sampling::Random] {
        let one = build_with(1, sampling);
        assert_eq!(one.lines().count(), 10);
        assert_eq!(one, build_with(3, sampling), "{sampling:?}");
    }
}

/// `--stain-normalize`: every patch written is the normaliser's output on the patch read, patches
/// too poor in stain are written as read and counted, and a dataset is never resumed with other
/// stain settings.
#[test]
fn stain_normalised_builds_write_the_normalisers_patches() {
    use patchtcga_augment::{Normalized, StainMethod, StainNormalizer};
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), "slides.csv", &format!("slide,organ\n{},skin\n", sample_slide().display()));
    let target = image::open(patchtcga_testkit::repo_root().join("crates/augment/tests/golden/stain_target.png"))
        .unwrap()
        .to_rgb8();
    let plain_out = dir.path().join("plain");
    let mut opts = options(&plain_out);
    opts.format = ImageFormat::Png;
    run(&Task::Ptcga200, &csv, &opts);
    for method in [StainMethod::Macenko, StainMethod::Reinhard, StainMethod::Vahadane] {
        let out = dir.path().join(format!("{method:?}"));
        let stain = StainNormalizer::fit(method, &target).unwrap();
        let mut stained = options(&out);
        stained.format = ImageFormat::Png;
        stained.stain = Some(stain);
        let r = run(&Task::Ptcga200, &csv, &stained);
        assert!(r.failures.is_empty() && r.new_patches >= 8, "{r:?}");
        let mut changed = 0;
        for e in std::fs::read_dir(out.join("skin")).unwrap() {
            let name = e.unwrap().file_name();
            let ours = image::open(out.join("skin").join(&name)).unwrap().to_rgb8();
            let read = image::open(plain_out.join("skin").join(&name)).unwrap().to_rgb8();
            let want = match stain.normalize(&read) {
                Normalized::Image(i) => i,
                Normalized::Unchanged => read.clone(),
            };
            assert!(ours == want, "{method:?} {name:?}: not the normaliser's output");
            changed += usize::from(ours != read);
        }
        assert!(changed > 0, "{method:?} changed no patch");
        let qc = std::fs::read_to_string(out.join("qc.csv")).unwrap();
        assert!(qc.lines().next().unwrap().ends_with(",stain_unchanged"), "{qc}");
        // The same folder without the normaliser (or with another) is refused.
        let e = patchtcga_dataset::build(
            &Task::Ptcga200,
            &read_slides_csv(&csv).unwrap(),
            &options(&out),
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("other settings") && e.contains("stain"), "{e}");
    }
}

/// A `roi` column keeps a slide's patches inside its QuPath region; a region with no tissue
/// fails that slide in words.
#[test]
fn a_roi_column_keeps_patches_inside_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let region = |x1: u32, y1: u32| {
        format!(
            r#"[{{"type": "Feature", "properties": {{"objectType": "annotation", "classification": {{"name": "Region*"}}}},
                 "geometry": {{"type": "Polygon", "coordinates": [[[0, 0], [{x1}, 0], [{x1}, {y1}], [0, {y1}], [0, 0]]]}}}}]"#
        )
    };
    std::fs::write(dir.path().join("half.geojson"), region(1110, 2967)).unwrap();
    std::fs::write(dir.path().join("corner.geojson"), region(150, 150)).unwrap();
    let s = sample_slide();
    let csv = write_csv(
        dir.path(),
        "slides.csv",
        &format!(
            "slide,organ,id,roi\n{0},skin,whole,\n{0},skin,half,half.geojson\n{0},skin,glass,corner.geojson\n",
            s.display()
        ),
    );
    let out = dir.path().join("out");
    let mut opts = options(&out);
    opts.geometry = patchtcga_slide::PatchGeometry { mpp: 0.499, size: 128 };
    let r = run(&Task::Ptcga200, &csv, &opts);
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    assert!(r.failures[0].contains("no tissue found inside the region of interest"), "{:?}", r.failures);
    let manifest = patchtcga_dataset::read_manifest(&out.join("manifest.csv")).unwrap();
    let of = |id: &str| manifest.iter().filter(|m| m.slide == id).map(|m| (m.x, m.y)).collect::<Vec<_>>();
    let (whole, half) = (of("whole"), of("half"));
    assert!(!half.is_empty() && half.len() < whole.len(), "{} of {}", half.len(), whole.len());
    assert!(half.iter().all(|&(x, _)| x + 64 <= 1110 + 16), "a patch centre outside the region: {half:?}");
    assert!(whole.iter().any(|&(x, _)| x > 1110), "the whole slide has tissue right of the region");
}

/// A fraction flag outside [0, 1] is refused before anything runs, naming the flag.
#[test]
fn fractions_out_of_range_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), "slides.csv", &format!("slide,organ\n{},skin\n", sample_slide().display()));
    let mut opts = options(&dir.path().join("out"));
    opts.tissue.max_ink = 1.5;
    let e = patchtcga_dataset::build(&Task::Ptcga200, &read_slides_csv(&csv).unwrap(), &opts, &ProgressBar::hidden())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "--max-ink must be in [0, 1], got 1.5");
}
