//! A run config's method, and pretraining with it.

use patchtcga_augment::Preset;
use patchtcga_engine::data::loaders;
use patchtcga_engine::{train, Config, Holdout, LearnError, Method, OnProgress, RunContext, SelfSupervised, Summary};

use crate::{byol::Byol, dino::Dino, mae::Mae, moco::MocoV2, simclr::SimClr, supervised::Supervised};

/// The method a config's `self_supervised` names, with the view recipe it trains on.
pub fn method(config: &Config, context: &RunContext) -> Result<(Box<dyn Method>, Preset), LearnError> {
    let method: Box<dyn Method> = match config.self_supervised {
        SelfSupervised::None => Box::new(Supervised::new(config, context)?),
        SelfSupervised::SimClr => Box::new(SimClr::new(config, context)?),
        SelfSupervised::Byol => Box::new(Byol::new(config, context)?),
        SelfSupervised::MocoV2 => Box::new(MocoV2::new(config, context)?),
        SelfSupervised::Dino => Box::new(Dino::new(config, context)?),
        SelfSupervised::Mae => Box::new(Mae::new(config, context)?),
    };
    Ok((method, config.self_supervised.recipe()))
}

/// Pretrains as `config` says (its method on its data), from the run folder's latest checkpoint
/// when `resume`, where `context` stands, telling `on_progress` how it goes.
pub fn pretrain(
    config: &Config,
    context: &RunContext,
    resume: bool,
    on_progress: OnProgress,
) -> Result<Summary, LearnError> {
    let (mut method, recipe) = method(config, context)?;
    let data = loaders(config, context, recipe)?;
    let holdout = Holdout { val: data.val.as_ref(), test: data.test.as_ref() };
    train(config, context, method.as_mut(), &data.train, holdout, resume, on_progress)
}
