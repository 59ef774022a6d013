//! `patchtcga mil train` and `mil heatmap`: slide-level multiple-instance learning on patch features.

use anyhow::Result;
use patchtcga_cli::commands::say;
use patchtcga_mil::run::{Progress, MIL_RESULTS_FILE};
use patchtcga_mil::{self as mil, MilCommand, TrainArgs};

/// Runs `patchtcga mil …`.
pub fn mil(what: MilCommand) -> Result<()> {
    match what {
        MilCommand::Train(a) => train(a),
        MilCommand::Heatmap(a) => say(a.run()?),
    }
}

/// Cross-validates with a bar over the folds' epochs, each fold's result printed as it ends.
fn train(a: TrainArgs) -> Result<()> {
    if let Some(config) = &a.config {
        println!("settings: {} (and the flags given)", config.display());
    }
    let data = mil::load(&a.features, &a.labels, a.allow_unlabelled)?;
    let classes = data.classes.join(", ");
    println!("{} slides, {} classes ({classes}), {}-wide features", data.bags.len(), data.classes.len(), data.width);
    let (mut trained, epochs) = (0, a.options.epochs);
    let bar = patchtcga_cli::commands::bar("epochs");
    bar.set_length((a.options.folds * epochs) as u64);
    let cv = mil::run::train(&data, &a.options, &a.out, |p| match p {
        Progress::Epoch { fold, epoch, losses } => {
            bar.set_position((fold * epochs + epoch) as u64);
            bar.set_message(format!("fold {fold}: train loss {:.4}, val loss {:.4}", losses.train, losses.val));
        }
        Progress::Fold(r) => {
            trained += 1;
            bar.suspend(|| println!("{r}"));
        }
    })?;
    bar.finish_and_clear();
    if trained < cv.folds.len() {
        println!("{} fold(s) kept from an earlier run of the same settings", cv.folds.len() - trained);
    }
    println!("{cv}\nresults → {}", a.out.join(MIL_RESULTS_FILE).display());
    Ok(())
}
