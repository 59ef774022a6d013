//! `patchtcga pretrain` and `patchtcga embed`: the commands that run networks.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use patchtcga_augment::Recipe;
use patchtcga_dataset::{IMAGE_EXTENSIONS, POSITION_MAP_DIR};
use patchtcga_learn::config::{DeviceChoice, ImageStats, Optim};
use patchtcga_learn::data::loaders;
use patchtcga_learn::engine::{device, time_updates};
use patchtcga_learn::optim::{LossScale, Optimizer, Rule};
use patchtcga_learn::supervised::images;
use patchtcga_learn::{method, train, Config, Holdout};
use patchtcga_loader::{ImageSource, Loader, LoaderConfig, OnBadInput, Sample};
use patchtcga_model::{load, with_bn_counters, write_pth, Arch, Backbone, Classifier, ImportOptions};
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Options of `patchtcga pretrain`.
#[derive(Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    run: RunArgs,
}

/// What every training command takes: its config, overrides, resume, and how it spreads over
/// processes.
#[derive(Args)]
pub struct RunArgs {
    /// Run config (TOML with the release's keys), e.g. configs/supervised_resnet50_ptcga200.toml
    /// or configs/pcam200_resnet50.toml.
    #[arg(long)]
    config: PathBuf,
    /// Override a key: `--set epochs=1 --set lr=0.1` (values as in TOML); `--set fine_tune=true`
    /// for a linear probe.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue from the run folder's latest checkpoint.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    dist: DistArgs,
}

impl RunArgs {
    /// The run's config (the user's overrides, then `extra`), with this process in its place in
    /// a distributed run; `None` when this process started the node's ranks and they are done
    /// (it then says where the run folder is, holding `contents`).
    fn start(&self, extra: &[String], contents: &str) -> Result<Option<Config>> {
        let config = Config::load(Some(&self.config), &[self.set.as_slice(), extra].concat())?;
        if self.dist.spawn(&config)? {
            println!("run folder: {} ({contents})", config.run_dir().display());
            return Ok(None);
        }
        self.dist.join(&config)?;
        Ok(Some(config))
    }
}

/// How a training spreads over processes (torchrun's options; a process started with torchrun's
/// environment — `RANK`, `WORLD_SIZE`, … — joins that run instead).
#[derive(Args)]
pub struct DistArgs {
    /// Processes on this node (one per GPU); more than 1 starts them and waits.
    #[arg(long, default_value_t = 1)]
    nproc_per_node: usize,
    /// Nodes of the run.
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This node's index.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Rendezvous address (node 0).
    #[arg(long, default_value = "127.0.0.1")]
    master_addr: String,
    #[arg(long, default_value_t = 29500)]
    master_port: u16,
    /// Seconds to wait for peers at the rendezvous and in each collective.
    #[arg(long, default_value_t = 1800)]
    dist_timeout: u64,
}

impl DistArgs {
    /// The launches of this node's processes: from the options, or from the config's `hosts`
    /// and `dist_url` (the release's way: this machine's name picks its index in `hosts`).
    fn launches(&self, config: &Config) -> Result<Vec<patchtcga_dist::Launch>> {
        use patchtcga_dist::Launch;
        let per_node = self.nproc_per_node.max(1);
        if !config.hosts.is_empty() && self.nnodes == 1 {
            let me = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_owned();
            let node =
                config.hosts.iter().position(|h| h == &me || h.split('.').next() == Some(me.as_str())).with_context(
                    || format!("this machine ({me:?}) is not in the config's hosts {:?}", config.hosts),
                )?;
            return (0..per_node)
                .map(|l| Launch::from_hosts(&config.hosts, node, per_node, l, &config.dist_url).map_err(Into::into))
                .collect();
        }
        Ok((0..per_node)
            .map(|l| Launch {
                rank: self.node_rank * per_node + l,
                world: self.nnodes * per_node,
                local_rank: l,
                master_addr: self.master_addr.clone(),
                master_port: self.master_port,
            })
            .collect())
    }

    /// Starts this node's processes (this program again, with torchrun's environment) and waits
    /// for them; `false` when this process is to train itself.
    fn spawn(&self, config: &Config) -> Result<bool> {
        if std::env::var_os("WORLD_SIZE").is_some() {
            return Ok(false);
        }
        let launches = self.launches(config)?;
        if launches.len() == 1 && launches[0].world == 1 {
            return Ok(false);
        }
        backend(config)?;
        patchtcga_dist::run_node(&launches)?;
        Ok(true)
    }

    /// Joins the run this process belongs to, if any.
    fn join(&self, config: &Config) -> Result<()> {
        if std::env::var_os("WORLD_SIZE").is_some() {
            patchtcga_dist::init_from_env(std::time::Duration::from_secs(self.dist_timeout), backend(config)?)?;
        }
        Ok(())
    }
}

/// The config's `dist_backend` for the GPU its device gives this process.
fn backend(config: &Config) -> Result<patchtcga_dist::Backend> {
    let gpu = match device(config.device)? {
        tch::Device::Cuda(i) => Some(i),
        _ => None,
    };
    Ok(patchtcga_dist::Backend::choose(config.dist_backend.as_str(), gpu)?)
}

/// Trains as the config says and reports where the results are.
pub fn pretrain(a: PretrainArgs) -> Result<()> {
    let contents = "config.toml, metrics.jsonl, plots/, checkpoints/, model.safetensors";
    let Some(config) = a.run.start(&[], contents)? else { return Ok(()) };
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
        if let Some(v) = s.last.get(key).and_then(|v| v.as_f64()) {
            println!("{key}: {v:.4}");
        }
    }
    println!("run folder: {dir} ({contents})");
    Ok(())
}

/// Options of `patchtcga finetune`.
#[derive(Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Initial backbone weights: a pretraining run's model.safetensors, any .pth (ImageNet
    /// torchvision/timm, MoCo, DINO, MAE, …), or `none` for random weights (default: the
    /// config's `pretrained`).
    #[arg(long)]
    init: Option<String>,
}

/// Fine-tunes, selects the best validation epoch and reports validation and test metrics.
pub fn finetune(a: FinetuneArgs) -> Result<()> {
    use patchtcga_learn::finetune::Report;
    let init = match a.init.as_deref() {
        Some("none") => vec!["pretrained=\"\"".to_owned()],
        Some(path) => {
            if !Path::new(path).is_file() {
                bail!("--init {path}: no such file (a .pth/.safetensors, or `none`)");
            }
            vec![format!("pretrained={path:?}")]
        }
        None => Vec::new(),
    };
    let contents = "results.json, plots/, metrics.jsonl, checkpoints/";
    let Some(config) = a.run.start(&init, contents)? else { return Ok(()) };
    let o = patchtcga_learn::finetune::finetune(&config, a.run.resume)?;
    if patchtcga_dist::group().is_some_and(|g| g.rank() != 0) {
        return Ok(());
    }
    let by = if o.task == "segmentation" { "mean IoU" } else { "accuracy" };
    println!("selected epoch {} (best validation {by})", o.selected_epoch);
    for (set, r) in [("val", &o.val), ("test", &o.test)] {
        match r {
            Some(Report::Classification(r)) => {
                let auc = r.roc_auc.map_or("n/a".to_owned(), |v| format!("{v:.4}"));
                println!(
                    "{set}: accuracy {:.2} % (95 % CI {:.2}–{:.2}), balanced accuracy {:.2} %, ROC-AUC {auc}, F1 {:.4}, {} images",
                    100.0 * r.accuracy,
                    100.0 * r.accuracy_ci[0],
                    100.0 * r.accuracy_ci[1],
                    100.0 * r.balanced_accuracy,
                    r.f1,
                    r.samples
                );
            }
            Some(Report::Segmentation(r)) => {
                let per_class: Vec<String> =
                    r.per_class_iou.iter().map(|v| v.map_or("–".into(), |v| format!("{:.1}", 100.0 * v))).collect();
                println!(
                    "{set}: mIoU {:.2} %, micro IoU {:.2} %, mean Dice {:.2} %, micro Dice {:.2} %, mean pixel accuracy {:.2} %; IoU per class {}",
                    100.0 * r.mean_iou,
                    100.0 * r.micro_iou,
                    100.0 * r.mean_dice,
                    100.0 * r.micro_dice,
                    100.0 * r.mean_pixel_accuracy,
                    per_class.join(" / ")
                );
            }
            None => {}
        }
    }
    println!("run folder: {} ({contents})", o.run_dir.display());
    Ok(())
}

/// Options of `patchtcga probe`.
#[derive(Args)]
pub struct ProbeArgs {
    /// The dataset the features were computed on (`patchtcga embed --images DIR`).
    #[arg(long)]
    dataset: PathBuf,
    /// Features from `patchtcga embed` (`.npy`, rows named in the `.csv` beside it).
    #[arg(long)]
    features: PathBuf,
    /// Split file relative to the dataset (default: the split folders of PCam200/segPANDA200).
    #[arg(long, default_value = "")]
    split: String,
    #[arg(long, default_value_t = 0)]
    trial: usize,
    /// Neighbours and temperature of the k-NN classifier.
    #[arg(long, default_value_t = 20)]
    k: i64,
    #[arg(long, default_value_t = 0.07)]
    temperature: f64,
    /// Where to write the reports (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A logistic-regression probe and a k-NN classifier on embedded splits.
pub fn probe(a: ProbeArgs) -> Result<()> {
    use patchtcga_learn::probe::{knn_probs, Features, LinearProbe};
    use patchtcga_metrics::ClassificationReport;

    let feats =
        Tensor::read_npy(&a.features).with_context(|| format!("{}: cannot read features", a.features.display()))?;
    let csv_path = a.features.with_extension("csv");
    let mut rows = Vec::new();
    let mut reader =
        csv::Reader::from_path(&csv_path).with_context(|| format!("{}: cannot read", csv_path.display()))?;
    for r in reader.records() {
        let r = r.with_context(|| format!("{}: bad row", csv_path.display()))?;
        rows.push(PathBuf::from(r.get(1).unwrap_or_default()));
    }
    if rows.len() as i64 != feats.size()[0] {
        bail!("{}: {} rows for {} feature vectors", csv_path.display(), rows.len(), feats.size()[0]);
    }
    let index = patchtcga_dataset::Index::scan(&a.dataset, None)?;
    let row_of: std::collections::HashMap<&Path, i64> =
        rows.iter().enumerate().map(|(i, p)| (p.as_path(), i as i64)).collect();
    let sets = patchtcga_learn::data::set_indices(&index, &a.split, a.trial)?;
    let classes = index.entries.iter().map(|e| e.label as usize).max().unwrap_or(0) + 1;
    let features = |set: &Option<Vec<u64>>, name: &str| -> Result<Option<Features>> {
        let Some(idx) = set else { return Ok(None) };
        let mut pick = Vec::with_capacity(idx.len());
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            let e = &index.entries[i as usize];
            let row = row_of.get(e.path.as_path()).with_context(|| {
                format!(
                    "{}: no features for {} ({name} set); embed the whole dataset",
                    a.features.display(),
                    e.path.display()
                )
            })?;
            pick.push(*row);
            labels.push(e.label as usize);
        }
        Ok(Some(Features { x: feats.index_select(0, &Tensor::from_slice(&pick)), labels }))
    };
    let train = features(&sets[0], "train")?.context("the split's train set is empty")?;
    let (val, test) = (features(&sets[1], "val")?, features(&sets[2], "test")?);
    let linear = LinearProbe::select(&train, val.as_ref(), classes);
    let mut json = serde_json::json!({"features": a.features, "classes": classes, "train": train.labels.len(),
        "linear": {"weight_decay": linear.weight_decay}, "knn": {"k": a.k, "temperature": a.temperature}});
    println!("| classifier | set | images | accuracy (95 % CI) | balanced accuracy | ROC-AUC | F1 |");
    println!("|---|---|---|---|---|---|---|");
    for (set, f) in [("val", &val), ("test", &test)] {
        let Some(f) = f else { continue };
        let reports = [
            ("linear", ClassificationReport::new(&linear.probs(&f.x), &f.labels, classes)),
            (
                "knn",
                ClassificationReport::new(&knn_probs(&train, &f.x, classes, a.k, a.temperature), &f.labels, classes),
            ),
        ];
        for (name, r) in reports {
            let auc = r.roc_auc.map_or("n/a".to_owned(), |v| format!("{v:.4}"));
            println!(
                "| {name} | {set} | {} | {:.2} % ({:.2}–{:.2}) | {:.2} % | {auc} | {:.4} |",
                r.samples,
                100.0 * r.accuracy,
                100.0 * r.accuracy_ci[0],
                100.0 * r.accuracy_ci[1],
                100.0 * r.balanced_accuracy,
                r.f1
            );
            json[name][set] = serde_json::to_value(&r)?;
        }
    }
    if let Some(out) = &a.out {
        patchtcga_learn::engine::write_atomic(out, &serde_json::to_vec_pretty(&json)?)?;
        println!("reports → {}", out.display());
    }
    Ok(())
}

/// A backbone and the weights to put in it (`embed`, `export`).
#[derive(Args)]
pub struct BackboneArgs {
    /// Backbone: resnet18, resnet50, vit-s16, vit-b16, vit-b32, vit-l16.
    #[arg(long)]
    arch: String,
    /// Weights: a .pth/.pt (torch.save) or .safetensors file in any upstream wrapper, or a run's
    /// model.safetensors.
    #[arg(long)]
    weights: PathBuf,
    /// Take the tensors under this prefix (default: found automatically).
    #[arg(long)]
    prefix: Option<String>,
    /// Load what matches and warn about the rest (PyTorch's strict=False).
    #[arg(long)]
    allow_partial: bool,
}

impl BackboneArgs {
    /// The backbone for `image_size` inputs on `device`, its weights loaded and the import reported.
    fn load(&self, image_size: i64, device: tch::Device) -> Result<(nn::VarStore, Backbone)> {
        let spec = self.arch.parse::<Arch>()?.spec(image_size);
        let vs = nn::VarStore::new(device);
        let backbone = Backbone::new(&vs.root(), spec);
        let opts = ImportOptions { prefix: self.prefix.clone(), allow_partial: self.allow_partial, with_head: false };
        let r = load(&vs, &self.weights, spec.head_name(), &opts)?;
        eprintln!(
            "{}: {} tensors loaded (prefix {:?}){}{}",
            self.weights.display(),
            r.loaded,
            r.prefix,
            if r.skipped_heads.is_empty() {
                String::new()
            } else {
                format!(", {} head tensors left out", r.skipped_heads.len())
            },
            if r.outside_prefix == 0 {
                String::new()
            } else {
                format!(", {} tensors outside the prefix ignored", r.outside_prefix)
            }
        );
        for w in
            r.warnings.iter().map(|w| format!("warning: {w}")).chain(r.resized.iter().map(|w| format!("resized {w}")))
        {
            eprintln!("{w}");
        }
        Ok((vs, backbone))
    }
}

/// Options of `patchtcga embed`.
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    backbone: BackboneArgs,
    /// A folder of patches (searched recursively) or a dataset root.
    #[arg(long)]
    images: PathBuf,
    /// Output (N, D) float32 .npy; `<stem>.csv` beside it names each row's image.
    #[arg(long)]
    out: PathBuf,
    /// `eval` (the release's CenterCrop 287 → Resize 224) or `none` (images already at model size).
    #[arg(long, default_value = "eval")]
    preprocess: String,
    /// Model input side.
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    /// Normalisation: imagenet, ptcga, or m0,m1,m2,s0,s1,s2.
    #[arg(long, default_value = "imagenet")]
    stats: ImageStats,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Decoding threads.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

fn image_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}: cannot list", dir.display()))? {
            let p = entry?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if p.is_dir() {
                if name != POSITION_MAP_DIR && !name.starts_with('.') {
                    stack.push(p);
                }
            } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e))
                && !name.ends_with("_mask.png")
                && !name.starts_with('.')
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes backbone features of every image under `--images` to `--out`.
pub fn embed(a: EmbedArgs) -> Result<()> {
    if !matches!(a.preprocess.as_str(), "eval" | "none") {
        bail!("--preprocess {:?}: eval or none", a.preprocess);
    }
    a.backbone.arch.parse::<Arch>()?;
    let device = device(a.device)?;
    let files = image_files(&a.images)?;
    if files.is_empty() {
        bail!("{}: no images (.jpg, .JPG, .JPEG, .png)", a.images.display());
    }
    let (_vs, backbone) = a.backbone.load(a.image_size as i64, device)?;
    let (mean, std) = (a.stats.mean, a.stats.std);
    let samples: Vec<Sample> =
        files.iter().map(|f| Sample { image: ImageSource::File(f.clone()), label: 0, mask: None }).collect();
    let config = LoaderConfig {
        batch_size: a.batch_size,
        shuffle: false,
        drop_last: false,
        seed: 0,
        rank: 0,
        world_size: 1,
        workers: a.workers,
        prefetch: 4,
        mean,
        std,
        on_bad_input: OnBadInput::Fail,
    };
    let loader = Loader::new(samples, Recipe::preset(&a.preprocess, a.image_size, 0)?, config)?;
    let bar = crate::bar("images");
    bar.set_length(files.len() as u64);
    let mut chunks = Vec::new();
    for batch in loader.epoch(0) {
        let batch = batch?;
        let x = images(&batch, 0, device);
        chunks.push(tch::no_grad(|| backbone.forward_t(&x, false)).to_device(tch::Device::Cpu));
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish();
    let feats = Tensor::cat(&chunks, 0).to_kind(tch::Kind::Float).contiguous();
    let tmp = a.out.with_file_name(format!(".{}.tmp.npy", a.out.file_name().and_then(|n| n.to_str()).unwrap_or("out")));
    feats.write_npy(&tmp).with_context(|| format!("{}: cannot write", a.out.display()))?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("{}: cannot write", a.out.display()))?;
    let csv = a.out.with_extension("csv");
    let mut text = b"row,image\n".to_vec();
    for (i, f) in files.iter().enumerate() {
        let rel = f.strip_prefix(&a.images).unwrap_or(f).display().to_string();
        let quoted = if rel.contains([',', '"']) { format!("\"{}\"", rel.replace('"', "\"\"")) } else { rel };
        writeln!(text, "{i},{quoted}")?;
    }
    std::fs::write(&csv, text).with_context(|| format!("{}: cannot write", csv.display()))?;
    println!(
        "{} × {} features → {} (rows named in {})",
        feats.size()[0],
        feats.size()[1],
        a.out.display(),
        csv.display()
    );
    Ok(())
}

/// Options of `patchtcga bench step`.
#[derive(Args)]
pub struct StepArgs {
    /// Backbone: resnet18, resnet50, vit-s16, vit-b16, vit-b32, vit-l16.
    #[arg(long, default_value = "resnet50")]
    arch: String,
    #[arg(long, default_value_t = 32)]
    batch_size: i64,
    #[arg(long, default_value_t = 224)]
    image_size: i64,
    /// Timed steps (after the warm-up ones).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// sgd, adam, adamw, lars.
    #[arg(long, default_value = "sgd")]
    optim: Optim,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// float16 autocast with dynamic loss scaling (CUDA).
    #[arg(long)]
    autocast: bool,
    /// CPU threads for LibTorch (default: LibTorch's choice).
    #[arg(long)]
    threads: Option<i32>,
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Times the engine's training step on one fixed synthetic batch (1000 classes, as torchvision).
pub fn bench_step(a: StepArgs) -> Result<()> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let device = device(a.device)?;
    tch::manual_seed(0);
    let arch: Arch = a.arch.parse()?;
    let spec = arch.spec(a.image_size);
    let vs = nn::VarStore::new(device);
    let model = Classifier::new(&vs.root(), spec, 1000, 0.0);
    let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    params.sort_by(|x, y| x.0.cmp(&y.0));
    let mut opt = Optimizer::new(Rule::new(a.optim, 0.9, [0.9, 0.999]), 1e-4, params);
    let x = Tensor::randn([a.batch_size, 3, a.image_size, a.image_size], (tch::Kind::Float, device));
    let y = Tensor::randint(1000, [a.batch_size], (tch::Kind::Int64, device));
    let amp = a.autocast && device.is_cuda();
    let mut scale = LossScale::default();
    let sync = || {
        if let tch::Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let mut step = || {
        opt.zero_grad();
        let loss =
            tch::autocast(amp, || model.forward_t(&x, true)).to_kind(tch::Kind::Float).cross_entropy_for_logits(&y);
        (&loss * if amp { scale.scale } else { 1.0 }).backward();
        let finite = !amp || opt.unscale_grads(1.0 / scale.scale);
        if !amp || scale.update(finite) {
            opt.step(0.01);
        }
    };
    for _ in 0..a.warmup {
        step();
    }
    sync();
    let t0 = std::time::Instant::now();
    for _ in 0..a.steps {
        step();
    }
    sync();
    let secs = t0.elapsed().as_secs_f64();
    let rate = (a.steps as i64 * a.batch_size) as f64 / secs;
    println!(
        "patchtcga {} batch {} at {} px on {:?}{}: {:.1} images/s ({:.1} ms/step), peak host memory {:.0} MiB",
        arch,
        a.batch_size,
        a.image_size,
        device,
        if amp { " (autocast fp16)" } else { "" },
        rate,
        1000.0 * secs / a.steps as f64,
        peak_rss_mib()
    );
    Ok(())
}

/// Options of `patchtcga bench pretrain`.
#[derive(Args)]
pub struct MethodStepArgs {
    /// Run config, e.g. configs/dino_vit_s16_ptcga200.toml (method, backbone, batch, recipe).
    #[arg(long)]
    config: PathBuf,
    /// Override a key: `--set batch_size=32 --set device="cpu"`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Timed updates (after the warm-up ones).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// CPU threads for LibTorch (default: LibTorch's choice).
    #[arg(long)]
    threads: Option<i32>,
}

/// Times a method's update through the engine's own steps (begin, step under autocast, backward,
/// loss scale, clipping, optimizer, momentum targets) on one synthetic batch of its recipe's views,
/// held on the host and copied to the device each step as loader batches are.
pub fn bench_method(a: MethodStepArgs) -> Result<()> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let config = Config::load(Some(&a.config), &a.set)?;
    let (mut m, recipe) = method(&config)?;
    let views = Recipe::preset(recipe, config.image_size as u32, config.local_crops)?.views;
    let b = config.batch_size;
    let batch = patchtcga_loader::Batch {
        views: views
            .iter()
            .map(|v| {
                let s = v.size as usize;
                let data = Tensor::randn([(b * 3 * s * s) as i64], (tch::Kind::Float, tch::Device::Cpu));
                Ok(patchtcga_loader::ViewBatch { data: Vec::<f32>::try_from(data)?, shape: [b, 3, s, s] })
            })
            .collect::<Result<_, tch::TchError>>()?,
        labels: (0..b as i64).map(|i| i % config.num_classes).collect(),
        masks: None,
        indices: (0..b).collect(),
    };
    let dev = device(config.device)?;
    let amp = config.enable_autocast && dev.is_cuda();
    let secs = time_updates(&config, m.as_mut(), &batch, a.warmup, a.steps)?;
    let images = b * config.num_accum;
    println!(
        "patchtcga {} {} batch {} ({} views) on {:?}{}: {:.1} images/s ({:.1} ms/step), peak host memory {:.0} MiB",
        config.self_supervised,
        config.model_name,
        b,
        views.len(),
        dev,
        if amp { " (autocast fp16)" } else { "" },
        images as f64 / secs,
        1000.0 * secs,
        peak_rss_mib()
    );
    Ok(())
}

/// Options of `patchtcga export`.
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    backbone: BackboneArgs,
    /// ViT input side the exported position embedding is made for.
    #[arg(long, default_value_t = 224)]
    image_size: i64,
    /// Output: `.pth` (torch.save format) or `.safetensors`.
    #[arg(long)]
    out: PathBuf,
}

/// Writes the backbone of `--weights` with torchvision / timm names, for PyTorch.
pub fn export(a: ExportArgs) -> Result<()> {
    let (vs, backbone) = a.backbone.load(a.image_size, tch::Device::Cpu)?;
    let tensors = with_bn_counters(vs.variables().into_iter().collect());
    match a.out.extension().and_then(|e| e.to_str()) {
        Some("pth") | Some("pt") => write_pth(&a.out, &tensors)?,
        Some("safetensors") => {
            let tmp = a.out.with_extension("safetensors.tmp");
            Tensor::write_safetensors(&tensors, &tmp).with_context(|| format!("{}: cannot write", a.out.display()))?;
            std::fs::rename(&tmp, &a.out).with_context(|| format!("{}: cannot write", a.out.display()))?;
        }
        _ => bail!("{}: the output must end in .pth, .pt or .safetensors", a.out.display()),
    }
    println!(
        "{} tensors of {} → {}; in PyTorch, set model.{} = nn.Identity() and load_state_dict",
        tensors.len(),
        a.backbone.arch,
        a.out.display(),
        backbone.spec().head_name()
    );
    Ok(())
}
