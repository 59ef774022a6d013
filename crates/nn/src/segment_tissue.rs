//! `patchtcga segment-tissue`: a learned tissue segmenter over each slide of a list, its tissue
//! written for QuPath and as the list's regions of interest.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use patchtcga_engine::device::parse_device;
use patchtcga_features::tissue_net::{segment_tissue, write_tissue, TissueModel, TissueNet};
use patchtcga_slide::{Slide, SlideOptions};
use tch::Device;

/// Options of `patchtcga segment-tissue`.
#[derive(Args)]
pub struct SegmentTissueArgs {
    /// The segmenter.
    #[arg(long, value_enum, default_value = "hest")]
    model: TissueModel,
    /// Its weights, as published (HEST: `deeplabv3_seg_v4.ckpt`).
    #[arg(long)]
    weights: PathBuf,
    /// A slide list (CSV with a `slide` column, optional `id`, as `build` and `embed` take).
    #[arg(long)]
    slides: PathBuf,
    /// Folder for `<id>.geojson` (the tissue, for QuPath) and `slides.csv` (the list with each
    /// slide's tissue as its `roi`); slides already done are skipped.
    #[arg(long)]
    out: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[command(flatten)]
    open: SlideOptions,
}

/// Segments every slide of the list, then writes the list with its `roi` column.
pub fn segment(a: SegmentTissueArgs) -> Result<()> {
    let rows = patchtcga_dataset::read_slides_csv(&a.slides)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create", a.out.display()))?;
    let net = TissueNet::load(a.model, &a.weights, a.device)?;
    let bar = patchtcga_cli::commands::bar("windows");
    let mut failed = 0;
    for row in &rows {
        let out = a.out.join(format!("{}.geojson", row.id));
        if out.is_file() {
            continue;
        }
        let done = Slide::open(&row.slide, &a.open.for_slide(row.mpp)).map_err(anyhow::Error::from).and_then(|slide| {
            let (tissue, share) = segment_tissue(&slide, &net, (a.batch_size, a.device), &bar)?;
            write_tissue(&slide, tissue, &out)?;
            Ok(share)
        });
        match done {
            Ok(share) => {
                bar.suspend(|| println!("{}: tissue {:.1} % → {}", row.slide.display(), 100.0 * share, out.display()))
            }
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("failed: {}: {e:#}", row.slide.display()));
            }
        }
    }
    bar.finish_and_clear();
    let list = a.out.join("slides.csv");
    with_roi(&a.slides, &a.out, &list)?;
    println!("{} slide(s), {failed} failed; the list with their tissue as `roi` → {}", rows.len(), list.display());
    if failed > 0 {
        bail!("{failed} of {} slide(s) failed (re-run to retry only those)", rows.len());
    }
    Ok(())
}

/// Copies the slide list `from` to `to` with a `roi` column naming `<dir>/<id>.geojson` (by
/// absolute path), for the slides that have one.
fn with_roi(from: &Path, dir: &Path, to: &Path) -> Result<()> {
    let rows = patchtcga_dataset::read_slides_csv(from)?;
    let mut reader = csv::Reader::from_path(from).with_context(|| from.display().to_string())?;
    let headers = reader.headers()?.clone();
    let roi_col = headers.iter().position(|h| h.trim() == "roi");
    let mut out = csv::Writer::from_writer(Vec::new());
    let mut head: Vec<&str> = headers.iter().collect();
    if roi_col.is_none() {
        head.push("roi");
    }
    out.write_record(&head)?;
    for (record, row) in reader.records().zip(&rows) {
        let mut fields: Vec<String> = record?.iter().map(str::to_owned).collect();
        let geojson = std::path::absolute(dir.join(format!("{}.geojson", row.id)))?;
        let roi = if geojson.is_file() { geojson.display().to_string() } else { String::new() };
        match roi_col {
            Some(c) => fields[c] = roi,
            None => fields.push(roi),
        }
        out.write_record(&fields)?;
    }
    patchtcga_atomic::write(to, &out.into_inner()?).with_context(|| format!("{}: cannot write", to.display()))?;
    Ok(())
}
