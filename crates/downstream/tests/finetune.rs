//! Fine-tuning on a PCam200 layout: full fine-tuning learns and reports the best validation
//! epoch on the test set; a linear probe leaves the backbone as initialised; bad inputs get one
//! clear error.

use std::path::Path;

use patchtcga_downstream::finetune::{Outcome, Report};
use patchtcga_engine::{Config, LearnError, OnProgress, Progress, RunContext};
use patchtcga_testkit::layouts::{pcam200, TORCH_RNG};

fn config(dir: &Path, extra: &[&str]) -> Config {
    let mut o: Vec<String> = vec![
        format!("dataset_dir={:?}", dir.join("PCam200").display().to_string()),
        format!("root_dir={:?}", dir.join("runs").display().to_string()),
        "model_name=\"resnet18\"".into(),
        "num_classes=2".into(),
        "image_size=32".into(),
        "val_image_size=32".into(),
        "batch_size=4".into(),
        "base_batch_size=4".into(),
        "num_workers=2".into(),
        "lr=1e-3".into(),
        "warmup_epochs=0".into(),
        "epochs=4".into(),
        "val_every=0".into(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    Config::load(None, &o).unwrap()
}

fn entries(run: &Path) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    log.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Fine-tunes as `c` says in this one process.
fn finetune(c: &Config, resume: bool, on_progress: OnProgress) -> Result<Outcome, LearnError> {
    patchtcga_downstream::finetune::finetune(c, &RunContext::new(c, None)?, resume, on_progress)
}

#[test]
fn fine_tuning_learns_and_reports_the_best_validation_epoch() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    pcam200(&dir.path().join("PCam200"));
    let o = finetune(&config(dir.path(), &["name=\"full\""]), false, &mut |_| {}).unwrap();

    let log = entries(&o.run_dir);
    let losses: Vec<f64> = log.iter().filter_map(|e| e["loss"].as_f64()).collect();
    assert_eq!(losses.len(), 16, "4 updates per epoch (16 train images, batch 4), 4 epochs");
    let (first, last) = (losses[..4].iter().sum::<f64>(), losses[12..].iter().sum::<f64>());
    assert!(last < first, "training loss falls: {losses:?}");

    // The selected epoch is the best by validation accuracy (the earliest of equals).
    let val: Vec<(u64, f64)> =
        log.iter().filter_map(|e| Some((e["epoch"].as_u64()?, e["val_accuracy"].as_f64()?))).collect();
    assert_eq!(val.len(), 4, "validation at each epoch end");
    let best = val.iter().copied().reduce(|b, x| if x.1 > b.1 { x } else { b }).unwrap();
    assert_eq!(o.selected_epoch as u64, best.0);
    let Some(Report::Classification(v)) = &o.val else { panic!("a classification report") };
    assert!((v.accuracy - best.1).abs() < 1e-9, "the report is of the selected checkpoint");

    let Some(Report::Classification(t)) = &o.test else { panic!("a classification report") };
    assert_eq!(t.samples, 8);
    assert_eq!(t.confusion.total(), 8);
    assert!(t.accuracy_ci[0] <= t.accuracy && t.accuracy <= t.accuracy_ci[1]);
    assert!(t.roc_auc.is_some() && (0.0..=1.0).contains(&t.balanced_accuracy));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(o.run_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(saved["test"]["confusion"]["counts"].as_array().unwrap().len(), 2);
    assert!(o.run_dir.join("plots/confusion_test.png").exists());
}

#[test]
fn a_linear_probe_keeps_the_backbone_it_was_given() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    pcam200(&dir.path().join("PCam200"));
    // An "ImageNet" initialisation: a ResNet18 of its own seed, saved with torchvision's names.
    let init = dir.path().join("init.safetensors");
    tch::manual_seed(42);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _m = patchtcga_model::Classifier::new(&vs.root(), patchtcga_model::Arch::ResNet18.spec(32), 1000, 0.0);
    vs.save(&init).unwrap();
    let pretrained = format!("pretrained={:?}", init.display().to_string());
    let mut notes = Vec::new();
    let mut hear = |p: Progress| {
        if let Progress::Note(line) = p {
            notes.push(line.to_string());
        }
    };
    let o =
        finetune(&config(dir.path(), &["name=\"probe\"", "fine_tune=true", "epochs=2", &pretrained]), false, &mut hear)
            .unwrap();
    assert!(notes.iter().any(|n| n.starts_with("loaded ") && n.contains("init.safetensors")), "{notes:?}");
    let after: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(o.run_dir.join("model.safetensors")).unwrap().into_iter().collect();
    let before = vs.variables();
    for name in ["conv1.weight", "layer4.1.bn2.weight", "layer4.1.bn2.running_mean"] {
        assert!(after[name].equal(&before[name]), "{name} changed in a linear probe");
    }
    assert_eq!(after["fc.weight"].size(), [2, 512], "a new two-class head");
    assert!(!after["fc.weight"].equal(&before["fc.weight"].narrow(0, 0, 2)));
}

#[test]
fn bad_fine_tuning_input_gets_one_clear_error() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    pcam200(&dir.path().join("PCam200"));
    let err = |extra: &[&str]| finetune(&config(dir.path(), extra), false, &mut |_| {}).unwrap_err().to_string();
    let e = err(&["num_classes=1"]);
    assert!(e.contains("class id 1") && e.contains("num_classes"), "{e}");
    let e = err(&["self_supervised=\"simclr\""]);
    assert!(e.contains("supervised"), "{e}");
    std::fs::remove_dir_all(dir.path().join("PCam200/train")).unwrap();
    let e = err(&[]);
    assert!(e.contains("train set is empty"), "{e}");
}

#[test]
fn the_original_pcam_h5_files_fine_tune_too() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let pcam = dir.path().join("PCam200"); // the config's dataset folder
    std::fs::create_dir_all(&pcam).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../loader/tests/data");
    for split in ["train", "valid"] {
        for part in ["x", "y"] {
            std::fs::copy(fixture.join(format!("valid_{part}.h5")), pcam.join(format!("{split}_{part}.h5"))).unwrap();
        }
    }
    let o = finetune(&config(dir.path(), &["name=\"h5\"", "epochs=1"]), false, &mut |_| {}).unwrap();
    let Some(Report::Classification(v)) = &o.val else { panic!("a validation report") };
    assert!(v.samples >= 4 && v.confusion.total() as usize == v.samples);
    assert!(o.test.is_none(), "no test_x.h5, no test report");
}
