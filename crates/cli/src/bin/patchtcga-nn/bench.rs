//! `patchtcga bench`: measure throughput: the loader, a training step, a method's update.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use patchtcga_augment::Recipe;
use patchtcga_dataset::Index;
use patchtcga_learn::config::{DeviceChoice, Optim};
use patchtcga_learn::Config;
use patchtcga_model::Arch;

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
    batch_size: usize,
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

/// Times supervised training updates of `--arch` (1000 classes, as torchvision's reference,
/// constant learning rate, no clipping) through the engine's own steps on one synthetic batch.
pub fn bench_step(a: StepArgs) -> Result<()> {
    let config = Config {
        model_name: a.arch.to_string(),
        num_classes: 1000,
        dropout_p: 0.0,
        image_size: a.image_size,
        batch_size: a.batch_size,
        optim: a.optim,
        lr: 0.01,
        warmup_epochs: 0.0,
        cold_epochs: 0.0,
        clip_norm: 0.0,
        device: a.device,
        enable_autocast: a.autocast,
        ..Config::default()
    };
    time_method(&config, a.threads, a.warmup, a.steps)
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
    time_method(&Config::load(Some(&a.config), &a.set)?, a.threads, a.warmup, a.steps)
}

/// Times `config`'s method and prints images/s and peak host memory.
fn time_method(config: &Config, threads: Option<i32>, warmup: usize, steps: usize) -> Result<()> {
    if let Some(t) = threads {
        tch::set_num_threads(t);
    }
    let timing = patchtcga_learn::bench::time_method(config, warmup, steps)?;
    println!("{timing}, peak host memory {:.0} MiB", patchtcga_cli::commands::peak_rss_mib());
    Ok(())
}

/// Times the loader on a dataset with a view recipe, as `bench/loader_torchvision.py` times
/// torchvision's.
pub fn bench_loader(a: LoaderArgs) -> Result<()> {
    use patchtcga_loader::{samples, Loader, LoaderConfig};
    let index = Index::scan(&a.dataset, None)?;
    let recipe = Recipe::preset(&a.recipe, a.size, a.local_crops)?;
    let config =
        LoaderConfig { batch_size: a.batch_size, shuffle: true, workers: a.workers, ..LoaderConfig::default() };
    let loader = Loader::new(samples(&index, None)?, recipe.clone(), config)?;
    let (images, secs) = loader.throughput(a.seconds)?;
    println!(
        "{}: {images} images ({} views each) in {secs:.2} s with {} worker(s): {:.1} images/s, peak memory {:.0} MiB",
        recipe.name,
        recipe.views.len(),
        a.workers,
        images as f64 / secs,
        patchtcga_cli::commands::peak_rss_mib()
    );
    Ok(())
}
