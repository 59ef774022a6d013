//! `patchtcga pretrain` and `finetune`: train as a run config says, here or in the ranks started
//! for it, and say where the results are.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use patchtcga_engine::launch::{FinetuneFlags, RunFlags, Started};
use patchtcga_engine::{Config, Progress, RunContext};

/// Pretrains as the config says.
pub fn pretrain(a: RunFlags) -> Result<()> {
    let contents = "config.toml, metrics.jsonl, plots/, checkpoints/, model.safetensors";
    let Some((config, context)) = here(a.start(&[])?, contents) else { return Ok(()) };
    let summary = patchtcga_methods::pretrain(&config, &context, a.resume, &mut drawn())?;
    if context.leads() {
        print!("{summary}");
        println!("run folder: {} ({contents})", summary.run_dir.display());
    }
    Ok(())
}

/// Fine-tunes, selects the best validation epoch and reports validation and test metrics.
pub fn finetune(a: FinetuneFlags) -> Result<()> {
    let contents = "results.json, plots/, metrics.jsonl, checkpoints/";
    let Some((config, context)) = here(a.start()?, contents) else { return Ok(()) };
    let results = patchtcga_downstream::finetune::finetune(&config, &context, a.run.resume, &mut drawn())?;
    if context.leads() {
        println!("{results}\nrun folder: {} ({contents})", results.run_dir.display());
    }
    Ok(())
}

/// The config to train with in this process and where the process stands, or `None` once the
/// ranks it started are done (their run folder, holding `contents`, said).
fn here(started: Started, contents: &str) -> Option<(Config, RunContext)> {
    match started {
        Started::Here(config, context) => Some((*config, context)),
        Started::Ranks { run_dir } => {
            println!("run folder: {} ({contents})", run_dir.display());
            None
        }
    }
}

/// Draws a run's progress on the terminal: its set-up notes, a bar per epoch with the last
/// update's loss and learning rate, where it resumed or stopped.
fn drawn() -> impl FnMut(Progress) {
    let mut bar = ProgressBar::hidden();
    move |p| match p {
        Progress::Note(line) => eprintln!("{line}"),
        Progress::Resumed { from, position: p } => {
            eprintln!("resuming from {} (epoch {}, batch {}, update {})", from.display(), p.epoch, p.batch, p.update)
        }
        Progress::Epoch { epoch, epochs, batches, done } => {
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}")
                .expect("template")
                .progress_chars("=> ");
            bar = ProgressBar::new(batches as u64).with_style(style);
            bar.set_prefix(format!("epoch {epoch}/{epochs}"));
            bar.set_position(done as u64);
        }
        Progress::Batch => bar.inc(1),
        Progress::Update { loss, lr } => bar.set_message(format!("loss {loss:.4} lr {lr:.2e}")),
        Progress::EpochDone => bar.finish(),
        Progress::Skipped(why) => bar.println(format!("warning: skipped {why}")),
        Progress::Stopped { update } => {
            bar.abandon_with_message(format!("stopped at update {update} (stop_num_updates)"))
        }
    }
}
