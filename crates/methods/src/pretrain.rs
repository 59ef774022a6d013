//! A run config's method, and pretraining with it.

use patchtcga_augment::Preset;
use patchtcga_engine::data::loaders;
use patchtcga_engine::{train, Config, Holdout, LearnError, Method, SelfSupervised, Summary};

use crate::{byol::Byol, dino::Dino, mae::Mae, moco::MocoV2, simclr::SimClr, supervised::Supervised};

/// The method a config's `self_supervised` names, with the view recipe it trains on.
pub fn method(config: &Config) -> Result<(Box<dyn Method>, Preset), LearnError> {
    let method: Box<dyn Method> = match config.self_supervised {
        SelfSupervised::None => Box::new(Supervised::new(config)?),
        SelfSupervised::SimClr => Box::new(SimClr::new(config)?),
        SelfSupervised::Byol => Box::new(Byol::new(config)?),
        SelfSupervised::MocoV2 => Box::new(MocoV2::new(config)?),
        SelfSupervised::Dino => Box::new(Dino::new(config)?),
        SelfSupervised::Mae => Box::new(Mae::new(config)?),
    };
    Ok((method, config.self_supervised.recipe()))
}

/// Pretrains as `config` says (its method on its data), from the run folder's latest checkpoint
/// when `resume`.
pub fn pretrain(config: &Config, resume: bool) -> Result<Summary, LearnError> {
    let (mut method, recipe) = method(config)?;
    let data = loaders(config, recipe)?;
    let holdout = Holdout { val: data.val.as_ref(), test: data.test.as_ref() };
    train(config, method.as_mut(), &data.train, holdout, resume)
}
