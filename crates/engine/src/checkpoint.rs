//! A run's checkpoints: writing and restoring them, where a run resumes, the best validation
//! epoch, and keeping no more of them than a resume and that selection need.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use patchtcga_metrics::run::{read_log, LogEntry};
use patchtcga_model::write_safetensors;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::optim::Optimizer;
use crate::{write_atomic, Config, LearnError};

/// A checkpoint's weights: every variable, by reference name.
const MODEL: &str = "model.safetensors";
/// A checkpoint's optimizer state, which only a resume needs.
const OPTIMIZER: &str = "optimizer.safetensors";
/// Where a checkpoint's run stood.
const POSITION: &str = "position.json";

/// Where a run is: saved in every checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Epochs completed.
    pub epoch: usize,
    /// Batches of the current epoch already consumed.
    pub batch: usize,
    /// Updates taken.
    pub update: usize,
    pub loss_scale: f64,
    pub clean_updates: u32,
    /// Updates dropped for a non-finite loss or gradient (`on_nonfinite = "skip"`).
    #[serde(default)]
    pub skipped_updates: usize,
}

/// The folder of epoch `epoch`'s checkpoint in a run's `checkpoints` folder.
pub fn epoch_dir(checkpoints: &Path, epoch: usize) -> PathBuf {
    checkpoints.join(format!("epoch_{epoch:04}"))
}

/// `named` on the CPU, contiguous (as safetensors files are written).
pub(crate) fn cpu_copy(named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    named.into_iter().map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous())).collect()
}

/// A checkpoint folder: `model.safetensors` (every variable, reference names; `attributes` as its
/// metadata), `optimizer.safetensors`, `position.json`; written whole under a hidden name, then
/// renamed and named `latest`.
pub fn save_checkpoint(
    dir: &Path,
    vs: &nn::VarStore,
    opt: &Optimizer,
    pos: &Position,
    attributes: &[(String, String)],
) -> Result<(), LearnError> {
    let parent = dir.parent().expect("checkpoint folders live in a run folder");
    let tmp = parent.join(format!(".tmp-{}", dir.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint")));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| LearnError::io(&tmp, e))?;
    let mut vars: Vec<(String, Tensor)> = cpu_copy(vs.variables().into_iter().collect());
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    write_safetensors(&tmp.join(MODEL), &vars, attributes)?;
    write_safetensors(&tmp.join(OPTIMIZER), &cpu_copy(opt.state_tensors()), &[])?;
    fs::write(tmp.join(POSITION), serde_json::to_vec_pretty(pos).expect("json"))
        .map_err(|e| LearnError::io(&tmp, e))?;
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| LearnError::io(dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| LearnError::io(dir, e))?;
    write_atomic(&parent.join("latest"), dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().as_bytes())
}

/// Restores a checkpoint folder into `vs` and `opt`.
pub fn load_checkpoint(dir: &Path, vs: &nn::VarStore, opt: &mut Optimizer) -> Result<Position, LearnError> {
    let pos = read_position(dir)?;
    load_variables(vs, &dir.join(MODEL))?;
    opt.load_state(Tensor::read_safetensors(dir.join(OPTIMIZER))?)?;
    Ok(pos)
}

/// The position a checkpoint folder saved.
fn read_position(dir: &Path) -> Result<Position, LearnError> {
    let path = dir.join(POSITION);
    let bytes = fs::read(&path).map_err(|e| LearnError::io(&path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| LearnError::Config(format!("checkpoint {}: {POSITION}: {e}", dir.display())))
}

/// Copies every variable of `vs` from a safetensors file of the same names and shapes.
pub fn load_variables(vs: &nn::VarStore, path: &Path) -> Result<(), LearnError> {
    let bad = |cause: String| LearnError::Config(format!("{}: {cause}", path.display()));
    let saved: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
    copy_variables(vs, &saved).map_err(bad)
}

/// Copies every variable of `vs` from `saved` (same names and shapes); what is missing or
/// misshapen, named.
pub fn copy_variables(vs: &nn::VarStore, saved: &HashMap<String, Tensor>) -> Result<(), String> {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let t = saved.get(&name).ok_or_else(|| format!("{name} is missing (a checkpoint of another model?)"))?;
            if t.size() != var.size() {
                return Err(format!("{name} has shape {:?}, the model {:?}", t.size(), var.size()));
            }
            var.copy_(&t.to_device(var.device()));
        }
        Ok(())
    })
}

/// The checkpoint a run resumes from: `--resume` (the latest), `checkpoint`, or `resume_epoch`.
pub fn resume_point(config: &Config, resume_latest: bool) -> Result<Option<PathBuf>, LearnError> {
    let ckpts = config.run_dir().join("checkpoints");
    let dir = if let Some(dir) = &config.checkpoint {
        dir.clone()
    } else if config.resume_epoch > 0 {
        epoch_dir(&ckpts, config.resume_epoch)
    } else if resume_latest {
        match fs::read_to_string(ckpts.join("latest")) {
            Ok(name) => ckpts.join(name.trim()),
            Err(_) => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    if !dir.join(POSITION).exists() {
        return Err(LearnError::Config(format!("{}: no checkpoint there to resume from", dir.display())));
    }
    if !dir.join(OPTIMIZER).exists() {
        return Err(LearnError::Config(format!(
            "{}: this checkpoint kept its weights only (the best validation epoch's, after keep_checkpoints \
             pruned it); resume from the latest (--resume), or keep every checkpoint whole with keep_checkpoints = 0",
            dir.display()
        )));
    }
    Ok(Some(dir))
}

/// The checkpointed epoch with the highest validation `key` (`val_accuracy`, `val_mean_iou`;
/// the earliest of equals), from a run's metrics log; the last checkpointed epoch when no
/// validation was logged.
pub fn best_epoch(run: &Path, checkpoints: &Path, key: &str) -> Result<Option<usize>, LearnError> {
    let entries = read_log(run).map_err(LearnError::Config)?;
    let saved: Vec<usize> = (1..=entries.iter().map(LogEntry::epoch).max().unwrap_or(0))
        .filter(|&e| epoch_dir(checkpoints, e).join(MODEL).exists())
        .collect();
    // The epoch-end validation of epoch K is the first one logged with epoch = K.
    // The epoch and `key`'s value of each entry that has it, found once.
    let scored_entries: Vec<(usize, f64)> = entries.iter().filter_map(|e| Some((e.epoch(), e.get(key)?))).collect();
    let score = |k: usize| scored_entries.iter().find(|(e, _)| *e == k).map(|(_, v)| *v);
    let scored: Vec<(usize, f64)> = saved.iter().filter_map(|&k| score(k).map(|s| (k, s))).collect();
    Ok(match scored.iter().copied().reduce(|best, x| if x.1 > best.1 { x } else { best }) {
        Some((k, _)) => Some(k),
        None => saved.last().copied(),
    })
}

/// After `current` was written: keeps it and the newest `keep - 1` checkpoints before it whole
/// (`keep` 0 = every one); of the rest, the `best` epoch keeps its weights and position, its
/// optimizer state goes, and the others go (those past `current` too: a resume from an earlier
/// checkpoint abandoned them).
pub fn prune(checkpoints: &Path, current: &Path, keep: usize, best: Option<usize>) -> Result<(), LearnError> {
    if keep == 0 {
        return Ok(());
    }
    let now = read_position(current)?.update;
    let mut earlier = Vec::new();
    let mut doomed = Vec::new();
    for entry in fs::read_dir(checkpoints).map_err(|e| LearnError::io(checkpoints, e))? {
        let dir = entry.map_err(|e| LearnError::io(checkpoints, e))?.path();
        if dir == current || !dir.join(POSITION).is_file() {
            continue;
        }
        match read_position(&dir)?.update {
            u if u <= now => earlier.push((u, dir)),
            _ => doomed.push(dir),
        }
    }
    earlier.sort();
    let whole = keep - 1;
    doomed.extend(earlier.drain(..earlier.len().saturating_sub(whole)).map(|(_, dir)| dir));
    let best = best.map(|e| epoch_dir(checkpoints, e));
    for dir in doomed {
        let gone = if Some(&dir) == best.as_ref() {
            fs::remove_file(dir.join(OPTIMIZER)).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        } else {
            fs::remove_dir_all(&dir)
        };
        gone.map_err(|e| LearnError::io(&dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint folder at `update` (empty weight and optimizer files: pruning reads neither).
    fn fake(checkpoints: &Path, name: &str, epoch: usize, update: usize) -> PathBuf {
        let dir = checkpoints.join(name);
        fs::create_dir_all(&dir).unwrap();
        let pos = Position { epoch, update, ..Position::default() };
        fs::write(dir.join(POSITION), serde_json::to_vec(&pos).unwrap()).unwrap();
        fs::write(dir.join(MODEL), b"").unwrap();
        fs::write(dir.join(OPTIMIZER), b"").unwrap();
        dir
    }

    fn left(checkpoints: &Path) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = fs::read_dir(checkpoints)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|d| (d.file_name().unwrap().to_string_lossy().into_owned(), d.join(OPTIMIZER).exists()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_newest_stay_whole_the_best_keeps_its_weights_the_rest_go() {
        let dir = tempfile::tempdir().unwrap();
        let ckpts = dir.path();
        for e in 1..=5 {
            fake(ckpts, &format!("epoch_{e:04}"), e, 10 * e);
        }
        fake(ckpts, "update_0000045", 4, 45);
        prune(ckpts, &ckpts.join("epoch_0005"), 2, Some(2)).unwrap();
        let expected = [("epoch_0002", false), ("epoch_0005", true), ("update_0000045", true)];
        assert_eq!(left(ckpts), expected.map(|(n, o)| (n.to_string(), o)));
        assert!(ckpts.join("epoch_0002").join(MODEL).is_file(), "the best epoch's weights stay");
    }

    #[test]
    fn keep_zero_keeps_every_checkpoint_and_a_resume_abandons_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ckpts = dir.path();
        for e in 1..=3 {
            fake(ckpts, &format!("epoch_{e:04}"), e, 10 * e);
        }
        prune(ckpts, &ckpts.join("epoch_0003"), 0, None).unwrap();
        assert_eq!(left(ckpts).len(), 3);
        // Resumed from epoch 1 and written epoch 2 again, at an earlier update than before.
        fake(ckpts, "epoch_0002", 2, 15);
        prune(ckpts, &ckpts.join("epoch_0002"), 2, None).unwrap();
        let expected = [("epoch_0001", true), ("epoch_0002", true)];
        assert_eq!(left(ckpts), expected.map(|(n, o)| (n.to_string(), o)));
    }

    #[test]
    fn a_weights_only_checkpoint_is_refused_for_a_resume_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let root_dir = dir.path().display().to_string();
        let config = Config { root_dir, name: "r".into(), resume_epoch: 2, ..Config::default() };
        let ckpts = config.run_dir().join("checkpoints");
        for e in 1..=3 {
            fake(&ckpts, &format!("epoch_{e:04}"), e, 10 * e);
        }
        prune(&ckpts, &ckpts.join("epoch_0003"), 1, Some(2)).unwrap();
        let err = resume_point(&config, false).unwrap_err().to_string();
        assert!(err.contains("epoch_0002") && err.contains("keep_checkpoints"), "{err}");
        let gone = Config { resume_epoch: 1, ..config.clone() };
        assert!(resume_point(&gone, false).unwrap_err().to_string().contains("no checkpoint there"));
        let latest = Config { resume_epoch: 3, ..config };
        assert_eq!(resume_point(&latest, false).unwrap(), Some(ckpts.join("epoch_0003")));
    }
}
