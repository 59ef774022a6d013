//! `patchtcga info`: a slide's size, levels, resolution and tissue.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use patchtcga_slide::{PatchGeometry, Slide, TissueMask, TissueParams};

use patchtcga_slide::SlideOptions;

/// Options of `patchtcga info`.
#[derive(Args)]
pub struct InfoArgs {
    /// Slide file.
    pub slide: PathBuf,
    #[command(flatten)]
    pub open: SlideOptions,
}

/// Prints what the reader and the tiler make of a slide.
pub fn info(a: InfoArgs) -> Result<()> {
    let s = Slide::open(&a.slide, &a.open)?;
    let (w, h) = s.dimensions();
    let mpp = s.mpp();
    println!("{}: {w} × {h} px, {:.4} × {:.4} µm/px ({:?})", a.slide.display(), mpp.x, mpp.y, mpp.source);
    println!("read by: {}", s.served_by());
    for l in 0..s.level_count() {
        let (lw, lh) = s.level_dimensions(l);
        println!("  level {l}: {lw} × {lh} px, downsample {:.3}", s.level_downsample(l));
    }
    let t = TissueMask::detect(&s, &TissueParams::default())?;
    println!("tissue: {:.1}% of the slide (saturation threshold {})", 100.0 * t.tissue_fraction(), t.threshold());
    let g = PatchGeometry::default();
    let (fw, _) = s.footprint(&g);
    println!(
        "a {} px patch at {} µm/px covers {:.1} level-0 px and reads level {}",
        g.size,
        g.mpp,
        fw,
        s.level_for_downsample(fw / g.size as f64)
    );
    Ok(())
}
