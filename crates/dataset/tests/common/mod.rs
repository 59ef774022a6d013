#![allow(dead_code)]
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use patchtcga_dataset::{build, read_slides_csv, BuildOptions, BuildReport, ImageFormat, Share, Task};
use patchtcga_slide::{PatchGeometry, QualityCheck, Sampler, Sampling, SlideOptions, TissueParams};

pub use patchtcga_testkit::{sample_slide, write_tiled_tiff};

pub fn options(out: &Path) -> BuildOptions {
    BuildOptions {
        out: out.to_path_buf(),
        geometry: PatchGeometry::default(),
        tissue: TissueParams::default(),
        quality: QualityCheck::default(),
        sampler: Sampler { sampling: Sampling::Grid, min_tissue: 0.5, seed: 7 },
        per_slide: None,
        format: ImageFormat::Jpeg { quality: 90 },
        slide: SlideOptions::default(),
        val_fraction: 0.1,
        test_fraction: 0.2,
        stain: None,
        share: Share::default(),
    }
}

pub fn write_csv(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn run(task: &Task, csv: &Path, opts: &BuildOptions) -> BuildReport {
    build(task, &read_slides_csv(csv).unwrap(), opts, &ProgressBar::hidden()).unwrap()
}

pub fn broken_slide(name: &str) -> PathBuf {
    patchtcga_testkit::repo_root().join("crates/slide/tests/data").join(name)
}

pub fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let mse = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>()
        / a.as_raw().len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

pub fn golden(name: &str) -> image::RgbImage {
    image::open(patchtcga_testkit::repo_root().join("crates/slide/tests/golden").join(name)).unwrap().to_rgb8()
}
