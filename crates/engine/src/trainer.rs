//! The training loop every method plugs into: accumulation, clipping, schedule, mixed precision,
//! validation, checkpoints (`checkpoint`) with exact resume, a JSON-lines metrics log, plots and progress.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use patchtcga_dataset::Split;
use patchtcga_loader::{Batch, Epoch, Loader};
use std::collections::BTreeMap;

use patchtcga_metrics::run::{read_log, EvaluationRecord, LogEntry, UpdateRecord, LOG_FILE};
use tch::{nn, Device, Tensor};

use crate::checkpoint::{best_epoch, cpu_copy, load_checkpoint, prune, resume_point, save_checkpoint, Position};
use crate::config::{ClipMode, OnNonFinite};
use crate::optim::{LossScale, Optimizer, Rule};
use crate::schedule::{cosine, Schedule};
use crate::tensorboard::{self, EventWriter};
use crate::{plot, write_atomic, Config, LearnError, RunContext};

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
    /// The validation figure that selects a run's best epoch (`val_accuracy`), whose weights
    /// outlive checkpoint pruning; none for methods without one (self-supervised pretraining).
    fn selection_key(&self) -> Option<&'static str> {
        None
    }
    /// What the method's set-up did that its user should hear (weights loaded), a line each.
    fn notes(&self) -> &[String] {
        &[]
    }
}

/// What a run reports as it goes (rank 0's run only), for the binary to draw and print.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress<'a> {
    /// A line of the method's set-up ([`Method::notes`]).
    Note(&'a str),
    /// The run resumed from the checkpoint `from`, at `position`.
    Resumed { from: &'a Path, position: Position },
    /// Epoch `epoch` (from 1) of `epochs` began, `batches` long, `done` of them consumed before.
    Epoch { epoch: usize, epochs: usize, batches: usize, done: usize },
    /// A micro-batch was consumed.
    Batch,
    /// An update was taken: its loss and learning rate.
    Update { loss: f64, lr: f64 },
    /// The epoch's batches are all consumed.
    EpochDone,
    /// `stop_num_updates` stopped the run after update `update`.
    Stopped { update: usize },
    /// An unreadable sample was left out of its batch (the file and the cause).
    Skipped(&'a str),
}

/// Where a run's [`Progress`] goes.
pub type OnProgress<'a> = &'a mut dyn FnMut(Progress);

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub position: Position,
    /// `stop_num_updates` was reached before the last epoch.
    pub stopped_early: bool,
    /// Last value of each figure of the log (`val_accuracy`, `test_accuracy`, …).
    pub last: BTreeMap<String, f64>,
    pub run_dir: PathBuf,
}

/// Where the run stopped if early, then the last loss and accuracies logged: a line each, each
/// ending in a line break.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.stopped_early {
            writeln!(f, "stopped at update {} (stop_num_updates); continue with --resume", self.position.update)?;
        }
        for key in ["loss", "val_accuracy", "test_accuracy", "val_knn_accuracy", "test_knn_accuracy"] {
            if let Some(&v) = self.last.get(key) {
                writeln!(f, "{key}: {v:.4}")?;
            }
        }
        Ok(())
    }
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

/// The JSON-lines metrics log.
struct Log {
    path: PathBuf,
    file: fs::File,
}

impl Log {
    /// Opens the metrics log, dropping entries after `update` (a resumed run rewrites them).
    fn open(path: PathBuf, keep_until: Option<usize>) -> Result<Self, LearnError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let kept: Vec<String> = match keep_until {
            Some(u) => read_log(dir)
                .map_err(LearnError::Config)?
                .iter()
                .filter(|e| e.update() <= u)
                .map(|e| serde_json::to_string(e).expect("log entries serialise"))
                .collect(),
            None => Vec::new(),
        };
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_atomic(&path, text.as_bytes())?;
        let file = fs::OpenOptions::new().append(true).open(&path).map_err(|e| LearnError::io(&path, e))?;
        Ok(Self { path, file })
    }

    fn write(&mut self, entry: &LogEntry) -> Result<(), LearnError> {
        let line = serde_json::to_string(entry).expect("log entries serialise");
        writeln!(self.file, "{line}").map_err(|e| LearnError::io(&self.path, e))
    }
}

/// Where a run's metrics go: the JSON-lines log and a TensorBoard event file (rank 0 only), and
/// the last value of each name (every rank).
struct RunLog {
    files: Option<(Log, EventWriter)>,
    last: BTreeMap<String, f64>,
}

impl RunLog {
    /// Opens the run's log files when `leader`; `resumed_at`: the update a resumed run restarts
    /// from (later entries are dropped, and superseded in TensorBoard).
    fn open(run: &Path, leader: bool, resumed_at: Option<usize>) -> Result<Self, LearnError> {
        let files = if leader {
            Some((Log::open(run.join(LOG_FILE), resumed_at)?, EventWriter::create(run, resumed_at)?))
        } else {
            None
        };
        Ok(Self { files, last: BTreeMap::new() })
    }

    /// Records one entry: in both files, and as the last values.
    fn record(&mut self, entry: LogEntry) -> Result<(), LearnError> {
        let scalars = entry.scalars();
        self.last.extend(scalars.iter().cloned());
        if let Some((log, events)) = &mut self.files {
            log.write(&entry)?;
            let tagged: Vec<(String, f64)> =
                scalars.into_iter().filter_map(|(k, v)| Some((tensorboard::tag(&k)?, v))).collect();
            events.scalars(entry.update(), &tagged)?;
        }
        Ok(())
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
pub fn broadcast_variables(g: &patchtcga_collective::ProcessGroup, vs: &nn::VarStore) -> Result<(), LearnError> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, t) in vars {
        g.broadcast(&t, 0)?;
    }
    Ok(())
}

/// Trains `method` on `train` as `config` says, in `config.run_dir()`, where `context` stands.
pub fn train(
    config: &Config,
    context: &RunContext,
    method: &mut dyn Method,
    train: &Loader,
    holdout: Holdout,
    resume_latest: bool,
    on_progress: OnProgress,
) -> Result<Summary, LearnError> {
    let mut t = Trainer::new(config, context, method, train, resume_latest, on_progress)?;
    let mut stopped_early = false;
    // The next epoch's batches start once this epoch's producer is done (only prefetched batches
    // left), so the workers go on through the epoch's tail, validation and checkpoint and the
    // next epoch does not start empty.
    let mut next_epoch: Option<Epoch> = None;
    while t.pos.epoch < config.epochs && !stopped_early {
        let batches = next_epoch.take().unwrap_or_else(|| train.epoch_from(t.pos.epoch as u64, t.pos.batch));
        stopped_early = t.epoch(method, train, batches, &holdout, &mut next_epoch)?;
    }
    t.finish(method, &holdout, stopped_early)
}

/// Times `steps` updates of `method` on one fixed `batch` after `warmup` untimed ones, through the
/// very steps of training (micro-steps under autocast, loss scale or non-finite check, clipping,
/// the optimizer, momentum targets) but writing nothing: seconds per update.
pub fn time_updates(
    config: &Config,
    context: &RunContext,
    method: &mut dyn Method,
    batch: &Batch,
    warmup: usize,
    steps: usize,
) -> Result<f64, LearnError> {
    let mut quiet = |_: Progress| {};
    let mut t = Trainer::bare(config, context, method, (warmup + steps).max(1) * config.num_accum, &mut quiet)?;
    let sync = || {
        if let Device::Cuda(i) = context.device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let mut start = Instant::now();
    for u in 0..warmup + steps {
        if u == warmup {
            sync();
            start = Instant::now();
        }
        let mut pending = Pending::new();
        while pending.micro < config.num_accum {
            t.micro_step(method, batch, &mut pending)?;
        }
        t.update(method, &pending)?;
    }
    sync();
    Ok(start.elapsed().as_secs_f64() / steps.max(1) as f64)
}

/// The micro-batches of the update under way.
struct Pending {
    micro: usize,
    loss_sum: f64,
    /// Seconds spent waiting for batches.
    waited: f64,
    images: usize,
    clock: Instant,
    /// The method's figures of the last micro-batch.
    extra: Vec<(String, f64)>,
    /// Batch-norm statistics before the update's forward passes, with the variables they
    /// restore if the update is skipped (`on_nonfinite = "skip"`).
    saved_stats: Vec<(Tensor, Tensor)>,
}

impl Pending {
    fn new() -> Self {
        let clock = Instant::now();
        Self { micro: 0, loss_sum: 0.0, waited: 0.0, images: 0, clock, extra: Vec::new(), saved_stats: Vec::new() }
    }
}

/// Copies of the batch-norm running statistics of `vs`, beside the variables themselves.
fn running_stats(vs: &nn::VarStore) -> Vec<(Tensor, Tensor)> {
    let stats = vs.variables().into_iter().filter(|(n, _)| n.ends_with("running_mean") || n.ends_with("running_var"));
    stats.map(|(_, t)| (t.copy(), t)).collect()
}

/// One run's state between its steps: micro-step, update, log, validate, checkpoint.
struct Trainer<'a> {
    config: &'a Config,
    run: PathBuf,
    group: Option<&'static patchtcga_collective::ProcessGroup>,
    rank: usize,
    world: usize,
    /// Rank 0, which alone writes the run folder.
    leader: bool,
    amp: bool,
    epoch_batches: usize,
    schedule: Schedule,
    opt: Optimizer,
    pos: Position,
    scale: LossScale,
    buckets: Option<patchtcga_collective::GradientBuckets<'static>>,
    log: RunLog,
    /// The last checkpoint written or resumed from (named when a run stops on a non-finite loss).
    last_checkpoint: Option<PathBuf>,
    on_progress: OnProgress<'a>,
}

impl<'a> Trainer<'a> {
    /// Sets the run up: its folder, schedule and optimizer, the checkpoint it resumes from, and
    /// in a distributed run every rank on rank 0's weights.
    fn new(
        config: &'a Config,
        context: &RunContext,
        method: &mut dyn Method,
        train: &Loader,
        resume_latest: bool,
        on_progress: OnProgress<'a>,
    ) -> Result<Self, LearnError> {
        let mut t = Self::bare(config, context, method, train.batches_per_epoch(), on_progress)?;
        for note in method.notes() {
            t.tell(Progress::Note(note));
        }
        if t.leader {
            let ckpts = t.run.join("checkpoints");
            fs::create_dir_all(&ckpts).map_err(|e| LearnError::io(&ckpts, e))?;
            write_atomic(&t.run.join("config.toml"), config.to_toml().as_bytes())?;
        }
        let resumed = resume_point(config, resume_latest)?;
        if let Some(dir) = &resumed {
            t.pos = load_checkpoint(dir, method.var_store(), &mut t.opt)?;
            t.scale = LossScale { scale: t.pos.loss_scale, clean: t.pos.clean_updates };
            t.tell(Progress::Resumed { from: dir, position: t.pos });
        }
        if let Some(g) = t.group {
            broadcast_variables(g, method.var_store())?;
        }
        t.log = RunLog::open(&t.run, t.leader, resumed.as_ref().map(|_| t.pos.update))?;
        t.last_checkpoint = resumed;
        Ok(t)
    }

    /// A trainer of `epoch_batches` batches an epoch that writes nothing: schedule, optimizer,
    /// position at the start, metrics kept in memory.
    fn bare(
        config: &'a Config,
        context: &RunContext,
        method: &dyn Method,
        epoch_batches: usize,
        on_progress: OnProgress<'a>,
    ) -> Result<Self, LearnError> {
        let group = context.group;
        let (rank, world) = (context.rank(), context.world());
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
        let rule = Rule::new(config.optim, config.momentum, config.betas);
        Ok(Self {
            config,
            run: config.run_dir(),
            group,
            rank,
            world,
            leader: rank == 0,
            amp: config.enable_autocast && context.device.is_cuda(),
            epoch_batches,
            schedule,
            opt: Optimizer::new(rule, config.wd, method.trainable()),
            pos: Position { loss_scale: LossScale::default().scale, ..Default::default() },
            scale: LossScale::default(),
            buckets: None,
            log: RunLog { files: None, last: BTreeMap::new() },
            last_checkpoint: None,
            on_progress,
        })
    }

    /// The run's progress in [0, 1], by updates.
    fn progress(&self) -> f64 {
        self.pos.update as f64 / self.schedule.total.max(1) as f64
    }

    /// One epoch (from where the run stands in it): micro-steps, updates, validation, the
    /// epoch's checkpoint and plots. True when `stop_num_updates` stopped the run.
    fn epoch(
        &mut self,
        method: &mut dyn Method,
        train: &Loader,
        mut batches: Epoch,
        holdout: &Holdout,
        next_epoch: &mut Option<Epoch>,
    ) -> Result<bool, LearnError> {
        let c = self.config;
        let (epoch, epochs, done) = (self.pos.epoch + 1, c.epochs, self.pos.batch);
        self.tell(Progress::Epoch { epoch, epochs, batches: self.epoch_batches, done });
        let mut pending = Pending::new();
        loop {
            let t0 = Instant::now();
            let Some(batch) = batches.next() else { break };
            pending.waited += t0.elapsed().as_secs_f64();
            self.micro_step(method, &batch?, &mut pending)?;
            self.tell(Progress::Batch);
            if next_epoch.is_none()
                && self.pos.epoch + 1 < c.epochs
                && self.pos.batch + train.lookahead() >= self.epoch_batches
            {
                *next_epoch = Some(train.epoch(self.pos.epoch as u64 + 1));
            }
            if pending.micro < c.num_accum {
                continue;
            }
            let loss = self.update(method, &pending)?;
            let lr = self.schedule.lr(self.pos.update - 1);
            self.tell(Progress::Update { loss, lr });
            pending = Pending::new();
            if let Some(val) = holdout.val.filter(|_| c.val_every > 0 && self.pos.update.is_multiple_of(c.val_every)) {
                self.evaluate(method, val, Split::Val)?;
            }
            if c.stop_num_updates > 0 && self.pos.update >= c.stop_num_updates {
                self.checkpoint(method, format!("update_{:07}", self.pos.update))?;
                self.tell_skipped(&batches);
                self.tell(Progress::Stopped { update: self.pos.update });
                return Ok(true);
            }
        }
        self.opt.zero_grad(); // a tail shorter than num_accum does not make an update
        self.tell_skipped(&batches);
        self.tell(Progress::EpochDone);
        self.pos.epoch += 1;
        self.pos.batch = 0;
        if let Some(val) = holdout.val {
            self.evaluate(method, val, Split::Val)?;
        }
        if self.pos.epoch.is_multiple_of(c.snapshot_epoch.max(1)) || self.pos.epoch == c.epochs {
            self.checkpoint(method, format!("epoch_{:04}", self.pos.epoch))?;
        }
        self.plot()?;
        Ok(false)
    }

    /// Reports the samples `batches` left out.
    fn tell_skipped(&mut self, batches: &Epoch) {
        for e in batches.skipped() {
            self.tell(Progress::Skipped(&e.to_string()));
        }
    }

    /// Reports `p` from rank 0.
    fn tell(&mut self, p: Progress) {
        if self.leader {
            (self.on_progress)(p);
        }
    }

    /// Forward and backward of one micro-batch, its gradient accumulated (scaled for autocast and
    /// accumulation); the last of an update arms the overlapped all-reduce.
    fn micro_step(&mut self, method: &mut dyn Method, batch: &Batch, p: &mut Pending) -> Result<(), LearnError> {
        if p.micro == 0 {
            method.begin_update(self.progress());
            if self.config.on_nonfinite == OnNonFinite::Skip {
                p.saved_stats = running_stats(method.var_store());
            }
        }
        let rank_seed = self.config.seed ^ (self.rank as u64).wrapping_mul(0xA24B_AED4_963E_E407);
        tch::manual_seed(seed_for(rank_seed, self.pos.epoch, self.pos.batch));
        let sync = self.group.filter(|_| self.config.sync_batch_norm);
        let out = patchtcga_model::norm::synchronised(sync, || tch::autocast(self.amp, || method.step(batch)))??;
        let factor = if self.amp { self.scale.scale } else { 1.0 } / self.config.num_accum as f64;
        if let Some(b) = self.buckets.as_ref().filter(|_| p.micro + 1 == self.config.num_accum) {
            b.arm(); // the last micro-batch: all-reduce gradients while backward runs
        }
        (&out.loss * factor).f_backward()?;
        p.loss_sum += out.loss.double_value(&[]);
        p.extra = out.metrics;
        p.images += batch.labels.len();
        p.micro += 1;
        self.pos.batch += 1;
        Ok(())
    }

    /// Data parallelism: every rank's gradient replaced by their mean. Buckets are all-reduced
    /// during the backward pass once every gradient lives in the optimizer's flat buffers;
    /// before that (the first update), the buffers after it. Returns the bytes reduced and the
    /// buckets overlapped with the backward pass.
    fn reduce_gradients(&mut self) -> Result<(usize, usize), LearnError> {
        let Some(g) = self.group else { return Ok((0, 0)) };
        let mut overlapped = 0;
        match &self.buckets {
            Some(b) => {
                b.finish()?;
                overlapped = b.len();
            }
            None => {
                for t in self.opt.flat_grads() {
                    g.all_reduce_sum(&t)?;
                }
            }
        }
        let mut bytes = 0;
        for t in self.opt.flat_grads() {
            let _ = t.shallow_clone().g_mul_scalar_(1.0 / self.world as f64);
            bytes += t.numel() * t.kind().elt_size_in_bytes();
        }
        if self.buckets.is_none() {
            if let Some((flat, params)) = self.opt.gradient_layout() {
                self.buckets = Some(g.gradient_buckets(&flat, &params, BUCKET_BYTES)?);
            }
        }
        Ok((bytes, overlapped))
    }

    /// Whether to take the update: float16 autocast keeps GradScaler's skip-and-rescale; otherwise
    /// a non-finite loss or gradient (on any rank) stops the run or is skipped, as
    /// `on_nonfinite` says.
    fn take_update(&mut self, loss: f64, p: &Pending) -> Result<bool, LearnError> {
        if self.amp {
            let finite = self.opt.unscale_grads(1.0 / self.scale.scale);
            return Ok(self.scale.update(finite));
        }
        let grads_finite = self.opt.grads_finite();
        let mut bad = !loss.is_finite() || !grads_finite;
        if let Some(g) = self.group {
            let flag = Tensor::from_slice(&[f64::from(u8::from(bad))]);
            g.all_reduce_sum(&flag)?;
            bad = flag.double_value(&[0]) > 0.0;
        }
        if !bad {
            return Ok(true);
        }
        match self.config.on_nonfinite {
            OnNonFinite::Skip => {
                // The skipped forward passes leave no trace in the batch-norm statistics either.
                tch::no_grad(|| p.saved_stats.iter().for_each(|(saved, var)| var.shallow_clone().copy_(saved)));
                self.pos.skipped_updates += 1;
                Ok(false)
            }
            OnNonFinite::Stop => Err(self.diverged(loss, grads_finite)),
        }
    }

    /// The error of a run stopped on a non-finite loss: where, and what to do.
    fn diverged(&self, loss: f64, grads_finite: bool) -> LearnError {
        let what = if loss.is_finite() && !grads_finite {
            format!("the gradients are not finite (loss {loss})")
        } else if loss.is_finite() {
            "the loss is not finite on another rank".to_string()
        } else {
            format!("the loss is {loss}")
        };
        let last = match &self.last_checkpoint {
            Some(dir) => {
                format!("the last good checkpoint, {}, is intact: resume from it with --resume", dir.display())
            }
            None => "no checkpoint was written before it".into(),
        };
        LearnError::Diverged(format!(
            "{}: update {} (epoch {}, batch {}): {what}; training stopped (on_nonfinite = \"stop\") and no weights \
             were written; {last} after lowering lr, or set on_nonfinite = \"skip\" to drop such updates",
            self.run.display(),
            self.pos.update + 1,
            self.pos.epoch + 1,
            self.pos.batch
        ))
    }

    /// Reduces, checks, clips and applies the accumulated gradients at the schedule's learning
    /// rate and weight decay, then logs the update. Returns its mean loss.
    fn update(&mut self, method: &mut dyn Method, p: &Pending) -> Result<f64, LearnError> {
        let c = self.config;
        let (reduced_bytes, overlapped) = self.reduce_gradients()?;
        let loss = p.loss_sum / p.micro as f64;
        let take = self.take_update(loss, p)?;
        let grad_norm = if take { clip_gradients(&mut self.opt, c) } else { f64::NAN };
        let lr = self.schedule.lr(self.pos.update);
        let wd = match c.wd_end {
            Some(end) => cosine(c.wd, end, self.progress()),
            None => c.wd,
        };
        self.opt.set_weight_decay(wd);
        if take {
            self.opt.step(lr);
        }
        self.opt.zero_grad();
        self.pos.update += 1;
        method.after_update(self.progress());
        let secs = p.clock.elapsed().as_secs_f64().max(1e-9);
        let entry = UpdateRecord {
            update: self.pos.update,
            epoch: self.pos.epoch,
            batch: self.pos.batch,
            lr,
            loss,
            images_per_s: p.images as f64 / secs,
            data_wait: p.waited / secs,
            wd: c.wd_end.map(|_| wd),
            world: (self.world > 1).then_some(self.world),
            allreduce_mib: (self.world > 1).then(|| reduced_bytes as f64 / (1 << 20) as f64),
            allreduce_buckets: (self.world > 1).then_some(overlapped),
            grad_norm: grad_norm.is_finite().then_some(grad_norm),
            loss_scale: self.amp.then_some(self.scale.scale),
            skipped_updates: (self.pos.skipped_updates > 0).then_some(self.pos.skipped_updates),
            method: p.extra.iter().map(|(k, v)| (k.clone(), Some(*v))).collect(),
        };
        self.log.record(LogEntry::Update(entry))?;
        Ok(loss)
    }

    /// Metrics of `loader` (every rank its share), logged as `<set>_<name>`.
    fn evaluate(&mut self, method: &mut dyn Method, loader: &Loader, set: Split) -> Result<(), LearnError> {
        let metrics = method.evaluate(loader)?.into_iter().map(|(k, v)| (format!("{set}_{k}"), Some(v))).collect();
        self.log.record(LogEntry::Evaluation(EvaluationRecord {
            update: self.pos.update,
            epoch: self.pos.epoch,
            metrics,
        }))
    }

    /// Writes checkpoint `name` (rank 0) with the run's position, then prunes the older ones as
    /// `keep_checkpoints` says.
    fn checkpoint(&mut self, method: &dyn Method, name: String) -> Result<(), LearnError> {
        (self.pos.loss_scale, self.pos.clean_updates) = (self.scale.scale, self.scale.clean);
        let ckpts = self.run.join("checkpoints");
        let dir = ckpts.join(name);
        if self.leader {
            let attributes = self.config.backbone_spec()?.attributes();
            save_checkpoint(&dir, method.var_store(), &self.opt, &self.pos, &attributes)?;
            let best = method.selection_key().map(|key| best_epoch(&self.run, &ckpts, key)).transpose()?.flatten();
            prune(&ckpts, &dir, self.config.keep_checkpoints, best)?;
        }
        self.last_checkpoint = Some(dir);
        Ok(())
    }

    fn plot(&self) -> Result<(), LearnError> {
        if self.leader {
            plot::curves(&self.run, &self.run.join("plots"))?;
        }
        Ok(())
    }

    /// The end of a run: the test report and the final weights (unless stopped early), plots,
    /// and the others waiting for rank 0's writes.
    fn finish(
        mut self,
        method: &mut dyn Method,
        holdout: &Holdout,
        stopped_early: bool,
    ) -> Result<Summary, LearnError> {
        if !stopped_early {
            if let Some(test) = holdout.test {
                self.evaluate(method, test, Split::Test)?;
            }
            if self.leader {
                let mut vars: Vec<(String, Tensor)> = cpu_copy(method.var_store().variables().into_iter().collect());
                vars.sort_by(|a, b| a.0.cmp(&b.0));
                let attributes = self.config.backbone_spec()?.attributes();
                patchtcga_model::write_safetensors(&self.run.join("model.safetensors"), &vars, &attributes)?;
            }
        }
        self.plot()?;
        if let Some(g) = self.group {
            g.barrier()?; // the others wait for rank 0's last writes
        }
        Ok(Summary { position: self.pos, stopped_early, last: self.log.last, run_dir: self.run })
    }
}
