//! `patchtcga embed`: backbone features of a folder of patches, or of slides' tissue grids.

use anyhow::{bail, Result};
use patchtcga_cli::commands::say;
use patchtcga_features::embed::EmbedArgs;

/// Writes backbone features of every image under `--images` to `--out`, or of every slide of
/// `--slides` (this process's share; slides already done are skipped) into it.
pub fn embed(a: EmbedArgs) -> Result<()> {
    let bar = patchtcga_cli::commands::bar(if a.images.is_some() { "images" } else { "patches" });
    if let Some(folder) = &a.images {
        let (_vs, backbone) = crate::backbone::loaded(a.load_backbone()?, &a.backbone.weights);
        return say(a.images(folder, &backbone, &bar)?);
    }
    let Some(share) = a.launch.share()? else {
        return say(format!("{} rank(s) done: {}", a.launch.nproc_per_node, a.out.display()));
    };
    let rows = a.slide_rows(a.slides.as_ref().expect("--slides or --images"), share)?;
    let (_vs, backbone) = crate::backbone::loaded(a.load_backbone()?, &a.backbone.weights);
    let r = a.slides(&rows, &backbone, &bar, |row, outcome| match outcome {
        Ok((file, n)) => bar.suspend(|| println!("{}: {n} patches → {}", row.slide.display(), file.display())),
        Err(e) => bar.suspend(|| eprintln!("failed: {}: {e}", row.slide.display())),
    })?;
    if r.unreached > 0 {
        eprintln!("failed: {} slide(s) never read (the reading stopped early)", r.unreached);
    }
    println!("{r}");
    if r.failed() > 0 {
        bail!("{} of {} slide(s) failed (the others are complete; re-run to retry only those)", r.failed(), rows.len());
    }
    Ok(())
}
