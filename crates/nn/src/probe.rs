//! `patchtcga probe`: linear and k-NN probes on embedded splits, or the k-fold linear probe on
//! slide embeddings.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use patchtcga_downstream::probe::{probe as run_probe, ProbeOptions};
use patchtcga_slide_encoders::{probe as probe_slides, SlideEmbeddings, SlideProbeOptions};

/// Options of `patchtcga probe`.
#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    options: Option<ProbeOptions>,
    /// Slide embeddings (`embed-slides`): the k-fold logistic-regression probe over slides.
    #[arg(long, requires = "labels", conflicts_with_all = ["dataset", "features"])]
    slides: Option<PathBuf>,
    /// With --slides: the labels CSV (`slide`, `label`, optional `case`), as `mil train` reads it.
    #[arg(long, requires = "slides")]
    labels: Option<PathBuf>,
    #[command(flatten)]
    slide_probe: SlideProbeOptions,
    /// Where to write the reports (JSON); for --slides, `runs/<name>/slide_probe.json` puts
    /// the probe in `patchtcga report runs`.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A logistic-regression probe and a k-NN classifier on embedded splits, or the slide probe.
pub fn probe(a: ProbeArgs) -> Result<()> {
    let json = match (&a.slides, &a.labels, &a.options) {
        (Some(slides), Some(labels), _) => {
            let report = probe_slides(&SlideEmbeddings::read(slides)?, labels, &a.slide_probe)?;
            println!("{report}");
            serde_json::to_value(&report)?
        }
        (None, _, Some(options)) => {
            let report = run_probe(options)?;
            println!("{report}");
            report.to_json()
        }
        _ => bail!("give --dataset and --features (patch embeddings), or --slides and --labels (slide embeddings)"),
    };
    if let Some(out) = &a.out {
        patchtcga_engine::write_atomic(out, &serde_json::to_vec_pretty(&json)?)?;
        println!("reports → {}", out.display());
    }
    Ok(())
}
