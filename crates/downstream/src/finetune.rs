//! Fine-tuning on a small benchmark from an initialisation (random, ImageNet or a pretraining
//! run): classification (PCam200, the original PCam; full or linear probe with `fine_tune`) or
//! segmentation (segPANDA200, with `seg_head`); the epoch with the best validation accuracy or
//! mean IoU selected, and its report on validation and test.

use patchtcga_augment::Preset;
use patchtcga_loader::Loader;
use patchtcga_metrics::run::{Task, RESULTS_FILE};
use patchtcga_metrics::ClassificationReport;
use tch::Tensor;

use patchtcga_dataset::Split;
use patchtcga_engine::checkpoint::{best_epoch, epoch_dir, load_variables};
use patchtcga_engine::config::SelfSupervised;
use patchtcga_engine::data::loaders;
use patchtcga_engine::trainer::broadcast_variables;
use patchtcga_engine::{plot, train, write_atomic, Config, Holdout, LearnError, Method, OnProgress, RunContext};
use patchtcga_methods::segmentation::{overlays, Segmenter};
use patchtcga_methods::Supervised;

/// What a fine-tuning run gives: written to `<run>/results.json`.
pub use patchtcga_metrics::run::RunResults as Outcome;
/// A set's report, as `results.json` holds it (the report crate reads the same type).
pub use patchtcga_metrics::run::SetReport as Report;

/// Trains as `config` says, selects the best validation epoch, reports it, and writes
/// `results.json` and pictures (confusion matrices, or segmentation overlays) in the run folder;
/// the run's progress goes to `on_progress`.
pub fn finetune(
    config: &Config,
    context: &RunContext,
    resume: bool,
    on_progress: OnProgress,
) -> Result<Outcome, LearnError> {
    if config.self_supervised != SelfSupervised::None {
        return Err(LearnError::Config(format!(
            "fine-tuning trains the supervised method; self_supervised is \"{}\"",
            config.self_supervised
        )));
    }
    let segmentation = config.seg_head.is_some();
    let data = loaders(config, context, if segmentation { Preset::Segmentation } else { Preset::Supervised })?;
    let mut outcome = Outcome {
        run_dir: config.run_dir(),
        selected_epoch: 0,
        init: config.pretrained.as_ref().map_or_else(|| "none".into(), |p| p.display().to_string()),
        fine_tune: config.fine_tune,
        task: if segmentation { Task::Segmentation } else { Task::Classification },
        val: None,
        test: None,
    };
    let plots = outcome.run_dir.join("plots");
    // In a distributed run every rank evaluates its share; rank 0 alone has the log and the
    // checkpoints, picks the epoch, and writes the results.
    let (group, leader) = (context.group, context.leads());
    let select = |method: &dyn Method, last_epoch: usize| -> Result<usize, LearnError> {
        let mut selected = last_epoch;
        if let Some(key) = method.selection_key().filter(|_| leader) {
            let ckpts = config.run_dir().join("checkpoints");
            if let Some(k) = best_epoch(&config.run_dir(), &ckpts, key)? {
                load_variables(method.var_store(), &epoch_dir(&ckpts, k).join("model.safetensors"))?;
                selected = k;
            }
        }
        if let Some(g) = group {
            broadcast_variables(g, method.var_store())?;
            let epoch = Tensor::from_slice(&[selected as i64]);
            g.broadcast(&epoch, 0)?;
            selected = epoch.int64_value(&[0]) as usize;
        }
        Ok(selected)
    };
    // Trains `model` and selects its epoch.
    let mut fit = |model: &mut dyn Method| -> Result<usize, LearnError> {
        let holdout = Holdout { val: data.val.as_ref(), test: None };
        let s = train(config, context, model, &data.train, holdout, resume, &mut *on_progress)?;
        select(model, s.position.epoch)
    };
    if segmentation {
        let mut model = Segmenter::new(config, context)?;
        outcome.selected_epoch = fit(&mut model)?;
        let (mean, std) = (config.image_stats.mean, config.image_stats.std);
        let report = |loader: Option<&Loader>, set: Split| -> Result<Option<Report>, LearnError> {
            let Some(loader) = loader else { return Ok(None) };
            let (counts, _, samples) = model.predict(loader, 6)?;
            if leader {
                std::fs::create_dir_all(&plots).map_err(|e| LearnError::io(&plots, e))?;
                overlays(&plots.join(format!("overlay_{set}.png")), &samples, mean, std)?;
            }
            Ok(Some(Report::Segmentation(counts.report())))
        };
        outcome.val = report(data.val.as_ref(), Split::Val)?;
        outcome.test = report(data.test.as_ref(), Split::Test)?;
    } else {
        let mut model = Supervised::new(config, context)?;
        outcome.selected_epoch = fit(&mut model)?;
        let classes = config.num_classes as usize;
        let report = |loader: Option<&Loader>, set: Split| -> Result<Option<Report>, LearnError> {
            let Some(loader) = loader else { return Ok(None) };
            let p = model.predict(loader)?;
            let r = ClassificationReport::new(&p.probs, &p.labels, classes);
            if leader {
                let title = format!("{set}: accuracy {:.2} %", 100.0 * r.accuracy);
                let path = plots.join(format!("confusion_{set}.png"));
                plot::confusion(&path, &title, &r.confusion.counts, &data.class_names)?;
            }
            Ok(Some(Report::Classification(r)))
        };
        outcome.val = report(data.val.as_ref(), Split::Val)?;
        outcome.test = report(data.test.as_ref(), Split::Test)?;
    }
    if leader {
        write_atomic(&outcome.run_dir.join(RESULTS_FILE), &outcome.to_json())?;
    }
    Ok(outcome)
}
