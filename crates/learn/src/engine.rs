//! The training loop every method plugs into: accumulation, clipping, schedule, mixed precision,
//! validation, checkpoints with exact resume, a JSON-lines metrics log, plots and progress.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use patchtcga_loader::{Batch, Epoch, Loader};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{nn, Device, Tensor};

use crate::optim::{LossScale, Optimizer, Rule};
use crate::schedule::{cosine, Schedule};
use crate::config::{ClipMode, DeviceChoice};
use crate::{plot, Config, LearnError};

/// What a method computes for one micro-batch.
pub struct StepOutput {
    /// The loss to minimise (a scalar).
    pub loss: Tensor,
    /// Extra figures to log (accuracy, momentum, temperature, …).
    pub metrics: Vec<(String, f64)>,
}

/// A training method: a model and a loss. The engine owns everything else.
pub trait Method {
    /// All the method's variables (what checkpoints hold).
    fn var_store(&self) -> &nn::VarStore;
    /// Named parameters the optimizer updates: every variable that requires a gradient (frozen
    /// backbones and momentum targets do not), in name order.
    fn trainable(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> =
            self.var_store().variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
    /// Called before the micro-batches of each update with the run's progress in [0, 1]
    /// (schedules that shape the loss: teacher temperature, frozen layers).
    fn begin_update(&mut self, _progress: f64) {}
    /// Loss of one training micro-batch.
    fn step(&mut self, batch: &Batch) -> Result<StepOutput, LearnError>;
    /// Called after each update with the run's progress in [0, 1], counting that update
    /// (momentum targets and such).
    fn after_update(&mut self, _progress: f64) {}
    /// Metrics on a held-out loader, named without a prefix (`loss`, `accuracy`, …). Every rank
    /// of a distributed run calls it on its share; the metrics are of the whole set (`shards`).
    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError>;
}

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
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub position: Position,
    /// `stop_num_updates` was reached before the last epoch.
    pub stopped_early: bool,
    /// Last metrics of each name (`val_accuracy`, `test_accuracy`, …).
    pub last: Map<String, Value>,
    pub run_dir: PathBuf,
}

/// Writes `bytes` to `path` through a hidden temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LearnError> {
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    fs::write(&tmp, bytes).and_then(|_| fs::rename(&tmp, path)).map_err(|e| LearnError::io(path, e))
}

/// Clips gradients as `clip_norm` and `clip_mode` say; the norm before clipping (the largest
/// parameter's with `per_parameter`), NaN when clipping is off.
pub fn clip_gradients(opt: &mut Optimizer, config: &Config) -> f64 {
    match (config.clip_norm > 0.0, config.clip_mode) {
        (false, _) => f64::NAN,
        (true, ClipMode::PerParameter) => opt.clip_each_grad_norm(config.clip_norm),
        (true, ClipMode::Global) => opt.clip_grad_norm(config.clip_norm),
    }
}

/// The device a config names, checked against the GPUs this process sees.
pub fn device(choice: DeviceChoice) -> Result<Device, LearnError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        // A distributed run's process drives the GPU of its local rank.
        DeviceChoice::Cuda => {
            let visible = tch::Cuda::device_count().max(0) as usize;
            let local = std::env::var("LOCAL_RANK").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
            match visible {
                0 => Err(LearnError::Config("device cuda: no CUDA device is visible".into())),
                n if local >= n => Err(LearnError::Config(format!(
                    "device cuda: local rank {local} drives GPU {local}, but {n} GPU(s) are visible (one process \
                     per GPU; to share one, set device = \"cuda:0\" and dist_backend = \"gloo\")"
                ))),
                _ => Ok(Device::Cuda(local)),
            }
        }
        DeviceChoice::CudaIndex(n) if (n as i64) < tch::Cuda::device_count() => Ok(Device::Cuda(n)),
        other => Err(LearnError::Config(format!("device \"{other}\": cpu, cuda or cuda:N with a visible GPU"))),
    }
}

fn cpu_copy(named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    named.into_iter().map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous())).collect()
}

/// A checkpoint folder: `model.safetensors` (every variable, reference names), `optimizer.safetensors`,
/// `position.json`.
pub fn save_checkpoint(dir: &Path, vs: &nn::VarStore, opt: &Optimizer, pos: &Position) -> Result<(), LearnError> {
    let parent = dir.parent().expect("checkpoint folders live in a run folder");
    let tmp = parent.join(format!(".tmp-{}", dir.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint")));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| LearnError::io(&tmp, e))?;
    let mut vars: Vec<(String, Tensor)> = cpu_copy(vs.variables().into_iter().collect());
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&vars, tmp.join("model.safetensors"))?;
    Tensor::write_safetensors(&cpu_copy(opt.state_tensors()), tmp.join("optimizer.safetensors"))?;
    fs::write(tmp.join("position.json"), serde_json::to_vec_pretty(pos).expect("json"))
        .map_err(|e| LearnError::io(&tmp, e))?;
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| LearnError::io(dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| LearnError::io(dir, e))?;
    write_atomic(&parent.join("latest"), dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().as_bytes())
}

/// Restores a checkpoint folder into `vs` and `opt`.
pub fn load_checkpoint(dir: &Path, vs: &nn::VarStore, opt: &mut Optimizer) -> Result<Position, LearnError> {
    let bad = |cause: String| LearnError::Config(format!("checkpoint {}: {cause}", dir.display()));
    let pos: Position = serde_json::from_slice(
        &fs::read(dir.join("position.json")).map_err(|e| LearnError::io(&dir.join("position.json"), e))?,
    )
    .map_err(|e| bad(format!("position.json: {e}")))?;
    load_variables(vs, &dir.join("model.safetensors"))?;
    opt.load_state(Tensor::read_safetensors(dir.join("optimizer.safetensors"))?)?;
    Ok(pos)
}

/// Copies every variable of `vs` from a safetensors file of the same names and shapes.
pub fn load_variables(vs: &nn::VarStore, path: &Path) -> Result<(), LearnError> {
    let bad = |cause: String| LearnError::Config(format!("{}: {cause}", path.display()));
    let saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let t =
                saved.get(&name).ok_or_else(|| bad(format!("{name} is missing (a checkpoint of another model?)")))?;
            if t.size() != var.size() {
                return Err(bad(format!("{name} has shape {:?}, the model {:?}", t.size(), var.size())));
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
        ckpts.join(format!("epoch_{:04}", config.resume_epoch))
    } else if resume_latest {
        match fs::read_to_string(ckpts.join("latest")) {
            Ok(name) => ckpts.join(name.trim()),
            Err(_) => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    if !dir.join("position.json").exists() {
        return Err(LearnError::Config(format!("{}: no checkpoint there to resume from", dir.display())));
    }
    Ok(Some(dir))
}

struct Log {
    path: PathBuf,
    file: fs::File,
}

impl Log {
    /// Opens the metrics log, dropping entries after `update` (a resumed run rewrites them).
    fn open(path: PathBuf, keep_until: Option<usize>) -> Result<Self, LearnError> {
        let kept: Vec<String> = match (keep_until, fs::read_to_string(&path)) {
            (Some(u), Ok(text)) => text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<Value>(l)
                        .ok()
                        .and_then(|v| v["update"].as_u64())
                        .is_some_and(|x| x as usize <= u)
                })
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_atomic(&path, text.as_bytes())?;
        let file = fs::OpenOptions::new().append(true).open(&path).map_err(|e| LearnError::io(&path, e))?;
        Ok(Self { path, file })
    }

    fn write(&mut self, entry: &Value) -> Result<(), LearnError> {
        writeln!(self.file, "{entry}").map_err(|e| LearnError::io(&self.path, e))
    }
}

fn seed_for(seed: u64, epoch: usize, batch: usize) -> i64 {
    let z =
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (epoch as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ batch as u64;
    (z >> 1) as i64
}

/// Held-out loaders: validation during training, test at the end.
#[derive(Default)]
pub struct Holdout<'a> {
    pub val: Option<&'a Loader>,
    pub test: Option<&'a Loader>,
}

/// Gradient bucket size of a distributed run's overlapped all-reduce (DDP's default, 25 MiB).
const BUCKET_BYTES: usize = 25 << 20;

/// Gives every rank rank 0's weights, buffers and momentum targets (in name order: collectives
/// pair up by order).
pub fn broadcast_variables(g: &patchtcga_dist::ProcessGroup, vs: &nn::VarStore) -> Result<(), LearnError> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, t) in vars {
        g.broadcast(&t, 0)?;
    }
    Ok(())
}

/// Trains `method` on `train` as `config` says, in `config.run_dir()`.
pub fn train(
    config: &Config,
    method: &mut dyn Method,
    train: &Loader,
    holdout: Holdout,
    resume_latest: bool,
) -> Result<Summary, LearnError> {
    let run = config.run_dir();
    let ckpts = run.join("checkpoints");
    // In a distributed run every rank trains; rank 0 alone writes the run folder.
    let group = patchtcga_dist::group();
    let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world()));
    let leader = rank == 0;
    if leader {
        fs::create_dir_all(&ckpts).map_err(|e| LearnError::io(&ckpts, e))?;
        write_atomic(&run.join("config.toml"), config.to_toml().as_bytes())?;
    }
    let device = device(config.device)?;
    let amp = config.enable_autocast && device.is_cuda();

    let epoch_batches = train.batches_per_epoch();
    let per_epoch = epoch_batches / config.num_accum;
    if per_epoch == 0 {
        return Err(LearnError::Config(format!(
            "{epoch_batches} batches per epoch cannot make one update of {} accumulated batches",
            config.num_accum
        )));
    }
    let total_batch = config.batch_size * config.num_accum * world;
    let schedule = Schedule {
        peak: Schedule::peak_lr(config.lr, total_batch, config.base_batch_size),
        cold: (config.cold_epochs * per_epoch as f64).round() as usize,
        warmup: (config.warmup_epochs * per_epoch as f64).round() as usize,
        total: config.epochs * per_epoch,
    };
    let mut opt =
        Optimizer::new(Rule::new(config.optim, config.momentum, config.betas), config.wd, method.trainable());
    let mut pos = Position { loss_scale: LossScale::default().scale, ..Default::default() };
    let resumed = resume_point(config, resume_latest)?;
    if let Some(dir) = &resumed {
        pos = load_checkpoint(dir, method.var_store(), &mut opt)?;
        eprintln!("resuming from {} (epoch {}, batch {}, update {})", dir.display(), pos.epoch, pos.batch, pos.update);
    }
    if let Some(g) = group {
        patchtcga_dist::set_sync_batch_norm(config.sync_batch_norm);
        broadcast_variables(g, method.var_store())?;
    }
    let mut scale = LossScale { scale: pos.loss_scale, clean: pos.clean_updates };
    let mut buckets: Option<patchtcga_dist::GradientBuckets> = None;
    let mut log =
        if leader { Some(Log::open(run.join("metrics.jsonl"), resumed.as_ref().map(|_| pos.update))?) } else { None };
    let mut last = Map::new();
    let record = |log: &mut Option<Log>, last: &mut Map<String, Value>, entry: Value| -> Result<(), LearnError> {
        if let Value::Object(m) = &entry {
            for (k, v) in m {
                last.insert(k.clone(), v.clone());
            }
        }
        log.as_mut().map_or(Ok(()), |l| l.write(&entry))
    };

    let evaluate = |method: &mut dyn Method, loader: &Loader, set: &str, pos: &Position| -> Result<Value, LearnError> {
        let mut e = json!({"update": pos.update, "epoch": pos.epoch});
        for (k, v) in method.evaluate(loader)? {
            e[format!("{set}_{k}")] = json!(v);
        }
        Ok(e)
    };

    let mut stopped_early = false;
    let bar_style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}")
        .expect("template")
        .progress_chars("=> ");
    // The next epoch's batches start once this epoch's producer is done (only prefetched batches
    // left), so the workers go on through the epoch's tail, validation and checkpoint and the
    // next epoch does not start empty.
    let mut next_epoch: Option<Epoch> = None;
    'epochs: while pos.epoch < config.epochs {
        let bar = if leader {
            ProgressBar::new(epoch_batches as u64).with_style(bar_style.clone())
        } else {
            ProgressBar::hidden()
        };
        bar.set_prefix(format!("epoch {}/{}", pos.epoch + 1, config.epochs));
        bar.set_position(pos.batch as u64);
        let (mut micro, mut loss_sum) = (0usize, 0.0f64);
        let (mut waited, mut clock, mut images) = (0.0f64, Instant::now(), 0usize);
        let mut batches = match next_epoch.take() {
            Some(started) => started,
            None => train.epoch_from(pos.epoch as u64, pos.batch),
        };
        loop {
            let t0 = Instant::now();
            let Some(batch) = batches.next() else { break };
            waited += t0.elapsed().as_secs_f64();
            let batch = batch?;
            if micro == 0 {
                method.begin_update(pos.update as f64 / schedule.total.max(1) as f64);
            }
            tch::manual_seed(seed_for(
                config.seed ^ (rank as u64).wrapping_mul(0xA24B_AED4_963E_E407),
                pos.epoch,
                pos.batch,
            ));
            let out = tch::autocast(amp, || method.step(&batch))?;
            let factor = if amp { scale.scale } else { 1.0 } / config.num_accum as f64;
            if let Some(b) = buckets.as_ref().filter(|_| micro + 1 == config.num_accum) {
                b.arm(); // the last micro-batch: all-reduce gradients while backward runs
            }
            (&out.loss * factor).f_backward()?;
            loss_sum += out.loss.double_value(&[]);
            let extra = out.metrics;
            images += batch.labels.len();
            micro += 1;
            pos.batch += 1;
            bar.inc(1);
            if next_epoch.is_none() && pos.epoch + 1 < config.epochs && pos.batch + train.lookahead() >= epoch_batches {
                next_epoch = Some(train.epoch(pos.epoch as u64 + 1));
            }
            if micro < config.num_accum {
                continue;
            }
            let (mut reduced_bytes, mut overlapped) = (0, 0);
            if let Some(g) = group {
                // Data parallelism: the mean of every rank's gradient. Buckets all-reduced during
                // the backward pass once every gradient lives in the optimizer's flat buffers;
                // before that (the first update), the buffers after it.
                match &buckets {
                    Some(b) => {
                        b.finish()?;
                        overlapped = b.len();
                    }
                    None => {
                        for t in opt.flat_grads() {
                            g.all_reduce_sum(&t)?;
                        }
                    }
                }
                for t in opt.flat_grads() {
                    let _ = t.shallow_clone().g_mul_scalar_(1.0 / world as f64);
                    reduced_bytes += t.numel() * t.kind().elt_size_in_bytes();
                }
                if buckets.is_none() {
                    if let Some((flat, params)) = opt.gradient_layout() {
                        buckets = Some(g.gradient_buckets(&flat, &params, BUCKET_BYTES)?);
                    }
                }
            }
            let finite = if amp { opt.unscale_grads(1.0 / scale.scale) } else { true };
            let take = !amp || scale.update(finite);
            let grad_norm = if take { clip_gradients(&mut opt, config) } else { f64::NAN };
            let lr = schedule.lr(pos.update);
            let wd = match config.wd_end {
                Some(end) => cosine(config.wd, end, pos.update as f64 / schedule.total.max(1) as f64),
                None => config.wd,
            };
            opt.set_weight_decay(wd);
            if take {
                opt.step(lr);
            }
            opt.zero_grad();
            pos.update += 1;
            method.after_update(pos.update as f64 / schedule.total.max(1) as f64);
            let secs = clock.elapsed().as_secs_f64();
            let loss = loss_sum / micro as f64;
            let mut entry = json!({
                "update": pos.update, "epoch": pos.epoch, "batch": pos.batch, "lr": lr, "loss": loss,
                "images_per_s": images as f64 / secs.max(1e-9), "data_wait": waited / secs.max(1e-9),
            });
            if config.wd_end.is_some() {
                entry["wd"] = json!(wd);
            }
            if world > 1 {
                entry["world"] = json!(world);
                entry["allreduce_mib"] = json!(reduced_bytes as f64 / (1 << 20) as f64);
                // Buckets all-reduced during the backward pass (0: after it, a message per group).
                entry["allreduce_buckets"] = json!(overlapped);
            }
            if grad_norm.is_finite() {
                entry["grad_norm"] = json!(grad_norm);
            }
            if amp {
                entry["loss_scale"] = json!(scale.scale);
            }
            for (k, v) in &extra {
                entry[k.as_str()] = json!(v);
            }
            record(&mut log, &mut last, entry)?;
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
            (micro, loss_sum, waited, images, clock) = (0, 0.0, 0.0, 0, Instant::now());
            if let Some(val) = holdout.val {
                if config.val_every > 0 && pos.update.is_multiple_of(config.val_every) {
                    let e = evaluate(method, val, "val", &pos)?;
                    record(&mut log, &mut last, e)?;
                }
            }
            if config.stop_num_updates > 0 && pos.update >= config.stop_num_updates {
                (pos.loss_scale, pos.clean_updates) = (scale.scale, scale.clean);
                if leader {
                    save_checkpoint(&ckpts.join(format!("update_{:07}", pos.update)), method.var_store(), &opt, &pos)?;
                }
                bar.abandon_with_message(format!("stopped at update {} (stop_num_updates)", pos.update));
                stopped_early = true;
                break 'epochs;
            }
        }
        opt.zero_grad(); // a tail shorter than num_accum does not make an update
        bar.finish();
        pos.epoch += 1;
        pos.batch = 0;
        if let Some(val) = holdout.val {
            let e = evaluate(method, val, "val", &pos)?;
            record(&mut log, &mut last, e)?;
        }
        if leader && (pos.epoch.is_multiple_of(config.snapshot_epoch.max(1)) || pos.epoch == config.epochs) {
            (pos.loss_scale, pos.clean_updates) = (scale.scale, scale.clean);
            save_checkpoint(&ckpts.join(format!("epoch_{:04}", pos.epoch)), method.var_store(), &opt, &pos)?;
        }
        if leader {
            plot::curves(&run.join("metrics.jsonl"), &run.join("plots"))?;
        }
    }
    if !stopped_early {
        if let Some(test) = holdout.test {
            let e = evaluate(method, test, "test", &pos)?;
            record(&mut log, &mut last, e)?;
        }
    }
    if !stopped_early && leader {
        let mut vars: Vec<(String, Tensor)> = cpu_copy(method.var_store().variables().into_iter().collect());
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Tensor::write_safetensors(&vars, run.join(".model.safetensors.tmp"))?;
        fs::rename(run.join(".model.safetensors.tmp"), run.join("model.safetensors"))
            .map_err(|e| LearnError::io(&run, e))?;
    }
    if leader {
        plot::curves(&run.join("metrics.jsonl"), &run.join("plots"))?;
    }
    if let Some(g) = group {
        g.barrier()?; // the others wait for rank 0's last writes
    }
    Ok(Summary { position: pos, stopped_early, last, run_dir: run })
}
