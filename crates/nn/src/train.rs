//! `patchtcga pretrain` and `finetune`: train as a run config says, here or in the ranks started
//! for it, and say where the results are.

use anyhow::Result;
use patchtcga_engine::launch::{FinetuneFlags, RunFlags, Started};
use patchtcga_engine::Config;

/// Pretrains as the config says.
pub fn pretrain(a: RunFlags) -> Result<()> {
    let contents = "config.toml, metrics.jsonl, plots/, checkpoints/, model.safetensors";
    let Some(config) = here(a.start(&[])?, contents) else { return Ok(()) };
    let summary = patchtcga_methods::pretrain(&config, a.resume)?;
    if leader() {
        print!("{summary}");
        println!("run folder: {} ({contents})", summary.run_dir.display());
    }
    Ok(())
}

/// Fine-tunes, selects the best validation epoch and reports validation and test metrics.
pub fn finetune(a: FinetuneFlags) -> Result<()> {
    let contents = "results.json, plots/, metrics.jsonl, checkpoints/";
    let Some(config) = here(a.start()?, contents) else { return Ok(()) };
    let results = patchtcga_downstream::finetune::finetune(&config, a.run.resume)?;
    if leader() {
        println!("{results}\nrun folder: {} ({contents})", results.run_dir.display());
    }
    Ok(())
}

/// The config to train with in this process, or `None` once the ranks it started are done
/// (their run folder, holding `contents`, said).
fn here(started: Started, contents: &str) -> Option<Config> {
    match started {
        Started::Here(config) => Some(*config),
        Started::Ranks { run_dir } => {
            println!("run folder: {} ({contents})", run_dir.display());
            None
        }
    }
}

/// Whether this process speaks for the run (rank 0, or the only process).
fn leader() -> bool {
    patchtcga_collective::group().is_none_or(|g| g.rank() == 0)
}
