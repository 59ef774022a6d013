//! A fold's place between epochs: its network, the optimizer's state, the best epoch so far and
//! its parameters, in one safetensors file written atomically after every epoch, so that a run
//! stopped mid-fold resumes at its last finished epoch and ends as an uninterrupted one; and a
//! fold's final model.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Kind, Tensor};

use patchtcga_engine::checkpoint::copy_variables;
use patchtcga_engine::optim::Optimizer;
use patchtcga_engine::LearnError;

/// The epoch of lowest validation loss so far and a copy of its parameters.
pub struct Best {
    pub epoch: usize,
    pub loss: f64,
    pub parameters: HashMap<String, Tensor>,
}

impl Best {
    /// No epoch yet.
    pub fn none() -> Self {
        Self { epoch: 0, loss: f64::INFINITY, parameters: HashMap::new() }
    }

    /// Keeps `vs`'s parameters if `loss` is the lowest so far.
    pub fn offer(&mut self, epoch: usize, loss: f64, vs: &nn::VarStore) {
        if loss < self.loss {
            let parameters = vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
            *self = Self { epoch, loss, parameters };
        }
    }
}

/// Writes the fold's state after `epoch` to `path`.
pub fn save(path: &Path, epoch: usize, vs: &nn::VarStore, opt: &Optimizer, best: &Best) -> Result<(), LearnError> {
    let cpu = |prefix: &'static str, named: Vec<(String, Tensor)>| {
        named.into_iter().map(move |(n, t)| (format!("{prefix}.{n}"), t.to_device(tch::Device::Cpu).contiguous()))
    };
    let position = Tensor::from_slice(&[epoch as f64, best.epoch as f64, best.loss]);
    let tensors: Vec<(String, Tensor)> = cpu("model", vs.variables().into_iter().collect())
        .chain(cpu("best", best.parameters.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect()))
        .chain(cpu("optimizer", opt.state_tensors()))
        .chain([("position".to_owned(), position)])
        .collect();
    Ok(patchtcga_model::write_safetensors(path, &tensors, &[])?)
}

/// Restores the state `path` holds into `vs`, `opt` and `best`; the epochs it had finished.
pub fn restore(path: &Path, vs: &nn::VarStore, opt: &mut Optimizer, best: &mut Best) -> Result<usize, LearnError> {
    let bad =
        |cause: String| LearnError::Config(format!("{}: {cause} (delete it to train the fold afresh)", path.display()));
    let mut saved: HashMap<String, Tensor> =
        Tensor::read_safetensors(path).map_err(|e| bad(e.to_string()))?.into_iter().collect();
    let position = saved.remove("position").ok_or_else(|| bad("no position".into()))?;
    let position = Vec::<f64>::try_from(position.to_kind(Kind::Double)).map_err(|e| bad(e.to_string()))?;
    let [epoch, best_epoch, best_loss] = position[..] else { return Err(bad("a malformed position".into())) };
    let mut part = |prefix: &str| -> Vec<(String, Tensor)> {
        let keys: Vec<String> = saved.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        keys.into_iter().map(|k| (k[prefix.len()..].to_owned(), saved.remove(&k).expect("listed"))).collect()
    };
    let (model, parameters, optimizer) = (part("model."), part("best."), part("optimizer."));
    copy_variables(vs, &model.into_iter().collect()).map_err(bad)?;
    opt.load_state(optimizer).map_err(|e| bad(e.to_string()))?;
    let device = vs.device();
    let parameters = parameters.into_iter().map(|(n, t)| (n, t.to_device(device))).collect();
    *best = Best { epoch: best_epoch as usize, loss: best_loss, parameters };
    Ok(epoch as usize)
}

/// Writes a fold's model parameters (safetensors, CLAM's names), atomically.
pub fn save_model(vs: &nn::VarStore, path: &Path) -> Result<(), LearnError> {
    let tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    Ok(patchtcga_model::write_safetensors(path, &tensors, &[])?)
}
