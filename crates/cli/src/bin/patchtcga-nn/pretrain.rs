//! `patchtcga pretrain`: train a backbone as a run config says.

use anyhow::Result;
use clap::Args;
use patchtcga_learn::data::loaders;
use patchtcga_learn::{method, train, Holdout};

use patchtcga_learn::launch::RunFlags;

/// Options of `patchtcga pretrain`.
#[derive(Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    run: RunFlags,
}

/// Trains as the config says and reports where the results are.
pub fn pretrain(a: PretrainArgs) -> Result<()> {
    let contents = "config.toml, metrics.jsonl, plots/, checkpoints/, model.safetensors";
    let Some(config) = crate::start_run(&a.run, &[], contents)? else { return Ok(()) };
    let leader = patchtcga_dist::group().is_none_or(|g| g.rank() == 0);
    let (mut method, recipe) = method(&config)?;
    let data = loaders(&config, recipe)?;
    let holdout = Holdout { val: data.val.as_ref(), test: data.test.as_ref() };
    let s = train(&config, method.as_mut(), &data.train, holdout, a.run.resume)?;
    if !leader {
        return Ok(());
    }
    let dir = s.run_dir.display();
    if s.stopped_early {
        println!("stopped at update {} (stop_num_updates); continue with --resume", s.position.update);
    }
    for key in ["loss", "val_accuracy", "test_accuracy", "val_knn_accuracy", "test_knn_accuracy"] {
        if let Some(&v) = s.last.get(key) {
            println!("{key}: {v:.4}");
        }
    }
    println!("run folder: {dir} ({contents})");
    Ok(())
}
