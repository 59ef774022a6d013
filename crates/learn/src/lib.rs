//! The training engine of patchtcga on LibTorch: run configs with the release's keys, optimizers
//! and schedules, checkpoints with exact resume, run logs and plots, and the methods that plug in
//! (supervised organ classification; SimCLR, BYOL, MoCo v2, DINO and MAE); and slide-level
//! multiple-instance learning on patch features.

pub mod bench;
pub mod checkpoint;
pub mod choices;
pub mod config;
pub mod data;
pub mod embed;
pub mod engine;
pub mod finetune;
pub mod heads;
pub mod infer;
pub mod launch;
pub mod loss;
pub mod mil;
pub mod optim;
pub mod patch_features;
pub mod plot;
pub mod probe;
pub mod schedule;
pub mod segmentation;
pub mod shards;
pub mod slide_features;
pub mod slide_map;
pub mod ssl;
pub mod supervised;
pub mod target;
pub mod tensorboard;

use std::path::{Path, PathBuf};

use patchtcga_augment::Preset;

pub use config::{Config, SelfSupervised};
pub use engine::{train, Holdout, Method, StepOutput, Summary};
pub use supervised::Supervised;

/// The method a config's `self_supervised` names, with the view recipe it trains on.
pub fn method(config: &Config) -> Result<(Box<dyn Method>, Preset), LearnError> {
    let method: Box<dyn Method> = match config.self_supervised {
        SelfSupervised::None => Box::new(Supervised::new(config)?),
        SelfSupervised::SimClr => Box::new(ssl::SimClr::new(config)?),
        SelfSupervised::Byol => Box::new(ssl::Byol::new(config)?),
        SelfSupervised::MocoV2 => Box::new(ssl::MocoV2::new(config)?),
        SelfSupervised::Dino => Box::new(ssl::Dino::new(config)?),
        SelfSupervised::Mae => Box::new(ssl::Mae::new(config)?),
    };
    Ok((method, config.self_supervised.recipe()))
}

/// Pretrains as `config` says (its method on its data), from the run folder's latest checkpoint
/// when `resume`.
pub fn pretrain(config: &Config, resume: bool) -> Result<Summary, LearnError> {
    let (mut method, recipe) = method(config)?;
    let data = data::loaders(config, recipe)?;
    let holdout = Holdout { val: data.val.as_ref(), test: data.test.as_ref() };
    train(config, method.as_mut(), &data.train, holdout, resume)
}

/// Errors of training, each naming its file or setting.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Model(#[from] patchtcga_model::ModelError),
    #[error(transparent)]
    Loader(#[from] patchtcga_loader::LoaderError),
    #[error(transparent)]
    Dataset(#[from] patchtcga_dataset::DatasetError),
    #[error(transparent)]
    Slide(#[from] patchtcga_slide::SlideError),
    #[error(transparent)]
    Augment(#[from] patchtcga_augment::AugmentError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Dist(#[from] patchtcga_dist::DistError),
    #[error(transparent)]
    Launch(#[from] patchtcga_launch::LaunchError),
    /// A run stopped on a non-finite loss or gradient.
    #[error("{0}")]
    Diverged(String),
}

impl LearnError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}
