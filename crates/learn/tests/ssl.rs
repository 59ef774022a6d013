//! SimCLR, BYOL and MoCo v2 on real H&E crops with tiny widths and 32 px views: each learns
//! (its loss on a fixed batch falls when trained on it), keeps its embeddings spread (no
//! collapse), runs through the engine, and leaves a checkpoint whose backbone `embed` can load.

mod common;

use std::path::Path;

use common::{dataset, TORCH_RNG};
use patchtcga_learn::data::loaders;
use patchtcga_learn::optim::{Optimizer, Rule};
use patchtcga_learn::{method, train, Config, Holdout};
use patchtcga_model::{load, ImportOptions};
use tch::nn;

fn config(dir: &Path, method: &str) -> Config {
    let o: Vec<String> = vec![
        format!("name={method:?}"),
        format!("self_supervised={method:?}"),
        format!("dataset_dir={:?}", dir.join("PTCGA200").display().to_string()),
        format!("root_dir={:?}", dir.join("runs").display().to_string()),
        "model_name=\"resnet18\"".into(),
        "image_size=32".into(),
        "val_image_size=32".into(),
        "batch_size=8".into(),
        "base_batch_size=8".into(),
        "num_workers=2".into(),
        "optim=\"adam\"".into(),
        "lr=1e-3".into(),
        "warmup_epochs=0".into(),
        "epochs=2".into(),
        "proj_hidden_dim=64".into(),
        "proj_dim=32".into(),
        "pred_hidden_dim=64".into(),
        "queue_size=32".into(),
        "temperature=0.2".into(),
        "knn_k=5".into(),
    ];
    Config::load(None, &o).unwrap()
}

fn check(name: &str) {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    dataset(&dir.path().join("PTCGA200"));
    let mut c = config(dir.path(), name);
    // MoCo's negatives come from its queue: with one batch's worth of keys and two batches
    // taking turns, the queue always holds the other batch's images.
    c.queue_size = 8;
    let (mut m, recipe) = method(&c).unwrap();
    let data = loaders(&c, recipe).unwrap();
    let batches: Vec<_> = data.train.epoch(0).take(2).map(Result::unwrap).collect();
    assert_eq!(batches[0].views.len(), 2, "{name} trains on two views");

    // It learns: trained on fixed batches, the loss on them falls.
    let mut opt = Optimizer::new(Rule::Adam { betas: [0.9, 0.999], eps: 1e-8 }, 0.0, m.trainable());
    let mut losses = Vec::new();
    for i in 0..26 {
        opt.zero_grad();
        let out = m.step(&batches[i % 2]).unwrap();
        losses.push(out.loss.double_value(&[]));
        out.loss.backward();
        opt.step(1e-3);
        m.after_update(i as f64 / 25.0);
    }
    let (first, last) = (losses[2..6].iter().sum::<f64>() / 4.0, losses[22..].iter().sum::<f64>() / 4.0);
    assert!(last < first * 0.8, "{name}: loss on fixed batches {first:.3} → {last:.3}: {losses:?}");

    // Through the engine: finite losses, embeddings spread, a k-NN monitor, a checkpoint.
    c.queue_size = 32;
    let (mut m, _) = method(&c).unwrap();
    let s = train(&c, m.as_mut(), &data.train, Holdout { val: Some(&data.train), test: None }, false).unwrap();
    let log = std::fs::read_to_string(s.run_dir.join("metrics.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps: Vec<&serde_json::Value> = entries.iter().filter(|e| e.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 4);
    assert!(steps.iter().all(|e| e["loss"].as_f64().unwrap().is_finite()));
    // 1/√32 ≈ 0.18 for embeddings spread over the sphere; a collapse drives it to 0.
    let spread = steps.last().unwrap()["collapse_std"].as_f64().unwrap();
    assert!(spread > 0.05, "{name}: collapse indicator {spread}");
    let knn = entries.iter().rev().find_map(|e| e["val_knn_accuracy"].as_f64()).unwrap();
    assert!((0.0..=1.0).contains(&knn));

    // The checkpoint's backbone loads by name, heads and momentum copies left out.
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let _b = patchtcga_model::Backbone::new(&vs.root(), patchtcga_model::Arch::ResNet18.spec(32));
    let r = load(&vs, &s.run_dir.join("model.safetensors"), "fc", &ImportOptions::default()).unwrap();
    assert_eq!(r.prefix, "");
    assert_eq!(r.loaded, vs.variables().len());
    assert!(r.skipped_heads.iter().any(|n| n.starts_with("projector.")));
}

#[test]
fn simclr_learns_without_collapse() {
    check("simclr");
}

#[test]
fn byol_learns_without_collapse() {
    check("byol");
}

#[test]
fn mocov2_learns_without_collapse() {
    check("mocov2");
}
