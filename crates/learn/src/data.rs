//! The loaders of a run: its dataset, split trial, recipes and normalisation.

use std::path::Path;

use patchtcga_augment::Recipe;
use patchtcga_dataset::{split, DatasetKind, Index, SPLITS};
use patchtcga_loader::{samples, Loader, LoaderConfig, OnBadInput, Sample};

use crate::config::image_stats;
use crate::{Config, LearnError};

/// Train, validation and test loaders.
pub struct Loaders {
    pub train: Loader,
    pub val: Option<Loader>,
    pub test: Option<Loader>,
    /// Name of each class id: its folder (folders sharing a class joined by `/`).
    pub class_names: Vec<String>,
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
    let has_split_folders = matches!(index.kind, DatasetKind::Pcam200 | DatasetKind::SegPanda200);
    let sets: Vec<Option<Vec<Sample>>> = if config.split.is_empty() && has_split_folders {
        // PCam200 / segPANDA200: the split is in the folders.
        SPLITS
            .iter()
            .map(|set| {
                let idx: Vec<u64> =
                    index.entries.iter().enumerate().filter(|(_, e)| e.split == *set).map(|(i, _)| i as u64).collect();
                (!idx.is_empty()).then(|| samples(&index, Some(&idx))).transpose()
            })
            .collect::<Result<_, _>>()?
    } else if config.split.is_empty() {
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
    let mut class_names = vec![String::new(); config.num_classes.max(0) as usize];
    for e in &index.entries {
        let Some(name) = class_names.get_mut(e.label as usize) else { continue };
        if !name.split('/').any(|n| n == e.label_name) {
            if !name.is_empty() {
                name.push('/');
            }
            name.push_str(&e.label_name);
        }
    }
    Ok(Loaders {
        class_names,
        train: Loader::new(
            train,
            Recipe::preset(recipe, config.image_size as u32, config.local_crops)?,
            loader_config(config, true)?,
        )?,
        val: eval(sets.next().flatten())?,
        test: eval(sets.next().flatten())?,
    })
}
