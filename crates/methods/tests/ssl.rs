//! SimCLR, BYOL, MoCo v2 (ResNet18, 32 px views), DINO and MAE (ViT-S/16, 64 px views, tiny
//! heads) on real H&E crops: each learns
//! (its loss on a fixed batch falls when trained on it), keeps its embeddings spread (no
//! collapse), runs through the engine, and leaves a checkpoint whose backbone `embed` can load.

use std::path::Path;

use patchtcga_engine::data::loaders;
use patchtcga_engine::optim::{Optimizer, Rule};
use patchtcga_engine::{train, Config, Holdout, RunContext};
use patchtcga_methods::method;
use patchtcga_model::{load, ImportOptions};
use patchtcga_testkit::layouts::{dataset, TORCH_RNG};
use tch::nn;

fn config(dir: &Path, method: &str, extra: &[&str]) -> Config {
    let mut o: Vec<String> = vec![
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
    o.extend(extra.iter().map(|e| e.to_string()));
    Config::load(None, &o).unwrap()
}

/// Trains `name` on two fixed batches of `views` views and wants the mean loss of the last four
/// steps below `fall` × that of the first four, and its logged embeddings (`width` wide) spread.
fn check(name: &str, views: usize, fall: f64, width: i64, overrides: &[&str]) -> Run {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    dataset(&dir.path().join("PTCGA200"));
    let mut c = config(dir.path(), name, overrides);
    // MoCo's negatives come from its queue: with one batch's worth of keys and two batches
    // taking turns, the queue always holds the other batch's images.
    c.queue_size = 8;
    let context = RunContext::new(&c, None).unwrap();
    let (mut m, recipe) = method(&c, &context).unwrap();
    let data = loaders(&c, &context, recipe).unwrap();
    let batches: Vec<_> = data.train.epoch(0).take(2).map(Result::unwrap).collect();
    assert_eq!(batches[0].views.len(), views, "{name} trains on {views} views");

    // It learns: trained on fixed batches, the loss on them falls.
    let mut opt = Optimizer::new(Rule::Adam { betas: [0.9, 0.999], eps: 1e-8 }, 0.0, m.trainable());
    let mut losses = Vec::new();
    for i in 0..26 {
        opt.zero_grad();
        let out = m.step(&batches[i % 2]).unwrap();
        // DINO's loss adds the teacher's entropy, which moves with the teacher: its learning
        // signal is the student's KL divergence from the teacher.
        let kl = out.metrics.iter().find(|(k, _)| k == "kl").map(|&(_, v)| v);
        losses.push(kl.unwrap_or_else(|| out.loss.double_value(&[])));
        out.loss.backward();
        opt.step(1e-3);
        m.after_update(i as f64 / 25.0);
    }
    let (first, last) = (losses[..4].iter().sum::<f64>() / 4.0, losses[22..].iter().sum::<f64>() / 4.0);
    assert!(last < first * fall, "{name}: loss on fixed batches {first:.3} → {last:.3}: {losses:?}");

    // Through the engine: finite losses, embeddings spread, a k-NN monitor, a checkpoint.
    c.queue_size = 32;
    let context = RunContext::new(&c, None).unwrap();
    let (mut m, _) = method(&c, &context).unwrap();
    let s = train(
        &c,
        &context,
        m.as_mut(),
        &data.train,
        Holdout { val: Some(&data.train), test: None },
        false,
        &mut |_| {},
    )
    .unwrap();
    let log = std::fs::read_to_string(s.run_dir.join("metrics.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps: Vec<&serde_json::Value> = entries.iter().filter(|e| e.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 4);
    assert!(steps.iter().all(|e| e["loss"].as_f64().unwrap().is_finite()));
    // 1/√width for embeddings spread over the sphere; a collapse drives it to 0.
    let spread = steps.last().unwrap()["collapse_std"].as_f64().unwrap();
    assert!(spread > 0.3 / (width as f64).sqrt(), "{name}: collapse indicator {spread}");
    let knn = entries.iter().rev().find_map(|e| e["val_knn_accuracy"].as_f64()).unwrap();
    assert!((0.0..=1.0).contains(&knn));

    // The checkpoint's backbone loads by name, heads and momentum copies left out.
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let spec = c.backbone_spec().unwrap();
    let _b = patchtcga_model::Backbone::new(&vs.root(), spec);
    let r = load(&vs, &s.run_dir.join("model.safetensors"), spec.head_name(), &ImportOptions::default()).unwrap();
    assert_eq!(r.prefix, "");
    assert_eq!(r.loaded, vs.variables().len());
    assert!(r.skipped_heads.iter().any(|n| n.starts_with("projector.") || n.starts_with("decoder_")));
    Run { config: c, steps: steps.into_iter().cloned().collect(), _dir: dir }
}

/// What a checked run leaves for method-specific checks.
struct Run {
    config: Config,
    /// Per-update log entries.
    steps: Vec<serde_json::Value>,
    _dir: tempfile::TempDir,
}

#[test]
fn simclr_learns_without_collapse() {
    check("simclr", 2, 0.8, 32, &[]);
}

#[test]
fn byol_learns_without_collapse() {
    check("byol", 2, 0.8, 32, &[]);
}

#[test]
fn mocov2_learns_without_collapse() {
    check("mocov2", 2, 0.8, 32, &[]);
}

const VIT: [&str; 4] = ["model_name=\"vit-s16\"", "image_size=64", "val_image_size=64", "lr=3e-4"];

#[test]
fn dino_learns_without_collapse() {
    let dino = ["local_crops=2", "out_dim=64", "warmup_teacher_temp_epochs=1", "momentum_base=0.99", "drop_path=0.1"];
    // Every epoch's checkpoint kept: the head's last layer is compared across the first two.
    let dino = [dino.as_slice(), &["keep_checkpoints=0"]].concat();
    let run = check("dino", 4, 0.8, 64, &[VIT.as_slice(), dino.as_slice(), &["wd=0.04", "wd_end=0.4"]].concat());
    let per_epoch: Vec<(f64, f64)> =
        run.steps.iter().map(|e| (e["teacher_temp"].as_f64().unwrap(), e["wd"].as_f64().unwrap())).collect();
    assert!((per_epoch[0].0 - 0.04).abs() + (per_epoch[0].1 - 0.04).abs() < 1e-12, "at the start: {per_epoch:?}");
    assert_eq!(per_epoch[3].0, 0.07, "teacher temperature after its warm-up epoch");
    assert!(per_epoch[3].1 > 0.3, "weight decay rises on a cosine: {per_epoch:?}");
    // The cross-entropy splits into the teacher's entropy and the student's KL divergence.
    for e in &run.steps {
        let (loss, h, kl) =
            (e["loss"].as_f64().unwrap(), e["teacher_entropy"].as_f64().unwrap(), e["kl"].as_f64().unwrap());
        assert!((loss - h - kl).abs() < 1e-4 && h > 0.0 && h <= (64f64).ln() + 1e-6 && kl > -1e-4, "{e}");
    }

    // The head's last layer did not move in the first epoch (freeze_last_layer = 1), and did after.
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (fresh, _) = method(&run.config, &RunContext::new(&run.config, None).unwrap()).unwrap();
    let initial = &fresh.var_store().variables()["projector.last_layer.weight_v"];
    let saved = |dir: &str| -> tch::Tensor {
        let path = run.config.run_dir().join("checkpoints").join(dir).join("model.safetensors");
        let vars = tch::Tensor::read_safetensors(path).unwrap();
        vars.into_iter().find(|(n, _)| n == "projector.last_layer.weight_v").unwrap().1
    };
    let diff = |t: tch::Tensor| (t - initial).abs().max().double_value(&[]);
    assert_eq!(diff(saved("epoch_0001")), 0.0, "frozen in epoch 1");
    assert!(diff(saved("epoch_0002")) > 0.0, "trained in epoch 2");

    // DINO's initialisation of the head's MLP: weights N(0, 0.02²), zero biases; teacher = student.
    let vars = fresh.var_store().variables();
    for layer in ["0", "2", "4"] {
        let w = &vars[&format!("projector.mlp.{layer}.weight")];
        let std = w.std(true).double_value(&[]);
        assert!((std - 0.02).abs() < 0.002 && w.mean(None).abs().double_value(&[]) < 0.002, "layer {layer}: std {std}");
        assert_eq!(vars[&format!("projector.mlp.{layer}.bias")].abs().max().double_value(&[]), 0.0);
        assert!(w.equal(&vars[&format!("target.projector.mlp.{layer}.weight")]), "the teacher starts as the student");
    }
}

#[test]
fn mae_learns_without_collapse() {
    let mae = ["decoder_embed_dim=32", "decoder_depth=1", "decoder_num_heads=2", "optim=\"adamw\""];
    // Predicting nothing scores 1.0 on normalised pixels; a fall of 8 % in 26 steps from four
    // visible patches of 16 is learning the images, not the bias.
    let run = check("mae", 1, 0.92, 384, &[VIT.as_slice(), mae.as_slice()].concat());

    // MAE's initialisation: Xavier-uniform Linear weights and patch embedding, zero biases.
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (fresh, _) = method(&run.config, &RunContext::new(&run.config, None).unwrap()).unwrap();
    let vars = fresh.var_store().variables();
    let xavier = |name: &str, fan_in: f64, fan_out: f64| {
        let a = (6.0 / (fan_in + fan_out)).sqrt();
        let t = &vars[name];
        let (max, std) = (t.abs().max().double_value(&[]), t.std(true).double_value(&[]));
        assert!(max <= a && max > 0.99 * a, "{name}: |w| up to {max}, bound {a}");
        assert!((std - a / 3f64.sqrt()).abs() < 0.03 * a, "{name}: std {std}");
    };
    xavier("blocks.0.attn.qkv.weight", 384.0, 1152.0);
    xavier("patch_embed.proj.weight", 768.0, 384.0);
    xavier("decoder_embed.weight", 384.0, 32.0);
    assert_eq!(vars["blocks.0.mlp.fc1.bias"].abs().max().double_value(&[]), 0.0);
    assert_eq!(vars["blocks.0.norm1.weight"].min().double_value(&[]), 1.0);
}
