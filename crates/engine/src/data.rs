//! The loaders of a run: its dataset (any of the release's layouts, or the original PCam h5
//! files), split, recipes and normalisation; a batch view as a tensor on the device.

use std::path::Path;

use patchtcga_augment::{Preset, Recipe};
use patchtcga_dataset::{split, DatasetKind, Index, Split};
use patchtcga_loader::{
    pcam_has_split, pcam_samples, samples, Batch, Loader, LoaderConfig, OnBadInput, Sample, PCAM_SPLITS,
};

use tch::{Device, Kind, Tensor};

use crate::{Config, LearnError, RunContext};

/// Train, validation and test loaders.
pub struct Loaders {
    pub train: Loader,
    pub val: Option<Loader>,
    pub test: Option<Loader>,
    /// Name of each class id: its folder (folders sharing a class joined by `/`).
    pub class_names: Vec<String>,
}

/// The error for a dataset folder without images: what was looked for, and the image files the
/// release's loaders skip there, if any.
fn no_images(index: &Index) -> String {
    let skipped = match index.problems.len() {
        0 => String::new(),
        n => format!(
            "; {n} image file(s) there have names the release's loaders skip (e.g. {}): `patchtcga verify-layout {}` \
             lists them",
            index.problems[0].path.display(),
            index.root.display()
        ),
    };
    format!(
        "{}: no images found: looked for the release's layouts (PTCGA200 <organ>/<image>, PCam200 and segPANDA200 \
         {{train,val,test}}/<class>/<case>/<image>, images .jpg .JPG .JPEG .png) and the original PatchCamelyon files \
         ({{train,valid,test}}_x.h5 or camelyonpatch_level_2_split_{{train,valid,test}}_x.h5){skipped}",
        index.root.display()
    )
}

fn loader_config(config: &Config, context: &RunContext, shuffle: bool) -> Result<LoaderConfig, LearnError> {
    let (mean, std) = (config.image_stats.mean, config.image_stats.std);
    Ok(LoaderConfig {
        batch_size: config.batch_size,
        shuffle,
        drop_last: shuffle,
        seed: config.seed,
        // Each process of a distributed run takes its share of every epoch (DistributedSampler),
        // and of every evaluation (whose results `shards` puts together).
        rank: context.rank(),
        world_size: context.world(),
        workers: config.num_workers.max(1),
        prefetch: 4,
        mean,
        std,
        on_bad_input: OnBadInput::Skip,
    })
}

/// Positions in `index` of the train, val and test sets (`None` for an empty one): from a split
/// file relative to the dataset root (`splits.json` or the release's pickle, one trial of it),
/// else from the `train`/`val`/`test` folders of PCam200 and segPANDA200, else everything in
/// train.
pub fn set_indices(index: &Index, split_file: &str, trial: usize) -> Result<[Option<Vec<u64>>; 3], LearnError> {
    let some = |v: Vec<u64>| (!v.is_empty()).then_some(v);
    if !split_file.is_empty() {
        let path = index.root.join(split_file);
        let splits = if path.extension().is_some_and(|e| e == "json") {
            split::read_json(&path)?
        } else {
            split::read_pickle(&path)?
        };
        let t = splits.get(&trial.to_string()).ok_or_else(|| {
            LearnError::Config(format!("{}: no trial {trial} (it has {})", path.display(), splits.len()))
        })?;
        return Ok(Split::ALL.map(|set| t.get(set.name()).and_then(|s| some(s.idx.clone()))));
    }
    if matches!(index.kind, DatasetKind::Pcam200 | DatasetKind::SegPanda200) {
        return Ok(Split::ALL.map(|set| {
            some(
                index.entries.iter().enumerate().filter(|(_, e)| e.split == Some(set)).map(|(i, _)| i as u64).collect(),
            )
        }));
    }
    Ok([some((0..index.entries.len() as u64).collect()), None, None])
}

/// Name of each class id: its folder (folders sharing a class joined by `/`).
fn class_names(index: &Index, classes: i64) -> Vec<String> {
    let mut names = vec![String::new(); classes.max(0) as usize];
    for e in &index.entries {
        let Some(name) = names.get_mut(e.label as usize) else { continue };
        if !name.split('/').any(|n| n == e.label_name) {
            if !name.is_empty() {
                name.push('/');
            }
            name.push_str(&e.label_name);
        }
    }
    names
}

/// Builds the loaders: `recipe` views for training, the eval transform for val and test.
pub fn loaders(config: &Config, context: &RunContext, recipe: Preset) -> Result<Loaders, LearnError> {
    let root = Path::new(&config.dataset_dir);
    let pcam_h5 = PCAM_SPLITS.iter().any(|s| pcam_has_split(root, s));
    let (sets, mut class_names): (Vec<Option<Vec<Sample>>>, Vec<String>) = if pcam_h5 {
        // The original PatchCamelyon: {train,valid,test}_{x,y}.h5, under either naming.
        let sets = PCAM_SPLITS
            .iter()
            .map(|s| pcam_has_split(root, s).then(|| pcam_samples(root, s)).transpose())
            .collect::<Result<_, _>>()?;
        (sets, vec!["normal".into(), "tumor".into()])
    } else {
        let index = Index::scan(root, None)?;
        if index.entries.is_empty() {
            return Err(LearnError::Config(no_images(&index)));
        }
        let sets = set_indices(&index, &config.split, config.trial)?
            .iter()
            .map(|idx| idx.as_ref().map(|idx| samples(&index, Some(idx))).transpose())
            .collect::<Result<_, _>>()?;
        (sets, class_names(&index, config.num_classes))
    };
    class_names.resize(config.num_classes.max(0) as usize, String::new());
    let mut sets = sets.into_iter();
    let train = sets.next().flatten().ok_or_else(|| LearnError::Config("the split's train set is empty".into()))?;
    // Segmentation classes are in the masks (checked per batch); image labels are grades there.
    if let Some(max) = train.iter().map(|s| s.label).max().filter(|_| recipe != Preset::Segmentation) {
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
            // Segmentation is evaluated on whole patches, pixel for pixel.
            let eval = if recipe == Preset::Segmentation { Preset::None } else { Preset::Eval };
            Ok(Loader::new(
                s,
                Recipe::preset(eval, config.val_image_size as u32, 0),
                loader_config(config, context, false)?,
            )?)
        })
        .transpose()
    };
    Ok(Loaders {
        class_names,
        train: Loader::new(
            train,
            Recipe::preset(recipe, config.image_size as u32, config.local_crops),
            loader_config(config, context, true)?,
        )?,
        val: eval(sets.next().flatten())?,
        test: eval(sets.next().flatten())?,
    })
}

/// Images of one view of a batch on `device`. For a GPU the loader's buffer is copied to the
/// device directly, without a host copy first.
pub fn images(batch: &Batch, view: usize, device: Device) -> Tensor {
    let v = &batch.views[view];
    let shape: Vec<i64> = v.shape.iter().map(|&d| d as i64).collect();
    if device == Device::Cpu {
        return Tensor::from_slice(&v.data).reshape(shape.as_slice());
    }
    assert_eq!(v.data.len(), v.shape.iter().product::<usize>(), "a view's buffer holds its shape");
    let strides: Vec<i64> = (0..4).map(|i| shape[i + 1..].iter().product()).collect();
    // SAFETY: the tensor borrows `v.data`, which outlives it: it is read only by the synchronous
    // (pageable-memory) copy to the device on the next line and dropped there.
    let host = unsafe { Tensor::from_blob(v.data.as_ptr().cast(), &shape, &strides, Kind::Float, Device::Cpu) };
    host.to_device(device)
}
