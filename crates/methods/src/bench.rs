//! Throughput of a method's whole update (views → loss → update) on synthetic views of its
//! recipe, through the engine's own steps: what `patchtcga bench step` and `bench pretrain` print.

use std::path::PathBuf;

use patchtcga_augment::Recipe;
use patchtcga_loader::{Batch, ViewBatch};
use tch::{Device, Kind, Tensor};

use patchtcga_model::Arch;

use patchtcga_engine::config::{DeviceChoice, Optim};
use patchtcga_engine::trainer::time_updates;
use patchtcga_engine::{Config, LearnError, RunContext, SelfSupervised};

use crate::pretrain::method;

/// A supervised update to time (`patchtcga bench step`): a backbone on 1000 classes, as
/// torchvision's reference trains, at a constant learning rate without clipping.
#[derive(Debug, Clone, clap::Args)]
pub struct SupervisedStep {
    /// Backbone: resnet18, resnet50, vit-s16, vit-b16, vit-b32, vit-l16.
    #[arg(long, default_value = "resnet50")]
    pub arch: Arch,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Image side.
    #[arg(long, default_value_t = 224)]
    pub image_size: i64,
    /// sgd, adam, adamw, lars.
    #[arg(long, default_value = "sgd")]
    pub optim: Optim,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// float16 autocast with dynamic loss scaling (CUDA).
    #[arg(long)]
    pub autocast: bool,
    /// Timed steps (after the warm-up ones).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// CPU threads for LibTorch (default: LibTorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
}

/// A method's update to time (`patchtcga bench pretrain`) as a run config sets it up.
#[derive(Debug, Clone, clap::Args)]
pub struct MethodStep {
    /// Run config, e.g. configs/dino_vit_s16_ptcga200.toml (method, backbone, batch, recipe).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a key: `--set batch_size=32 --set device="cpu"`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Timed updates (after the warm-up ones).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// CPU threads for LibTorch (default: LibTorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
}

impl MethodStep {
    /// Times the config's method through the engine's own steps (begin, step under autocast,
    /// backward, loss scale, clipping, optimizer, momentum targets).
    pub fn run(&self) -> Result<UpdateTiming, LearnError> {
        with_threads(self.threads);
        time_method(&Config::load(Some(&self.config), &self.set)?, self.warmup, self.steps)
    }
}

/// Sets LibTorch's CPU threads when given.
fn with_threads(threads: Option<i32>) {
    if let Some(t) = threads {
        tch::set_num_threads(t);
    }
}

impl SupervisedStep {
    /// Times supervised training updates through the engine's own steps.
    pub fn run(&self) -> Result<UpdateTiming, LearnError> {
        with_threads(self.threads);
        time_method(&self.config(), self.warmup, self.steps)
    }

    /// The run config of this update.
    pub fn config(&self) -> Config {
        Config {
            model_name: self.arch.to_string(),
            num_classes: 1000,
            dropout_p: 0.0,
            image_size: self.image_size,
            batch_size: self.batch_size,
            optim: self.optim,
            lr: 0.01,
            warmup_epochs: 0.0,
            cold_epochs: 0.0,
            clip_norm: 0.0,
            device: self.device,
            enable_autocast: self.autocast,
            ..Config::default()
        }
    }
}

/// How fast a config's updates ran.
#[derive(Debug, Clone)]
pub struct UpdateTiming {
    /// `supervised` or the self-supervised method.
    pub method: String,
    pub model: String,
    pub batch_size: usize,
    /// Views per image in the recipe.
    pub views: usize,
    pub image_size: i64,
    pub device: Device,
    /// Whether the updates ran under float16 autocast.
    pub autocast: bool,
    /// Seconds per update.
    pub seconds: f64,
    /// Images per update (batch × accumulation steps).
    pub images: usize,
}

/// `patchtcga dino vit-s16 batch 8 (12 views) at 224 px on Cpu: 9.1 images/s (880.2 ms/step)`.
impl std::fmt::Display for UpdateTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "patchtcga {} {} batch {} ({} views) at {} px on {:?}{}: {:.1} images/s ({:.1} ms/step)",
            self.method,
            self.model,
            self.batch_size,
            self.views,
            self.image_size,
            self.device,
            if self.autocast { " (autocast fp16)" } else { "" },
            self.images as f64 / self.seconds,
            1000.0 * self.seconds
        )
    }
}

/// Times `steps` updates of `config`'s method after `warmup` untimed ones, on one synthetic batch
/// of its recipe's views held on the host and copied to the device each step as loader batches are.
pub fn time_method(config: &Config, warmup: usize, steps: usize) -> Result<UpdateTiming, LearnError> {
    let context = RunContext::new(config, None)?;
    let (mut m, recipe) = method(config, &context)?;
    let views = Recipe::preset(recipe, config.image_size as u32, config.local_crops).views;
    let b = config.batch_size;
    let batch = Batch {
        views: views
            .iter()
            .map(|v| {
                let s = v.size as usize;
                let data = Tensor::randn([(b * 3 * s * s) as i64], (Kind::Float, Device::Cpu));
                Ok(ViewBatch { data: Vec::<f32>::try_from(data)?, shape: [b, 3, s, s] })
            })
            .collect::<Result<_, tch::TchError>>()?,
        labels: (0..b as i64).map(|i| i % config.num_classes).collect(),
        masks: None,
        indices: (0..b).collect(),
    };
    let dev = context.device;
    let seconds = time_updates(config, &context, m.as_mut(), &batch, warmup, steps)?;
    Ok(UpdateTiming {
        method: match config.self_supervised {
            SelfSupervised::None => "supervised".to_owned(),
            m => m.to_string(),
        },
        model: config.model_name.clone(),
        batch_size: b,
        views: views.len(),
        image_size: config.image_size,
        device: dev,
        autocast: config.enable_autocast && dev.is_cuda(),
        seconds,
        images: b * config.num_accum,
    })
}
