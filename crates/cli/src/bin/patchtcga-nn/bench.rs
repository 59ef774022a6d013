//! `patchtcga bench`: measure throughput: the loader, a training step, a method's update.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use patchtcga_augment::Recipe;
use patchtcga_dataset::Index;
use patchtcga_learn::config::{DeviceChoice, Optim};
use patchtcga_learn::engine::{device, time_updates};
use patchtcga_learn::optim::{LossScale, Optimizer, Rule};
use patchtcga_learn::{method, Config};
use patchtcga_model::{Arch, Classifier};
use tch::nn;
use tch::Tensor;

#[derive(Subcommand)]
pub enum BenchWhat {
    /// Time training steps (forward, backward, update) on synthetic images; prints images/s.
    Step(StepArgs),
    /// Time a pretraining method's update (views → loss → update) on synthetic views of its
    /// recipe, as a run config says; prints images/s.
    Pretrain(MethodStepArgs),
    /// Decode + augment + batch images of a dataset with a view recipe; prints images/s.
    Loader(LoaderArgs),
}

/// Options of `patchtcga bench loader`.
#[derive(Args)]
pub struct LoaderArgs {
    /// Dataset root (any of the release's layouts).
    #[arg(long)]
    pub dataset: PathBuf,
    /// View recipe: supervised, eval, simclr, byol, dino, mae, segmentation.
    #[arg(long, default_value = "simclr")]
    pub recipe: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Side of the (global) views.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// DINO local views.
    #[arg(long, default_value_t = 10)]
    pub local_crops: usize,
}

/// Options of `patchtcga bench step`.
#[derive(Args)]
pub struct StepArgs {
    /// Backbone: resnet18, resnet50, vit-s16, vit-b16, vit-b32, vit-l16.
    #[arg(long, default_value = "resnet50")]
    arch: Arch,
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

/// Times the engine's training step on one fixed synthetic batch (1000 classes, as torchvision).
pub fn bench_step(a: StepArgs) -> Result<()> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let device = device(a.device)?;
    tch::manual_seed(0);
    let arch = a.arch;
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
        let (logits, aux) = tch::autocast(amp, || model.forward_with_aux(&x, true, true));
        let mut loss = logits.to_kind(tch::Kind::Float).cross_entropy_for_logits(&y);
        if let Some(aux) = aux {
            loss += aux.to_kind(tch::Kind::Float).cross_entropy_for_logits(&y)
                * patchtcga_learn::supervised::AUX_LOSS_WEIGHT;
        }
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
        patchtcga_cli::commands::peak_rss_mib()
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
        patchtcga_cli::commands::peak_rss_mib()
    );
    Ok(())
}

pub fn bench_loader(a: LoaderArgs) -> Result<()> {
    let LoaderArgs { dataset, recipe, workers, seconds, batch_size, size, local_crops } = a;
    let (dataset, recipe) = (dataset.as_path(), recipe.as_str());
    use patchtcga_loader::{samples, Loader, LoaderConfig, OnBadInput};
    let index = Index::scan(dataset, None)?;
    let recipe = patchtcga_augment::Recipe::preset(recipe, size, local_crops)?;
    let config = LoaderConfig {
        batch_size,
        shuffle: true,
        drop_last: false,
        seed: 0,
        rank: 0,
        world_size: 1,
        workers,
        prefetch: 2,
        mean: patchtcga_augment::IMAGENET_MEAN,
        std: patchtcga_augment::IMAGENET_STD,
        on_bad_input: OnBadInput::Fail,
    };
    let loader = Loader::new(samples(&index, None)?, recipe.clone(), config)?;
    // The clock starts once the first batch has arrived, as in bench/loader_torchvision.py.
    let mut start = None;
    let (mut images, mut epoch) = (0usize, 0u64);
    'run: loop {
        for batch in loader.epoch(epoch) {
            let n = batch?.labels.len();
            let Some(start) = start else {
                start = Some(std::time::Instant::now());
                continue;
            };
            images += n;
            if start.elapsed().as_secs_f64() >= seconds {
                break 'run;
            }
        }
        epoch += 1;
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into());
    println!(
        "{}: {images} images ({} views each) in {secs:.2} s with {workers} worker(s): {:.1} images/s, peak memory {peak} kB",
        recipe.name,
        recipe.views.len(),
        images as f64 / secs
    );
    Ok(())
}
