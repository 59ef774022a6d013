//! Segmentation fine-tuning on a segPANDA200 layout: the FCN head learns (loss falls, mIoU well
//! above chance), the best validation mIoU is reported with overlays, and masks with unknown
//! classes or a head that does not fit the backbone are refused.

use std::path::Path;

use patchtcga_downstream::finetune::{Outcome, Report};
use patchtcga_engine::{Config, LearnError, OnProgress, RunContext};
use patchtcga_testkit::layouts::{segpanda200, TORCH_RNG};

fn config(dir: &Path, extra: &[&str]) -> Config {
    let mut o: Vec<String> = vec![
        format!("dataset_dir={:?}", dir.join("segPANDA200").display().to_string()),
        format!("root_dir={:?}", dir.join("runs").display().to_string()),
        "model_name=\"resnet18\"".into(),
        "seg_head=\"fcn\"".into(),
        "num_classes=6".into(),
        "image_size=64".into(),
        "val_image_size=64".into(),
        "batch_size=4".into(),
        "base_batch_size=4".into(),
        "num_workers=2".into(),
        "lr=3e-3".into(),
        "warmup_epochs=0".into(),
        "epochs=6".into(),
        "val_every=0".into(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    Config::load(None, &o).unwrap()
}

/// Fine-tunes as `c` says in this one process.
fn finetune(c: &Config, resume: bool, on_progress: OnProgress) -> Result<Outcome, LearnError> {
    patchtcga_downstream::finetune::finetune(c, &RunContext::new(c, None)?, resume, on_progress)
}

#[test]
fn fcn_segmentation_learns_and_reports_the_best_validation_miou() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    segpanda200(&dir.path().join("segPANDA200"));
    let o = finetune(&config(dir.path(), &["name=\"seg\""]), false, &mut |_| {}).unwrap();
    assert_eq!(o.task, patchtcga_metrics::run::Task::Segmentation);
    let log: Vec<serde_json::Value> = std::fs::read_to_string(o.run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let losses: Vec<f64> = log.iter().filter_map(|e| e["loss"].as_f64()).collect();
    assert_eq!(losses.len(), 12);
    assert!(losses[10..].iter().sum::<f64>() < 0.5 * losses[..2].iter().sum::<f64>(), "loss falls: {losses:?}");
    let val: Vec<(u64, f64)> =
        log.iter().filter_map(|e| Some((e["epoch"].as_u64()?, e["val_mean_iou"].as_f64()?))).collect();
    let best = val.iter().copied().reduce(|b, x| if x.1 > b.1 { x } else { b }).unwrap();
    assert_eq!(o.selected_epoch as u64, best.0);
    let Some(Report::Segmentation(t)) = &o.test else { panic!("a segmentation report") };
    // Two classes present, split by a colour inversion: far above the 1/6 of guessing.
    assert!(t.mean_iou > 0.5, "test mIoU {}", t.mean_iou);
    assert_eq!(t.per_class_iou.len(), 6);
    assert!(t.per_class_iou[3].is_none(), "a class absent from truth and prediction has no IoU");
    assert!(o.run_dir.join("plots/overlay_test.png").exists());
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(o.run_dir.join("results.json")).unwrap()).unwrap();
    assert!(saved["test"]["mean_iou"].as_f64().is_some());
}

#[test]
fn a_frozen_backbone_stays_as_loaded_while_the_head_trains() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    segpanda200(&dir.path().join("segPANDA200"));
    let init = dir.path().join("backbone.safetensors");
    tch::manual_seed(42);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _b = patchtcga_model::Backbone::new(&vs.root(), patchtcga_model::Arch::ResNet18.spec(64));
    vs.save(&init).unwrap();
    let pretrained = format!("pretrained={:?}", init.display().to_string());
    let o = finetune(
        &config(dir.path(), &["name=\"frozen\"", "fine_tune=true", "epochs=2", "keep_checkpoints=0", &pretrained]),
        false,
        &mut |_| {},
    )
    .unwrap();
    let read = |p: std::path::PathBuf| -> std::collections::HashMap<String, tch::Tensor> {
        tch::Tensor::read_safetensors(p).unwrap().into_iter().collect()
    };
    let (after, first) =
        (read(o.run_dir.join("model.safetensors")), read(o.run_dir.join("checkpoints/epoch_0001/model.safetensors")));
    let before = vs.variables();
    for name in ["conv1.weight", "layer4.1.bn2.weight", "layer4.1.bn2.running_mean", "layer4.1.bn2.running_var"] {
        assert!(after[name].equal(&before[name]), "{name} changed under fine_tune = true");
    }
    assert!(!after["classifier.4.weight"].equal(&first["classifier.4.weight"]), "the head trains");
    assert!(matches!(o.test, Some(Report::Segmentation(_))));
}

#[test]
fn bad_segmentation_input_gets_one_clear_error() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    segpanda200(&dir.path().join("segPANDA200"));
    let e = finetune(&config(dir.path(), &["num_classes=2"]), false, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("class id 2") && e.contains("2 classes"), "{e}");
    let e = finetune(&config(dir.path(), &["seg_head=\"deeplabv3\""]), false, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("DeepLabv3 needs a bottleneck ResNet"), "{e}");
}
