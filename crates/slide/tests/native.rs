//! The native reader against OpenSlide: the same metadata and the same pixels, on the bundled slide and on tiled TIFFs derived from it in each encoding; DICOM series against the TIFF of the same tiles.

use std::path::Path;

use image::RgbImage;
use patchtcga_slide::{PatchGeometry, Reader, ServedBy, Slide, SlideOptions};
use patchtcga_testkit::{sample_slide, Coding, DicomSpec, TiffSpec, SERIES_UID};

fn open(path: &Path, reader: Reader) -> Slide {
    Slide::open(path, &SlideOptions { reader, ..SlideOptions::default() }).unwrap_or_else(|e| panic!("{reader}: {e}"))
}

/// The largest difference of any channel of any pixel.
fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| x.abs_diff(y)).max().unwrap_or(0)
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let mse = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>()
        / a.as_raw().len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

/// Metadata equal, and every level read whole (and past its edges) equal within ±1.
fn assert_same_slide(path: &Path) {
    let (n, o) = (open(path, Reader::Native), open(path, Reader::OpenSlide));
    assert!(matches!(n.served_by(), ServedBy::Native(_)), "{}", path.display());
    assert_eq!(o.served_by(), ServedBy::OpenSlide);
    assert_eq!(n.level_count(), o.level_count(), "{}", path.display());
    assert_eq!(n.mpp(), o.mpp(), "{}", path.display());
    for l in 0..n.level_count() {
        assert_eq!(n.level_dimensions(l), o.level_dimensions(l));
        assert_eq!(n.level_downsample(l), o.level_downsample(l));
        let (w, h) = n.level_dimensions(l);
        // From the origin (exact in every level's pixels) to 7 pixels past the far edges.
        let (a, b) = (n.read_rgb(l, 0, 0, w + 7, h + 7).unwrap(), o.read_rgb(l, 0, 0, w + 7, h + 7).unwrap());
        let d = max_diff(&a, &b);
        assert!(d <= 1, "{} level {l}: pixels differ by up to {d}", path.display());
    }
}

#[test]
fn the_bundled_svs_reads_the_same_natively_and_through_openslide() {
    let p = sample_slide();
    assert_same_slide(&p);
    let (n, o) = (open(&p, Reader::Auto), open(&p, Reader::OpenSlide));
    assert_eq!(n.served_by().to_string(), "native reader (Aperio SVS)");
    for (x, y, w, h) in [(0, 0, 240, 240), (117, 933, 611, 402), (2000, 2800, 400, 400)] {
        assert!(max_diff(&n.read_rgb(0, x, y, w, h).unwrap(), &o.read_rgb(0, x, y, w, h).unwrap()) <= 1);
    }
    let g = PatchGeometry::default();
    for (x, y) in [(800, 800), (1203, 1611)] {
        assert!(max_diff(&n.read_patch(&g, x, y).unwrap(), &o.read_patch(&g, x, y).unwrap()) <= 1);
    }
}

/// A 1000 × 900 crop of the bundled slide, the content of the derived files.
fn crop() -> RgbImage {
    open(&sample_slide(), Reader::OpenSlide).read_rgb(0, 600, 900, 1000, 900).unwrap()
}

// Long on purpose: one reference read, compared against a derived file per encoding.
#[test]
fn derived_tiffs_in_every_encoding_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let img = crop();
    let svs = TiffSpec {
        tile: 240,
        coding: Coding::Jpeg { ycbcr: false, shared_tables: true },
        levels: 3,
        aperio_mpp: Some(0.2495),
        ..TiffSpec::default()
    };
    let specs = [
        ("svs_like.svs", svs),
        ("svs_ycbcr.svs", TiffSpec { coding: Coding::Jpeg { ycbcr: true, shared_tables: true }, ..svs }),
        (
            "jpeg_inline_tables.tiff",
            TiffSpec {
                coding: Coding::Jpeg { ycbcr: true, shared_tables: false },
                levels: 2,
                mpp: Some(0.5),
                ..TiffSpec::default()
            },
        ),
        // Levels at least a tile wide and high: OpenSlide 3.4.1 reads non-JPEG tiles through
        // libtiff's RGBA interface, which since Debian's libtiff 4.5.0-6+deb12u4 garbles a level
        // smaller than one tile ("Raster width … shall not be larger than image width"); the
        // native reader does not (the lossless check below covers level 0).
        (
            "deflate.tiff",
            TiffSpec {
                coding: Coding::Deflate { predictor: false },
                tile: 128,
                levels: 3,
                mpp: Some(0.25),
                ..TiffSpec::default()
            },
        ),
        (
            "deflate_predictor.tiff",
            TiffSpec { coding: Coding::Deflate { predictor: true }, tile: 128, mpp: Some(0.25), ..TiffSpec::default() },
        ),
        ("lzw.tiff", TiffSpec { coding: Coding::Lzw, levels: 2, mpp: Some(0.25), ..TiffSpec::default() }),
        ("raw.tiff", TiffSpec { mpp: Some(0.25), ..TiffSpec::default() }),
        // BigTIFF, as scanners write files over 4 GB (Aperio GT450 SVS).
        ("svs_bigtiff.svs", TiffSpec { big_tiff: true, ..svs }),
        (
            "deflate_bigtiff.tiff",
            TiffSpec {
                big_tiff: true,
                coding: Coding::Deflate { predictor: false },
                tile: 128,
                levels: 3,
                mpp: Some(0.25),
                ..TiffSpec::default()
            },
        ),
    ];
    for (name, spec) in specs {
        let p = dir.path().join(name);
        spec.write(&p, &img).unwrap();
        assert_same_slide(&p);
        if !matches!(spec.coding, Coding::Jpeg { .. }) {
            // Lossless tiles: level 0 is the image written, exactly.
            assert_eq!(open(&p, Reader::Native).read_rgb(0, 0, 0, 1000, 900).unwrap(), img, "{name}");
        }
    }
    // Motorola byte order (which the OpenSlide 3.4.1 of Debian 12 refuses): the same pixels.
    let be = dir.path().join("raw_big_endian.tiff");
    TiffSpec { big_endian: true, mpp: Some(0.25), ..TiffSpec::default() }.write(&be, &img).unwrap();
    let (a, b) = (open(&be, Reader::Native), open(&dir.path().join("raw.tiff"), Reader::Native));
    assert_eq!(a.mpp(), b.mpp());
    assert_eq!(a.read_rgb(0, 0, 0, 1000, 900).unwrap(), b.read_rgb(0, 0, 0, 1000, 900).unwrap());
    // An OME-TIFF-style pyramid (levels as SubIFDs of the first image, which OpenSlide 3.4.1
    // does not follow): the levels and pixels of the same pyramid chained.
    let (chained, ome) = (dir.path().join("chained.tiff"), dir.path().join("sub_ifds.ome.tiff"));
    let pyramid =
        TiffSpec { coding: Coding::Deflate { predictor: false }, levels: 3, mpp: Some(0.25), ..TiffSpec::default() };
    pyramid.write(&chained, &img).unwrap();
    TiffSpec { sub_ifds: true, ..pyramid }.write(&ome, &img).unwrap();
    let (a, b) = (open(&ome, Reader::Native), open(&chained, Reader::Native));
    assert_eq!(a.level_count(), 3);
    for l in 0..3 {
        let (w, h) = b.level_dimensions(l);
        assert_eq!(a.level_dimensions(l), (w, h));
        assert_eq!(a.read_rgb(l, 0, 0, w, h).unwrap(), b.read_rgb(l, 0, 0, w, h).unwrap());
    }
    // The boxes pyramid from OpenSlide's own test files (Deflate, 4 levels, odd sizes).
    let boxes = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/boxes.tiff");
    let (n, o) = (
        Slide::open(&boxes, &SlideOptions { reader: Reader::Native, ..SlideOptions::with_mpp(Some(1.0)) }).unwrap(),
        Slide::open(&boxes, &SlideOptions { reader: Reader::OpenSlide, ..SlideOptions::with_mpp(Some(1.0)) }).unwrap(),
    );
    for l in 0..4 {
        assert_eq!(n.level_downsample(l), o.level_downsample(l));
        if l >= 2 {
            continue; // 75 × 62 and 37 × 31: smaller than one 64 px tile, see deflate.tiff above
        }
        let (w, h) = n.level_dimensions(l);
        assert!(max_diff(&n.read_rgb(l, 0, 0, w, h).unwrap(), &o.read_rgb(l, 0, 0, w, h).unwrap()) <= 1);
    }
}

#[test]
fn patches_through_dct_scaled_decoding_stay_within_40_db_of_full_decoding() {
    // A 2 µm/px patch of the 0.499 µm/px slide: the native reader decodes the tiles at 1/2
    // (keeping 2 source pixels per output pixel); OpenSlide decodes them whole.
    let p = sample_slide();
    let (n, o) = (open(&p, Reader::Native), open(&p, Reader::OpenSlide));
    for (mpp, size) in [(2.0, 128), (4.0, 96), (8.0, 64)] {
        let g = PatchGeometry { mpp, size };
        for (x, y) in [(400, 700), (1100, 1500)] {
            let db = psnr(&n.read_patch(&g, x, y).unwrap(), &o.read_patch(&g, x, y).unwrap());
            assert!(db >= 40.0, "{mpp} µm/px patch at ({x}, {y}): {db:.1} dB");
        }
    }
    // A 40× scan (0.2495 µm/px, the crop upscaled 2×, YCbCr JPEG tiles of 240 px) read at
    // 0.75 µm/px (3×: tiles decoded at 6/8, 2.25 source pixels per output pixel) and 1 µm/px
    // (4×: at 4/8).
    let dir = tempfile::tempdir().unwrap();
    let svs = dir.path().join("40x.svs");
    let img = crop();
    let big = image::imageops::resize(&img, 2000, 1800, image::imageops::FilterType::Lanczos3);
    let spec = TiffSpec {
        tile: 240,
        coding: Coding::Jpeg { ycbcr: true, shared_tables: true },
        aperio_mpp: Some(0.2495),
        ..TiffSpec::default()
    };
    spec.write(&svs, &big).unwrap();
    let (n40, o40) = (open(&svs, Reader::Native), open(&svs, Reader::OpenSlide));
    for (mpp, size) in [(0.75, 224), (1.0, 160)] {
        let g = PatchGeometry { mpp, size };
        for (x, y) in [(0, 0), (700, 900), (1100, 950)] {
            let db = psnr(&n40.read_patch(&g, x, y).unwrap(), &o40.read_patch(&g, x, y).unwrap());
            assert!(db >= 40.0, "40× slide, {mpp} µm/px patch at ({x}, {y}): {db:.1} dB");
        }
    }
    // The overview comes from 1/8-scale tiles: a grid within a pixel of OpenSlide's.
    let ((a, da), (b, db)) = (n.overview(16.0).unwrap(), o.overview(16.0).unwrap());
    assert!(a.width().abs_diff(b.width()) <= 1 && a.height().abs_diff(b.height()) <= 1);
    assert!((da / db - 1.0).abs() < 0.01, "{da} {db}");
}

#[test]
fn files_the_native_reader_does_not_serve_go_to_openslide() {
    // boxes.tiff is Deflate, so it is native; a JPEG 2000 or NDPI file is not, and unopenable.tiff
    // (an unknown compression) is not served natively either: auto hands it to OpenSlide,
    // which then names the cause.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let e = Slide::open(data.join("unopenable.tiff"), &SlideOptions::with_mpp(Some(0.5))).unwrap_err().to_string();
    assert!(e.contains("unopenable.tiff"), "{e}");
    let forced = SlideOptions { reader: Reader::Native, ..SlideOptions::with_mpp(Some(0.5)) };
    let e = Slide::open(data.join("unopenable.tiff"), &forced).unwrap_err().to_string();
    assert!(e.contains("unopenable.tiff") && e.contains("not served by the native reader"), "{e}");
    let auto = Slide::open(data.join("boxes.tiff"), &SlideOptions::with_mpp(Some(1.0))).unwrap();
    assert_eq!(auto.served_by().to_string(), "native reader (tiled TIFF)");
}

#[test]
fn a_dicom_series_serves_what_the_tiff_of_the_same_tiles_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (image, coding) = (crop(), Coding::Jpeg { ycbcr: true, shared_tables: false });
    let series = dir.path().join("series");
    DicomSpec { tile: 240, coding, levels: 3, mpp: Some(0.5), label: true, ..DicomSpec::default() }
        .write(&series, &image)
        .unwrap();
    let tiff = dir.path().join("same.tiff");
    TiffSpec { tile: 240, coding, levels: 3, mpp: Some(0.5), ..TiffSpec::default() }.write(&tiff, &image).unwrap();
    let (d, t) = (open(&series, Reader::Auto), open(&tiff, Reader::Auto));
    assert_eq!(d.served_by().to_string(), "native reader (DICOM)");
    assert_eq!(d.path(), series.as_path());
    assert!((d.mpp().x - 0.5).abs() < 1e-9 && (d.mpp().y - 0.5).abs() < 1e-9, "{:?}", d.mpp());
    assert_eq!(d.mpp().source.to_string(), "vendor");
    for l in 0..3 {
        assert_eq!(d.level_dimensions(l), t.level_dimensions(l));
    }
    let g = PatchGeometry { mpp: 1.3, size: 128 };
    for (x, y) in [(0, 0), (333, 517), (700, 600)] {
        assert!(d.read_patch(&g, x, y).unwrap() == t.read_patch(&g, x, y).unwrap(), "patch at ({x}, {y})");
    }
    let props = d.properties();
    assert_eq!(props.get("openslide.vendor").map(String::as_str), Some("dicom"));
    assert_eq!(props.get("dicom.SeriesInstanceUID").map(String::as_str), Some(SERIES_UID));
    assert_eq!(d.associated_image_names(), vec!["label".to_string()]);
    assert_eq!(d.associated_image("label").unwrap().dimensions(), (96, 64));
    // One of its files opens the same series; OpenSlide 3.4 reads no DICOM and says so.
    let one = open(&series.join("level-2.dcm"), Reader::Native);
    assert_eq!(one.dimensions(), d.dimensions());
    let forced = SlideOptions { reader: Reader::OpenSlide, ..SlideOptions::default() };
    let e = Slide::open(&series, &forced).unwrap_err().to_string();
    assert!(e.contains("cannot be read as a slide") && e.contains(&series.display().to_string()), "{e}");
    // A folder holding no series is refused by the native reader, in its words.
    let e = Slide::open(dir.path(), &SlideOptions::default()).unwrap_err().to_string();
    assert!(e.contains("no DICOM whole-slide image"), "{e}");
}
