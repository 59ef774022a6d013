//! DICOM VL Whole Slide Microscopy series: levels, frames (JPEG and native, TILED_FULL and TILED_SPARSE), pixel spacing, label and UIDs as the series states them; a damaged series is one error, never a panic.

use std::path::Path;

use image::RgbImage;
use patchtcga_testkit::{sample_slide, Coding, DicomSpec, TiffSpec, SERIES_UID, STUDY_UID};
use patchtcga_tiff::{Flavour, TiffSlide};
use proptest::prelude::*;

/// 700×500 px of the sample slide's tissue.
fn tissue() -> RgbImage {
    let svs = TiffSlide::open(&sample_slide(), 0).unwrap();
    svs.read(0, 8, 900, 1200, 700, 500, [255; 3]).unwrap()
}

/// Every pixel of every level, with a 9 px margin outside it.
fn read_all(slide: &TiffSlide) -> Vec<RgbImage> {
    let levels = slide.levels().iter().enumerate();
    levels.map(|(i, l)| slide.read(i, 8, -9, -9, l.width + 18, l.height + 18, [255; 3]).unwrap()).collect()
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| x.abs_diff(y) as u64).sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn jpeg_frames_read_as_the_same_tiles_in_a_tiled_tiff() {
    let dir = tempfile::tempdir().unwrap();
    let image = tissue();
    for ycbcr in [true, false] {
        let coding = Coding::Jpeg { ycbcr, shared_tables: false };
        let series = dir.path().join(format!("series-{ycbcr}"));
        DicomSpec { tile: 128, coding, levels: 3, label: true, ..DicomSpec::default() }.write(&series, &image).unwrap();
        let tiff = dir.path().join(format!("same-tiles-{ycbcr}.tiff"));
        TiffSpec { tile: 128, coding, levels: 3, ..TiffSpec::default() }.write(&tiff, &image).unwrap();
        let (dicom, tiff) = (TiffSlide::open(&series, 1 << 24).unwrap(), TiffSlide::open(&tiff, 1 << 24).unwrap());
        assert_eq!(dicom.flavour(), Flavour::Dicom);
        let sizes = |s: &TiffSlide| s.levels().iter().map(|l| (l.width, l.height)).collect::<Vec<_>>();
        assert_eq!(sizes(&dicom), vec![(700, 500), (350, 250), (175, 125)]);
        assert_eq!(sizes(&dicom), sizes(&tiff));
        assert!(read_all(&dicom) == read_all(&tiff), "ycbcr {ycbcr}: DICOM frames decode unlike the same TIFF tiles");
        // Scaled (DCT) decoding of the frames, as the patch reader asks for it.
        for eighths in [4, 2] {
            let (a, b) =
                (dicom.read(0, eighths, 3, 5, 200, 100, [255; 3]), tiff.read(0, eighths, 3, 5, 200, 100, [255; 3]));
            assert!(a.unwrap() == b.unwrap());
        }
    }
}

#[test]
fn native_frames_hold_the_image_exactly_and_any_file_opens_the_series() {
    let dir = tempfile::tempdir().unwrap();
    let image = tissue();
    let files =
        DicomSpec { tile: 96, levels: 2, mpp: Some(0.25), ..DicomSpec::default() }.write(dir.path(), &image).unwrap();
    for opened in [dir.path(), files[1].as_path()] {
        let s = TiffSlide::open(opened, 0).unwrap();
        assert_eq!(s.levels().len(), 2, "{}", opened.display());
        assert!(s.read(0, 8, 0, 0, 700, 500, [255; 3]).unwrap() == image);
        let (x, y) = s.dicom_mpp().unwrap();
        assert!((x - 0.25).abs() < 1e-9 && (y - 0.25).abs() < 1e-9, "{x} {y}");
        assert_eq!(s.dicom_uids(), Some((STUDY_UID, SERIES_UID)));
        assert_eq!(s.downsample(1), 2.0);
    }
}

#[test]
fn a_sparse_series_places_frames_by_position_and_reads_missing_ones_as_background() {
    let dir = tempfile::tempdir().unwrap();
    let image = tissue();
    DicomSpec { tile: 128, sparse: true, ..DicomSpec::default() }.write(dir.path(), &image).unwrap();
    let s = TiffSlide::open(dir.path(), 0).unwrap();
    let read = s.read(0, 8, 0, 0, 700, 500, [255; 3]).unwrap();
    // The last frame (column 5, row 3: x ≥ 640, y ≥ 384) is left out of the file.
    let missing = |x: u32, y: u32| x >= 640 && y >= 384;
    for (x, y, p) in read.enumerate_pixels() {
        let want = if missing(x, y) { image::Rgb([255; 3]) } else { *image.get_pixel(x, y) };
        assert_eq!(*p, want, "pixel ({x}, {y})");
    }
}

#[test]
fn a_level_in_two_instances_reads_whole_as_a_concatenation_or_as_sparse_parts() {
    let image = tissue();
    for sparse in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let spec = DicomSpec { tile: 128, levels: 2, split: true, sparse, ..DicomSpec::default() };
        let files = spec.write(dir.path(), &image).unwrap();
        assert_eq!(files.len(), 3);
        let s = TiffSlide::open(dir.path(), 0).unwrap();
        assert_eq!(s.levels().len(), 2, "sparse {sparse}");
        let read = s.read(0, 8, 0, 0, 700, 500, [255; 3]).unwrap();
        // Sparse series leave each level's last frame out (x ≥ 640, y ≥ 384).
        let want =
            |x: u32, y: u32| if sparse && x >= 640 && y >= 384 { image::Rgb([255; 3]) } else { *image.get_pixel(x, y) };
        assert!(read.enumerate_pixels().all(|(x, y, p)| *p == want(x, y)), "sparse {sparse}");
    }
}

#[test]
fn the_label_is_an_associated_image_and_a_series_without_spacing_has_no_mpp() {
    let dir = tempfile::tempdir().unwrap();
    let image = tissue();
    let coding = Coding::Jpeg { ycbcr: true, shared_tables: false };
    DicomSpec { coding, label: true, mpp: None, ..DicomSpec::default() }.write(dir.path(), &image).unwrap();
    let s = TiffSlide::open(dir.path(), 0).unwrap();
    assert_eq!(s.dicom_mpp(), None);
    assert_eq!(s.associated_image_names(), vec!["label"]);
    let label = s.associated_image("label").unwrap().unwrap();
    // The same crop as one JPEG tile of a TIFF decodes to the same pixels.
    let crop = image::imageops::crop_imm(&image, 0, 0, 96, 64).to_image();
    let tiff = dir.path().join("label.tiff");
    TiffSpec { tile: 96, coding, ..TiffSpec::default() }.write(&tiff, &crop).unwrap();
    let same = TiffSlide::open(&tiff, 0).unwrap().read(0, 8, 0, 0, 96, 64, [255; 3]).unwrap();
    assert!(label == same);
    assert!(mean_abs_diff(&label, &crop) < 12.0, "{}", mean_abs_diff(&label, &crop));
    assert!(s.associated_image("macro").is_none());
}

#[test]
fn a_folder_without_a_slide_series_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not DICOM").unwrap();
    let e = TiffSlide::open(dir.path(), 0).unwrap_err().to_string();
    assert!(e.contains("no DICOM whole-slide image") && e.contains(&dir.path().display().to_string()), "{e}");
}

/// A small JPEG series (two levels of 64 px frames) as the bytes of its finest level.
fn small_series(dir: &Path) -> Vec<u8> {
    let img = RgbImage::from_fn(200, 150, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8]));
    let coding = Coding::Jpeg { ycbcr: true, shared_tables: false };
    let files = DicomSpec { tile: 64, coding, levels: 2, ..DicomSpec::default() }.write(dir, &img).unwrap();
    std::fs::read(&files[0]).unwrap()
}

/// Writes `bytes` over the finest level and reads every level; the first error, if any.
fn open_and_read_all(dir: &Path, bytes: &[u8]) -> Result<(), patchtcga_tiff::TiffError> {
    std::fs::write(dir.join("level-0.dcm"), bytes).unwrap();
    let slide = TiffSlide::open(dir, 1 << 20)?;
    for (i, l) in slide.levels().iter().enumerate() {
        slide.read(i, 8, 0, 0, l.width, l.height, [255; 3])?;
    }
    Ok(())
}

#[test]
fn a_truncated_instance_is_one_error_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = small_series(dir.path());
    open_and_read_all(dir.path(), &b).unwrap();
    for keep in [b.len() - 9, b.len() / 2, 600] {
        let e = open_and_read_all(dir.path(), &b[..keep]).unwrap_err().to_string();
        assert!(e.contains("level-0.dcm") || e.contains("past the end"), "{keep}: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any bytes of the data set (attributes, item headers, frames) changed: an error or pixels,
    /// never a panic.
    #[test]
    fn mutated_instances_never_panic(changes in prop::collection::vec((132usize..3000, any::<u8>()), 1..10)) {
        let dir = tempfile::tempdir().unwrap();
        let mut b = small_series(dir.path());
        for &(at, v) in &changes {
            if at < b.len() {
                b[at] = v;
            }
        }
        let _ = open_and_read_all(dir.path(), &b);
    }
}

#[test]
fn a_length_past_the_end_of_the_file_is_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let img = RgbImage::from_pixel(64, 64, image::Rgb([200, 100, 150]));
    let files = DicomSpec { tile: 64, ..DicomSpec::default() }.write(dir.path(), &img).unwrap();
    let original = std::fs::read(&files[0]).unwrap();
    // An OB element's 4-byte length, 2 bytes past its VR: the meta group's version, the pixel data.
    let length_of = |tag: [u8; 4]| original.windows(6).position(|w| w[..4] == tag && &w[4..] == b"OB").unwrap() + 8;
    for (tag, what) in [([2, 0, 1, 0], "file meta"), ([0xE0, 0x7F, 0x10, 0], "past the end")] {
        let mut b = original.clone();
        let at = length_of(tag);
        b[at..at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        std::fs::write(&files[0], &b).unwrap();
        let e = TiffSlide::open(dir.path(), 0).unwrap_err().to_string();
        assert!(e.contains("level-0.dcm") && e.contains(what), "{e}");
    }
}
