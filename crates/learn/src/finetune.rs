//! Fine-tuning on a small benchmark (PCam200, the original PCam): the supervised method from an
//! initialisation (random, ImageNet or a pretraining run), full or linear probe (`fine_tune`),
//! the epoch with the best validation accuracy selected, and its report on validation and test.

use std::path::{Path, PathBuf};

use patchtcga_loader::Loader;
use patchtcga_metrics::ClassificationReport;
use serde::Serialize;
use serde_json::Value;

use crate::data::loaders;
use crate::engine::{load_variables, train, write_atomic, Holdout, Method};
use crate::{plot, Config, LearnError, Supervised};

/// What a fine-tuning run gives: written to `<run>/results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub run_dir: PathBuf,
    /// The checkpoint epoch evaluated (best validation accuracy; the last without validation).
    pub selected_epoch: usize,
    pub init: String,
    pub fine_tune: bool,
    pub val: Option<ClassificationReport>,
    pub test: Option<ClassificationReport>,
}

/// The checkpointed epoch with the highest validation accuracy (the earliest of equals), from a
/// run's metrics log; the last checkpointed epoch when no validation was logged.
pub fn best_epoch(log: &Path, checkpoints: &Path) -> Result<Option<usize>, LearnError> {
    let text = std::fs::read_to_string(log).map_err(|e| LearnError::io(log, e))?;
    let entries: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let saved: Vec<usize> = (1..=entries.iter().filter_map(|e| e["epoch"].as_u64()).max().unwrap_or(0) as usize)
        .filter(|e| checkpoints.join(format!("epoch_{e:04}")).join("model.safetensors").exists())
        .collect();
    // The epoch-end validation of epoch K is the first one logged with epoch = K.
    let score = |k: usize| {
        entries.iter().filter(|e| e["epoch"].as_u64() == Some(k as u64)).find_map(|e| e["val_accuracy"].as_f64())
    };
    let scored: Vec<(usize, f64)> = saved.iter().filter_map(|&k| score(k).map(|s| (k, s))).collect();
    Ok(match scored.iter().copied().reduce(|best, x| if x.1 > best.1 { x } else { best }) {
        Some((k, _)) => Some(k),
        None => saved.last().copied(),
    })
}

/// Trains as `config` says, selects the best validation epoch, reports it, and writes
/// `results.json` and confusion-matrix pictures in the run folder.
pub fn finetune(config: &Config, resume: bool) -> Result<Outcome, LearnError> {
    if config.self_supervised != "none" {
        return Err(LearnError::Config(format!(
            "fine-tuning trains the supervised method; self_supervised is {:?}",
            config.self_supervised
        )));
    }
    let mut model = Supervised::new(config)?;
    let data = loaders(config, "supervised")?;
    let s = train(config, &mut model, &data.train, Holdout { val: data.val.as_ref(), test: None }, resume)?;
    let ckpts = s.run_dir.join("checkpoints");
    let selected = best_epoch(&s.run_dir.join("metrics.jsonl"), &ckpts)?;
    if let Some(k) = selected {
        load_variables(model.var_store(), &ckpts.join(format!("epoch_{k:04}")).join("model.safetensors"))?;
    }
    let classes = config.num_classes as usize;
    let report = |loader: Option<&Loader>, set: &str| -> Result<Option<ClassificationReport>, LearnError> {
        let Some(loader) = loader else { return Ok(None) };
        let p = model.predict(loader)?;
        let r = ClassificationReport::new(&p.probs, &p.labels, classes);
        let title = format!("{set}: accuracy {:.2} %", 100.0 * r.accuracy);
        plot::confusion(
            &s.run_dir.join(format!("plots/confusion_{set}.png")),
            &title,
            &r.confusion.counts,
            &data.class_names,
        )?;
        Ok(Some(r))
    };
    let outcome = Outcome {
        run_dir: s.run_dir.clone(),
        selected_epoch: selected.unwrap_or(s.position.epoch),
        init: if config.pretrained.is_empty() { "none".into() } else { config.pretrained.clone() },
        fine_tune: config.fine_tune,
        val: report(data.val.as_ref(), "val")?,
        test: report(data.test.as_ref(), "test")?,
    };
    let json = serde_json::to_vec_pretty(&outcome).expect("results serialise");
    write_atomic(&s.run_dir.join("results.json"), &json)?;
    Ok(outcome)
}
