use std::path::PathBuf;

use image::{imageops, RgbImage};
use patchtcga_slide::*;
use patchtcga_testkit::{sample_slide, write_tiled_tiff};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn golden(name: &str) -> RgbImage {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).to_rgb8()
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let mse = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>()
        / a.as_raw().len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

#[test]
fn sample_slide_resolution_comes_from_openslide() {
    let s = Slide::open(sample_slide(), &SlideOptions::default()).unwrap();
    assert_eq!(s.dimensions(), (2220, 2967));
    let mpp = s.mpp();
    assert_eq!(mpp.source, MppSource::Vendor);
    assert!((mpp.x - 0.499).abs() < 1e-9 && (mpp.y - 0.499).abs() < 1e-9);
}

#[test]
fn patches_match_openslide_python_and_pillow() {
    let s = Slide::open(sample_slide(), &SlideOptions::default()).unwrap();
    let g = PatchGeometry::default();
    for (x, y) in [(800, 800), (1203, 1611), (0, 1000)] {
        let ours = s.read_patch(&g, x, y).unwrap();
        assert_eq!(ours.dimensions(), (512, 512));
        let reference = golden(&format!("cmu1_0.39_512_{x}_{y}.png"));
        let p = psnr(&ours, &reference);
        assert!(p > 45.0, "patch at ({x}, {y}): PSNR {p:.1} dB against openslide-python + Pillow");
    }
}

#[test]
fn coarser_target_reads_the_level_just_finer_and_matches_pillow() {
    let s = Slide::open(data("boxes.tiff"), &SlideOptions::with_mpp(Some(1.0))).unwrap();
    assert_eq!(s.level_count(), 4);
    assert_eq!(s.level_for_downsample(2.5), 1);
    assert_eq!(s.level_for_downsample(2.0), 1);
    assert_eq!(s.level_for_downsample(1.99), 0);
    assert_eq!(s.level_for_downsample(100.0), 3);
    let g = PatchGeometry { mpp: 2.5, size: 64 };
    let ours = s.read_patch(&g, 20, 30).unwrap();
    let p = psnr(&ours, &golden("boxes_2.5_64_20_30.png"));
    assert!(p > 40.0, "PSNR {p:.1} dB");
}

#[test]
fn a_shift_of_one_output_pixel_is_visible_to_the_psnr_check() {
    // Guards the check above: a misplaced read must fail it.
    let s = Slide::open(sample_slide(), &SlideOptions::default()).unwrap();
    let g = PatchGeometry::default();
    let shifted = s.read_patch(&g, 801, 800).unwrap();
    assert!(psnr(&shifted, &golden("cmu1_0.39_512_800_800.png")) < 30.0);
}

fn derived_tiff(mpp: Option<f64>, dir: &tempfile::TempDir, name: &str) -> PathBuf {
    let s = Slide::open(sample_slide(), &SlideOptions::default()).unwrap();
    let img = s.read_rgb(0, 600, 900, 700, 600).unwrap();
    let p = dir.path().join(name);
    write_tiled_tiff(&p, &img, mpp).unwrap();
    p
}

#[test]
fn generic_tiff_falls_back_to_resolution_tags() {
    let dir = tempfile::tempdir().unwrap();
    let p = derived_tiff(Some(0.25), &dir, "with_res.tiff");
    let s = Slide::open(&p, &SlideOptions::default()).unwrap();
    assert_eq!(s.dimensions(), (700, 600));
    assert_eq!(s.mpp().source, MppSource::TiffResolution);
    assert!((s.mpp().x - 0.25).abs() < 1e-6, "{:?}", s.mpp());
    let o = Slide::open(&p, &SlideOptions::with_mpp(Some(0.5))).unwrap();
    assert_eq!(o.mpp().source, MppSource::Override);
    assert_eq!(o.mpp().x, 0.5);
}

#[test]
fn a_slide_without_resolution_names_the_override_flag() {
    let dir = tempfile::tempdir().unwrap();
    let p = derived_tiff(None, &dir, "no_res.tiff");
    let e = Slide::open(&p, &SlideOptions::default()).unwrap_err();
    assert!(matches!(e, SlideError::NoMpp { .. }));
    let msg = e.to_string();
    assert!(msg.contains("no_res.tiff") && msg.contains("--mpp-override"), "{msg}");
    assert!(msg.contains("`mpp` column"), "{msg}");
    assert!(Slide::open(&p, &SlideOptions::with_mpp(Some(0.5))).is_ok());
    assert!(Slide::open(&p, &SlideOptions::with_mpp(Some(500.0))).is_err(), "implausible overrides are refused");
    // Opened for viewing, it reads pixels and says its µm/px is missing.
    let viewed = Slide::open_unmeasured(&p, &SlideOptions::default()).unwrap();
    assert_eq!(viewed.mpp().source, MppSource::Missing);
    assert!(matches!(viewed.measured_mpp(), Err(SlideError::NoMpp { .. })));
    assert_eq!(viewed.read_rgb(0, 0, 0, 2, 2).unwrap().dimensions(), (2, 2));
    assert!(!viewed.properties().contains_key("openslide.mpp-x"));
    // A slide list's `mpp` column goes over --mpp-override.
    let column = SlideOptions::with_mpp(Some(0.5)).for_slide(Some(0.3));
    assert_eq!(Slide::open(&p, &column).unwrap().mpp().x, 0.3);
    assert_eq!(SlideOptions::with_mpp(Some(0.5)).for_slide(None).mpp_override, Some(0.5));
}

#[test]
fn broken_slides_give_one_clear_error() {
    for (name, cause) in [("unopenable.tiff", "compression"), ("unreadable.svs", "")] {
        let e = Slide::open(data(name), &SlideOptions::with_mpp(Some(0.5))).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(name) && msg.contains(cause), "{msg}");
    }
    let e = Slide::open(data("does-not-exist.svs"), &SlideOptions::default()).unwrap_err();
    assert!(matches!(e, SlideError::Missing { .. }), "{e}");

    // A download cut short: the first half of the sample slide.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(sample_slide()).unwrap();
    let cut = dir.path().join("truncated.svs");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let outcome = Slide::open(&cut, &SlideOptions::default()).and_then(|s| {
        let (w, h) = s.dimensions();
        s.read_rgb(0, 0, 0, w, h).map(|_| ())
    });
    let msg = outcome.unwrap_err().to_string();
    assert!(msg.contains("truncated.svs"), "{msg}");
}

#[test]
fn tissue_mask_finds_the_tissue_and_not_the_glass() {
    let s = Slide::open(sample_slide(), &SlideOptions::default()).unwrap();
    let m = TissueMask::detect(&s, &TissueParams::default()).unwrap();
    let f = m.tissue_fraction();
    assert!((0.2..0.5).contains(&f), "tissue fraction {f}");
    // The top-left corner is glass; the centre of the strip is tissue (see the overview).
    assert_eq!(m.fraction(0.0, 0.0, 400.0, 400.0), 0.0);
    assert!(m.fraction(900.0, 1200.0, 400.0, 400.0) > 0.9);
    // Outside the slide counts as background.
    assert_eq!(m.fraction(5000.0, 5000.0, 400.0, 400.0), 0.0);
    // Agreement with the pixels: patches the mask calls tissue are mostly not glass.
    let g = PatchGeometry::default();
    let p = s.read_patch(&g, 900, 1200).unwrap();
    assert!(background_fraction(&p) < 0.3);

    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.tiff");
    write_tiled_tiff(&blank, &RgbImage::from_pixel(600, 500, image::Rgb([242, 240, 244])), Some(0.5)).unwrap();
    let b = Slide::open(&blank, &SlideOptions::default()).unwrap();
    assert_eq!(TissueMask::detect(&b, &TissueParams::default()).unwrap().tissue_fraction(), 0.0);
}

#[test]
fn quality_check_rejects_glass_and_blur() {
    let s = Slide::open(sample_slide(), &SlideOptions::default()).unwrap();
    let g = PatchGeometry::default();
    let q = QualityCheck::default();
    let tissue = s.read_patch(&g, 900, 1200).unwrap();
    assert_eq!(q.judge(&tissue), QualityVerdict::Keep);
    assert!(matches!(q.judge(&s.read_patch(&g, 0, 0).unwrap()), QualityVerdict::Blank(f) if f > 0.9));
    let blurred = imageops::blur(&tissue, 6.0);
    assert!(matches!(q.judge(&blurred), QualityVerdict::Blurred(v) if v < q.min_sharpness));
}

#[test]
fn sampling_is_deterministic_and_respects_the_tissue() {
    let s = Slide::open(sample_slide(), &SlideOptions::default()).unwrap();
    let m = TissueMask::detect(&s, &TissueParams::default()).unwrap();
    let g = PatchGeometry::default();
    let fp = s.footprint(&g);
    let sampler = |sampling, seed| Sampler { sampling, min_tissue: 0.5, seed };
    let a = sampler(Sampling::Grid, 1).candidates("cmu1", s.dimensions(), fp, &m, None).unwrap().kept;
    let b = sampler(Sampling::Grid, 1).candidates("cmu1", s.dimensions(), fp, &m, None).unwrap().kept;
    let c = sampler(Sampling::Grid, 2).candidates("cmu1", s.dimensions(), fp, &m, None).unwrap().kept;
    assert_eq!(a, b);
    assert_ne!(a, c, "another seed gives another order");
    assert!(a.len() >= 5 && a.len() <= 35, "{} grid cells", a.len());
    for c in &a {
        assert!(c.tissue >= 0.5);
        assert!(((c.x as f64) / fp.0).fract().abs() < 1e-2 || ((c.x as f64) / fp.0).fract() > 0.99, "grid-aligned x");
    }
    let r = sampler(Sampling::Random, 3).candidates("cmu1", s.dimensions(), fp, &m, Some(10)).unwrap().kept;
    assert!(r.len() >= 10);
    assert!(r.iter().all(|c| c.tissue >= 0.5 && c.x as f64 + fp.0 <= 2220.0 + 0.5));
    assert_eq!(r, sampler(Sampling::Random, 3).candidates("cmu1", s.dimensions(), fp, &m, Some(10)).unwrap().kept);
    assert!(sampler(Sampling::Random, 3).candidates("cmu1", s.dimensions(), fp, &m, None).is_err());
}

const XML: &str = r##"<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="100" Y="100" />
        <Coordinate Order="1" X="1100" Y="100" />
        <Coordinate Order="2" X="1100" Y="1100" />
        <Coordinate Order="3" X="100.0" Y="1100" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="_2" Color="#64FE2E">
      <Coordinates>
        <Coordinate Order="0" X="500" Y="500" />
        <Coordinate Order="1" X="700" Y="500" />
        <Coordinate Order="2" X="700" Y="700" />
        <Coordinate Order="3" X="500" Y="700" />
      </Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="Tumor" PartOfGroup="None" Color="#00ff00"><Attributes /></Group>
  </AnnotationGroups>
</ASAP_Annotations>"##;

/// The frame of a 2000 × 2000 px slide without bounds.
const FRAME: AnnotationFrame = AnnotationFrame { dims: (2000, 2000), qupath_offset: (0.0, 0.0) };

/// The XML's two polygons as QuPath exports them: the exclusion as a hole of the tumour region.
const GEOJSON: &str = r#"{"type": "FeatureCollection", "features": [
  {"type": "Feature", "id": "a1",
   "geometry": {"type": "Polygon", "coordinates": [[[100, 100], [1100, 100], [1100, 1100], [100, 1100], [100, 100]],
                                                  [[500, 500], [700, 500], [700, 700], [500, 700], [500, 500]]]},
   "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}}]}"#;

#[test]
fn camelyon_annotations_mark_tumour_minus_exclusions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tumor_001.xml");
    std::fs::write(&p, XML).unwrap();
    let a = Annotations::load(&p, &AnnotationGroups::default(), &FRAME).unwrap();
    assert_eq!(a.tumor_polygons(), 1);
    assert!(a.is_tumor(200.0, 200.0));
    assert!(!a.is_tumor(600.0, 600.0), "inside the _2 exclusion");
    assert!(!a.is_tumor(50.0, 50.0));
    assert_eq!(a.tumor_fraction(200.0, 200.0, 200.0, 200.0, 8), 1.0);
    let half = a.tumor_fraction(1000.0, 200.0, 200.0, 200.0, 8);
    assert!((half - 0.5).abs() < 1e-9, "{half}");
    assert!(a.touches_tumor(1050.0, 1050.0, 400.0, 400.0));
    assert!(!a.touches_tumor(1200.0, 1200.0, 400.0, 400.0));

    let renamed = dir.path().join("renamed.xml");
    std::fs::write(&renamed, XML.replace("\"Tumor\" Color=\"#F4FA58\"", "\"Carcinoma\" Color=\"#F4FA58\"")).unwrap();
    let msg = Annotations::load(&renamed, &AnnotationGroups::default(), &FRAME).unwrap_err().to_string();
    assert!(msg.contains("renamed.xml") && msg.contains("Carcinoma") && msg.contains("--tumor-groups"), "{msg}");

    let broken = dir.path().join("broken.xml");
    std::fs::write(&broken, XML[..XML.len() / 2].replace("Y=\"1100\" />", "Y=\"11x0\" />")).unwrap();
    let msg = Annotations::load(&broken, &AnnotationGroups::default(), &FRAME).unwrap_err().to_string();
    assert!(msg.contains("broken.xml"), "{msg}");
    assert!(matches!(
        Annotations::load(dir.path().join("missing.xml"), &AnnotationGroups::default(), &FRAME),
        Err(SlideError::Missing { .. })
    ));
}

#[test]
fn qupath_geojson_marks_what_its_asap_twin_marks() {
    let dir = tempfile::tempdir().unwrap();
    let (xml, json) = (dir.path().join("t.xml"), dir.path().join("t.geojson"));
    std::fs::write(&xml, XML).unwrap();
    std::fs::write(&json, GEOJSON).unwrap();
    let groups = AnnotationGroups::default();
    let (a, b) =
        (Annotations::load(&xml, &groups, &FRAME).unwrap(), Annotations::load(&json, &groups, &FRAME).unwrap());
    for y in (0..1300).step_by(37) {
        for x in (0..1300).step_by(41) {
            assert_eq!(a.is_tumor(x as f64, y as f64), b.is_tumor(x as f64, y as f64), "({x}, {y})");
        }
    }
    // QuPath's coordinates start at the slide's bounds: moved back to level 0.
    let bounded = AnnotationFrame { qupath_offset: (300.0, 50.0), ..FRAME };
    let c = Annotations::load(&json, &groups, &bounded).unwrap();
    assert!(c.is_tumor(1350.0, 1100.0) && !c.is_tumor(150.0, 200.0) && !c.is_tumor(900.0, 650.0));
}

#[test]
fn annotation_files_that_yield_no_region_or_do_not_fit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let groups = AnnotationGroups::default();
    let load = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let msg = Annotations::load(&p, &groups, &FRAME).unwrap_err().to_string();
        assert!(msg.contains(name), "{msg}");
        msg
    };
    // The bug of old: a GeoJSON file read as XML with no polygons, every patch 'normal'.
    let empty = r#"{"type": "FeatureCollection", "features": []}"#;
    assert!(load("empty.geojson", empty).contains("no region"));
    assert!(load("empty.xml", "<ASAP_Annotations><Annotations /></ASAP_Annotations>").contains("no region"));
    assert!(load("notes.txt", "tumour at the top left").contains("neither ASAP/Camelyon XML nor QuPath GeoJSON"));
    assert!(load("cut.geojson", "{\"type\": \"FeatureCollection\", \"features\": [").contains("not valid JSON"));
    let line = r#"[{"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [9, 9]]}, "properties": {}}]"#;
    assert!(load("line.geojson", line).contains("LineString"));
    let bowtie = GEOJSON.replace("[1100, 100], [1100, 1100]", "[1100, 1100], [1100, 100]");
    assert!(load("bowtie.geojson", &bowtie).contains("not a valid polygon"));
    let stroma = GEOJSON.replace("\"Tumor\"", "\"Stroma\"");
    let msg = load("stroma.geojson", &stroma);
    assert!(msg.contains("Stroma") && msg.contains("--tumor-groups"), "{msg}");
    let unclassified =
        GEOJSON.replace(r#""classification": {"name": "Tumor", "color": [200, 0, 0]}"#, r#""name": "r1""#);
    assert!(load("unclassified.geojson", &unclassified).contains("\"Unclassified\""));
    let far = GEOJSON.replace("[1100, 1100]", "[1100, 9100]");
    assert!(load("far.geojson", &far).contains("outside the 2000 × 2000 px slide"));
}

#[test]
fn label_patches_are_nearest_neighbour_and_keep_class_ids() {
    // A label mask with vertical stripes of classes 0..5 at 0.25 µm/px, read at 0.39 µm/px.
    let dir = tempfile::tempdir().unwrap();
    let mask = RgbImage::from_fn(600, 600, |x, _| image::Rgb([(x / 100) as u8, 0, 0]));
    let p = dir.path().join("mask.tiff");
    write_tiled_tiff(&p, &mask, Some(0.25)).unwrap();
    let s = Slide::open(&p, &SlideOptions::default()).unwrap();
    let g = PatchGeometry { mpp: 0.39, size: 384 };
    let labels = s.read_label_patch(&g, 0, 0).unwrap();
    let mut seen = [false; 6];
    for px in labels.pixels() {
        assert!(px.0[0] <= 5, "an interpolated value {}", px.0[0]);
        seen[px.0[0] as usize] = true;
    }
    assert_eq!(seen, [true; 6], "every class survives resampling");
    // Column 200 of the patch is level-0 x = 200 × 0.39 / 0.25 = 312 → class 3.
    assert_eq!(labels.get_pixel(200, 10).0[0], 3);
    // Past the edge of the mask the label is background (0), never the glass colour.
    let edge = s.read_label_patch(&g, 300, 0).unwrap();
    assert_eq!(edge.get_pixel(383, 0).0[0], 0);
    assert_eq!(edge.get_pixel(10, 0).0[0], 3);
}

#[test]
fn geometry_resolves_from_any_two_of_mpp_size_field() {
    let g = PatchGeometry::resolve(None, None, None).unwrap();
    assert_eq!((g.mpp, g.size), (0.39, 512));
    assert!((g.field_um() - 199.68).abs() < 1e-9);
    assert_eq!(PatchGeometry::resolve(None, None, Some(100.0)).unwrap().size, 256);
    let g = PatchGeometry::resolve(None, Some(224), Some(112.0)).unwrap();
    assert!((g.mpp - 0.5).abs() < 1e-12);
    assert!(PatchGeometry::resolve(Some(0.5), Some(224), Some(200.0)).is_err());
    assert!(PatchGeometry::resolve(Some(-1.0), None, None).is_err());
}
