//! Slide batches: every slide's patches in order, batches filled across slide boundaries, each
//! row owned by its slide, the values those of a direct read, and failing slides reported alone.

use std::path::{Path, PathBuf};

use image::RgbImage;
use patchtcga_augment::normalize;
use patchtcga_loader::slides::{SlideBatchConfig, SlideBatches, SlideEvent, SlideJob};
use patchtcga_slide::{PatchGeometry, Slide, SlideOptions, TissueGrid};
use patchtcga_testkit::tiff_bytes::tile_data;
use patchtcga_testkit::{sample_slide, Coding, TiffSpec};

fn config(batch_size: usize, geometry: PatchGeometry) -> SlideBatchConfig {
    SlideBatchConfig {
        geometry,
        min_tissue: 0.5,
        open: SlideOptions::default(),
        mean: [0.5, 0.4, 0.3],
        std: [0.2, 0.25, 0.3],
        batch_size,
        workers: 2,
        prefetch: 2,
        stain: None,
    }
}

/// What the consumer sees: per slide, its corners, the values of its rows, and how it ended.
#[derive(Default, Debug)]
struct Seen {
    corners: Vec<(u32, u32)>,
    values: Vec<f32>,
    ended: bool,
    failed: Option<String>,
}

fn consume(batches: SlideBatches, slides: usize, batch_size: usize, plane: usize) -> (Vec<Seen>, Vec<usize>) {
    let mut seen: Vec<Seen> = (0..slides).map(|_| Seen::default()).collect();
    let mut sizes = Vec::new();
    for event in batches {
        match event {
            SlideEvent::Begin { slide, corners, .. } => {
                assert!(seen[slide].corners.is_empty() && !seen[slide].ended, "slide {slide} begun twice");
                seen[slide].corners = corners;
            }
            SlideEvent::Batch { values, rows } => {
                let n: usize = rows.iter().map(|r| r.1).sum();
                assert!(n <= batch_size && values.len() == n * plane);
                sizes.push(n);
                let mut at = 0;
                for (slide, k) in rows {
                    assert!(!seen[slide].ended && seen[slide].failed.is_none(), "rows of slide {slide} after its end");
                    seen[slide].values.extend_from_slice(&values[at * plane..(at + k) * plane]);
                    at += k;
                }
            }
            SlideEvent::End { slide } => seen[slide].ended = true,
            SlideEvent::Failed { slide, error } => seen[slide].failed = Some(error.to_string()),
        }
    }
    (seen, sizes)
}

fn direct(slide: &Path, geometry: &PatchGeometry, corners: &[(u32, u32)], c: &SlideBatchConfig) -> Vec<f32> {
    let s = Slide::open(slide, &SlideOptions::default()).unwrap();
    let plane = 3 * (geometry.size as usize).pow(2);
    let mut out = vec![0.0; plane * corners.len()];
    for (&(x, y), o) in corners.iter().zip(out.chunks_mut(plane)) {
        let p: RgbImage = s.read_patch(geometry, x, y).unwrap();
        let p = c.stain.as_ref().map_or(p.clone(), |n| n.apply(p));
        normalize(&p, c.mean, c.std, o).unwrap();
    }
    out
}

#[test]
fn batches_span_slides_and_every_row_reaches_its_slide() {
    let geometry = PatchGeometry { mpp: 2.0, size: 32 };
    let slide = sample_slide();
    let grid = TissueGrid::of(&Slide::open(&slide, &SlideOptions::default()).unwrap(), &geometry, 0.5, None).unwrap();
    assert!(grid.corners.len() > 20 && !grid.corners.len().is_multiple_of(7), "{} grid patches", grid.corners.len());
    assert!(grid.corners.windows(2).all(|w| (w[0].1, w[0].0) < (w[1].1, w[1].0)), "row by row");
    let given = vec![(100, 200), (700, 900), (1200, 40)];
    let jobs = vec![
        SlideJob { path: slide.clone(), corners: None, roi: None, mpp: None },
        SlideJob { path: PathBuf::from("missing.svs"), corners: None, roi: None, mpp: None },
        SlideJob { path: slide.clone(), corners: Some(given.clone()), roi: None, mpp: None },
        SlideJob { path: slide.clone(), corners: Some(Vec::new()), roi: None, mpp: None },
        SlideJob { path: slide.clone(), corners: None, roi: None, mpp: None },
    ];
    let c = config(7, geometry);
    let plane = 3 * 32 * 32;
    let (seen, sizes) = consume(SlideBatches::start(jobs, c.clone()).unwrap(), 5, 7, plane);
    // Full batches but the last, one of them holding the end of slide 0 and the start of slide 2.
    let total = 2 * grid.corners.len() + given.len();
    assert_eq!(sizes.iter().sum::<usize>(), total);
    assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == 7), "{sizes:?}");
    assert!(seen[1].failed.as_deref().unwrap_or("").contains("missing.svs"), "{:?}", seen[1]);
    assert!(!seen[1].ended);
    let reference = direct(&slide, &geometry, &grid.corners, &c);
    for (i, corners) in [(0, &grid.corners), (2, &given), (3, &Vec::new()), (4, &grid.corners)] {
        assert!(seen[i].ended && seen[i].failed.is_none(), "slide {i}: {:?}", seen[i].failed);
        assert_eq!(&seen[i].corners, corners, "slide {i}");
    }
    assert_eq!(seen[0].values, reference, "slide 0: the values of direct reads");
    assert_eq!(seen[4].values, reference, "slide 4");
    assert_eq!(seen[2].values, direct(&slide, &geometry, &given, &c), "given corners");
    assert!(seen[3].values.is_empty());
}

#[test]
fn a_slide_failing_mid_read_is_dropped_alone() {
    let dir = tempfile::tempdir().unwrap();
    // An SVS-like file whose tile (1, 1) is not a JPEG: patches on other tiles read, that one fails.
    let img = RgbImage::from_fn(600, 500, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, 128]));
    let spec = TiffSpec {
        tile: 240,
        coding: Coding::Jpeg { ycbcr: false, shared_tables: true },
        levels: 1,
        aperio_mpp: Some(0.25),
        ..TiffSpec::default()
    };
    let damaged = dir.path().join("damaged.svs");
    let mut b = spec.write(&damaged, &img).unwrap();
    let at = tile_data(&b, 4); // 3 tiles a row: (1, 1) is the fifth
    b[at..at + 2].copy_from_slice(&[0x12, 0x34]);
    std::fs::write(&damaged, &b).unwrap();

    let geometry = PatchGeometry { mpp: 0.25, size: 32 };
    let good = vec![(20, 20), (60, 20), (100, 20)];
    let jobs = vec![
        SlideJob {
            path: damaged.clone(),
            corners: Some([good.clone(), vec![(300, 300)]].concat()),
            roi: None,
            mpp: None,
        },
        SlideJob { path: damaged.clone(), corners: Some(good.clone()), roi: None, mpp: None },
    ];
    let (seen, _) = consume(SlideBatches::start(jobs, config(2, geometry)).unwrap(), 2, 2, 3 * 32 * 32);
    let e = seen[0].failed.as_deref().unwrap_or_default();
    assert!(e.contains("damaged.svs") && e.contains("tile (1, 1)") && !seen[0].ended, "{:?}", seen[0]);
    assert!(seen[1].ended && seen[1].failed.is_none(), "{:?}", seen[1].failed);
    assert_eq!(seen[1].values.len(), 3 * 3 * 32 * 32);
}

/// With a stain normaliser, each patch is normalised to the target before the network's
/// normalisation: the values of a direct read put through the same normaliser, and not those
/// without it.
#[test]
fn stain_normalised_batches_equal_stain_normalised_reads() {
    use patchtcga_augment::{StainMethod, StainNormalizer};
    let target =
        image::open(patchtcga_testkit::repo_root().join("crates/augment/tests/golden/stain_target.png")).unwrap();
    let geometry = PatchGeometry { mpp: 2.0, size: 32 };
    let corners = vec![(600, 900), (1000, 1400), (1300, 1800)];
    let slide = sample_slide();
    let jobs = vec![SlideJob { path: slide.clone(), corners: Some(corners.clone()), roi: None, mpp: None }];
    for method in [StainMethod::Reinhard, StainMethod::Macenko] {
        let c = SlideBatchConfig { stain: StainNormalizer::fit(method, &target.to_rgb8()), ..config(2, geometry) };
        assert!(c.stain.is_some());
        let plane = 3 * 32 * 32;
        let (seen, _) = consume(SlideBatches::start(jobs.clone(), c.clone()).unwrap(), 1, 2, plane);
        assert_eq!(seen[0].values, direct(&slide, &geometry, &corners, &c), "{method:?}");
        let plain = direct(&slide, &geometry, &corners, &config(2, geometry));
        assert!(seen[0].values.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 0.05), "{method:?} changed nothing");
    }
}
