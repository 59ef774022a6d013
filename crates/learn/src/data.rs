//! The loaders of a run: its dataset, split trial, recipes and normalisation.

use std::path::Path;

use patchtcga_augment::Recipe;
use patchtcga_dataset::{split, Index};
use patchtcga_loader::{samples, Loader, LoaderConfig, OnBadInput, Sample};

use crate::config::image_stats;
use crate::{Config, LearnError};

/// Train, validation and test loaders.
pub struct Loaders {
    pub train: Loader,
    pub val: Option<Loader>,
    pub test: Option<Loader>,
}

fn loader_config(config: &Config, shuffle: bool) -> Result<LoaderConfig, LearnError> {
    let (mean, std) = image_stats(&config.image_stats)?;
    Ok(LoaderConfig {
        batch_size: config.batch_size,
        shuffle,
        drop_last: shuffle,
        seed: config.seed,
        rank: 0,
        world_size: 1,
        workers: config.num_workers.max(1),
        prefetch: 4,
        mean,
        std,
        on_bad_input: OnBadInput::Skip,
    })
}

/// Builds the loaders: `recipe` views for training, the eval transform for val and test.
pub fn loaders(config: &Config, recipe: &str) -> Result<Loaders, LearnError> {
    let root = Path::new(&config.dataset_dir);
    let index = Index::scan(root, None)?;
    if index.entries.is_empty() {
        return Err(LearnError::Config(format!("{}: no images found", root.display())));
    }
    let sets: Vec<Option<Vec<Sample>>> = if config.split.is_empty() {
        vec![Some(samples(&index, None)?), None, None]
    } else {
        let path = root.join(&config.split);
        let splits = if path.extension().is_some_and(|e| e == "json") {
            split::read_json(&path)?
        } else {
            split::read_pickle(&path)?
        };
        let trial = splits.get(&config.trial.to_string()).ok_or_else(|| {
            LearnError::Config(format!("{}: no trial {} (it has {})", path.display(), config.trial, splits.len()))
        })?;
        ["train", "val", "test"]
            .iter()
            .map(|set| trial.get(*set).filter(|s| !s.idx.is_empty()).map(|s| samples(&index, Some(&s.idx))).transpose())
            .collect::<Result<_, _>>()?
    };
    let mut sets = sets.into_iter();
    let train = sets.next().flatten().ok_or_else(|| LearnError::Config("the split's train set is empty".into()))?;
    if let Some(max) = train.iter().map(|s| s.label).max() {
        if max >= config.num_classes {
            return Err(LearnError::Config(format!(
                "{}: class id {max} needs num_classes > {max}, the config has {}",
                root.display(),
                config.num_classes
            )));
        }
    }
    let eval = |s: Option<Vec<Sample>>| -> Result<Option<Loader>, LearnError> {
        s.map(|s| {
            Ok(Loader::new(s, Recipe::preset("eval", config.val_image_size as u32, 0)?, loader_config(config, false)?)?)
        })
        .transpose()
    };
    Ok(Loaders {
        train: Loader::new(
            train,
            Recipe::preset(recipe, config.image_size as u32, config.local_crops)?,
            loader_config(config, true)?,
        )?,
        val: eval(sets.next().flatten())?,
        test: eval(sets.next().flatten())?,
    })
}
