//! Supervised training through the engine on real H&E crops: the loss falls, the run folder
//! holds log, plots and checkpoints, a stopped-then-resumed run ends bit-identical to an
//! uninterrupted one, and the run reports its progress (and the samples it left out) as it goes.

use std::path::Path;

use patchtcga_augment::Preset;
use patchtcga_engine::checkpoint::best_epoch;
use patchtcga_engine::data::loaders;
use patchtcga_engine::{train, Config, Holdout, Method, Progress, RunContext};
use patchtcga_methods::Supervised;
use patchtcga_testkit::layouts::{dataset, TORCH_RNG};
use tch::Tensor;

fn config(data: &Path, runs: &Path, name: &str) -> Config {
    let o: Vec<String> = [
        format!("name={name:?}"),
        format!("dataset_dir={:?}", data.display().to_string()),
        format!("root_dir={:?}", runs.display().to_string()),
        "model_name=\"resnet18\"".into(),
        "num_classes=20".into(),
        "image_size=32".into(),
        "val_image_size=32".into(),
        "batch_size=4".into(),
        "num_workers=2".into(),
        "base_batch_size=4".into(),
        "lr=1e-3".into(),
        "warmup_epochs=0.5".into(),
        "epochs=3".into(),
        "seed=5".into(),
    ]
    .into();
    Config::load(None, &o).unwrap()
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn run(c: &Config, resume: bool) -> patchtcga_engine::Summary {
    run_told(c, resume).0
}

/// A run, and what it reported as it went.
fn run_told(c: &Config, resume: bool) -> (patchtcga_engine::Summary, Vec<String>) {
    tch::set_num_threads(1);
    let context = RunContext::new(c, None).unwrap();
    let l = loaders(c, &context, Preset::Supervised).unwrap();
    let mut m = Supervised::new(c, &context).unwrap();
    let mut told = Vec::new();
    let mut hear = |p: Progress| told.push(format!("{p:?}"));
    let s =
        train(c, &context, &mut m, &l.train, Holdout { val: Some(&l.train), test: None }, resume, &mut hear).unwrap();
    (s, told)
}

#[test]
fn a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("PTCGA200");
    dataset(&data);
    let runs = dir.path().join("runs");
    let mut whole = config(&data, &runs, "whole");
    whole.num_accum = 2;
    let a = run(&whole, false);
    assert_eq!(a.position.update, 6, "16 images / batch 4 / accumulate 2 = 2 updates per epoch");
    let mut cut = config(&data, &runs, "cut");
    cut.num_accum = 2;
    cut.stop_num_updates = 3;
    let (b, told) = run_told(&cut, false);
    assert!(b.stopped_early);
    assert_eq!((b.position.epoch, b.position.batch), (1, 2), "stopped in the middle of the second epoch");
    assert_eq!(told.iter().filter(|t| *t == "Batch").count(), 6, "{told:?}");
    assert_eq!(told.last().map(String::as_str), Some("Stopped { update: 3 }"), "{told:?}");
    cut.stop_num_updates = 0;
    let (c, told) = run_told(&cut, true);
    assert_eq!(c.position.update, 6);
    // Told where it resumed, and that the second epoch went on from its third batch of four.
    assert!(told[0].starts_with("Resumed {") && told[0].contains("epoch: 1, batch: 2, update: 3"), "{told:?}");
    assert_eq!(told[1], "Epoch { epoch: 2, epochs: 3, batches: 4, done: 2 }", "{told:?}");
    assert_eq!(told.iter().filter(|t| t.starts_with("Update {")).count(), 3, "{told:?}");
    let (wa, wc) = (weights(&a.run_dir), weights(&c.run_dir));
    assert_eq!(wa.len(), wc.len());
    for ((n, x), (_, y)) in wa.iter().zip(&wc) {
        assert!(x.equal(y), "{n} differs after resume");
    }
    // The resumed log continues where the cut one stopped, without duplicates.
    let log = std::fs::read_to_string(c.run_dir.join("metrics.jsonl")).unwrap();
    let updates: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e.get("loss").is_some())
        .map(|e| e["update"].as_u64().unwrap())
        .collect();
    assert_eq!(updates, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn supervised_training_lowers_the_loss_and_fills_the_run_folder() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("PTCGA200");
    dataset(&data);
    let mut c = config(&data, &dir.path().join("runs"), "learn");
    c.epochs = 8;
    let context = RunContext::new(&c, None).unwrap();
    let l = loaders(&c, &context, Preset::Supervised).unwrap();
    let mut m = Supervised::new(&c, &context).unwrap();
    let before = m.evaluate(l.val.as_ref().unwrap_or(&l.train)).unwrap();
    let s = train(
        &c,
        &context,
        &mut m,
        &l.train,
        Holdout { val: Some(&l.train), test: Some(&l.train) },
        false,
        &mut |_| {},
    )
    .unwrap();
    let after = m.evaluate(&l.train).unwrap();
    let (l0, l1) = (before[0].1, after[0].1);
    assert!(l1 < l0 * 0.5, "evaluation loss {l0:.3} → {l1:.3}");
    assert!(after[1].1 >= 0.9, "accuracy after training: {}", after[1].1);
    assert!(s.last["test_accuracy"] >= 0.9);
    for f in [
        "config.toml",
        "metrics.jsonl",
        "model.safetensors",
        "plots/loss.png",
        "plots/lr.png",
        "plots/accuracy.png",
        "checkpoints/latest",
    ] {
        assert!(s.run_dir.join(f).is_file(), "{f} missing");
    }
    // keep_checkpoints = 1: the last epoch's checkpoint whole, and the best validation epoch's
    // weights besides (no optimizer state); no other.
    let ckpts = s.run_dir.join("checkpoints");
    let best = best_epoch(&s.run_dir, &ckpts, "val_accuracy").unwrap().unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("epoch_"))
        .collect();
    left.sort();
    let mut expected = vec![format!("epoch_{best:04}"), "epoch_0008".to_string()];
    expected.dedup();
    assert_eq!(left, expected);
    assert!(ckpts.join("epoch_0008/optimizer.safetensors").is_file());
    let best_dir = ckpts.join(format!("epoch_{best:04}"));
    assert!(best_dir.join("model.safetensors").is_file());
    assert_eq!(best_dir.join("optimizer.safetensors").is_file(), best == 8, "an older best keeps its weights only");
    log_is_typed(&s.run_dir);
    let resolved = Config::load(Some(&s.run_dir.join("config.toml")), &[]).unwrap();
    assert_eq!(resolved, c, "the run folder's config reproduces the run");
}

#[test]
fn every_preset_in_configs_is_a_valid_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            continue; // configs/mil: `mil train`'s settings, checked by the command line's tests
        }
        let c = Config::load(Some(&p), &[]).unwrap_or_else(|e| panic!("{e}"));
        // Named by method (pretraining) or by benchmark (fine-tuning, supervised).
        let stem = p.file_stem().unwrap().to_str().unwrap().trim_start_matches("demo_");
        let fits = match c.self_supervised.as_str() {
            "none" => ["supervised", "pcam", "segpanda"].iter().any(|b| stem.starts_with(b)),
            method => stem.starts_with(method),
        };
        assert!(fits, "{stem} trains {}", c.self_supervised);
        // DINO's ViT resamples its position embedding for local crops as DINO's own code does.
        if let patchtcga_model::Spec::Vit(v) = c.backbone_spec().unwrap() {
            let dino = c.self_supervised == patchtcga_engine::SelfSupervised::Dino;
            assert_eq!(v.pos_resample == patchtcga_model::vit::PosResample::Dino, dino, "{stem}");
        }
        n += 1;
    }
    assert!(n >= 14);
}

#[test]
fn devices_are_named_as_in_pytorch_and_missing_gpus_refused() {
    use patchtcga_engine::config::DeviceChoice;
    // Named as in PyTorch, parsed once where the config or the command line is read.
    let device = |name: &str| name.parse::<DeviceChoice>().and_then(patchtcga_engine::device::device);
    assert_eq!(device("cpu").unwrap(), tch::Device::Cpu);
    assert!(device("tpu").unwrap_err().to_string().contains("cpu, cuda or cuda:N"));
    let visible = tch::Cuda::device_count();
    let beyond = format!("cuda:{visible}");
    assert!(device(&beyond).unwrap_err().to_string().contains(&beyond), "a GPU index past the visible ones");
    match visible {
        0 => assert!(device("cuda").unwrap_err().to_string().contains("no CUDA device is visible")),
        _ => assert_eq!(device("cuda").unwrap(), tch::Device::Cuda(0), "no LOCAL_RANK: the first GPU"),
    }
}

/// Loss by update in a run's `metrics.jsonl` (null for a skipped update's).
fn logged_losses(run: &Path) -> Vec<(u64, Option<f64>)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e.get("loss").is_some())
        .map(|e| (e["update"].as_u64().unwrap(), e["loss"].as_f64()))
        .collect()
}

#[test]
fn a_diverging_run_stops_naming_the_update_and_keeps_its_last_checkpoint() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("PTCGA200");
    dataset(&data);
    let mut c = config(&data, &dir.path().join("runs"), "diverge");
    c.warmup_epochs = 0.0;
    c.stop_num_updates = 2;
    let first = run(&c, false);
    assert!(first.stopped_early);
    // Resumed at a learning rate no network survives.
    c.stop_num_updates = 0;
    c.lr = 1e30;
    tch::set_num_threads(1);
    let context = RunContext::new(&c, None).unwrap();
    let l = loaders(&c, &context, Preset::Supervised).unwrap();
    let mut m = Supervised::new(&c, &context).unwrap();
    let e = train(&c, &context, &mut m, &l.train, Holdout::default(), true, &mut |_| {}).unwrap_err();
    assert!(matches!(e, patchtcga_engine::LearnError::Diverged(_)), "{e}");
    let msg = e.to_string();
    // Update 3 takes the huge step; update 4's forward pass overflows.
    assert!(msg.contains("update 4 (epoch 1, batch 4)") && msg.contains("loss is NaN"), "{msg}");
    assert!(msg.contains("checkpoints/update_0000002") && msg.contains("--resume"), "{msg}");
    let run_dir = c.run_dir();
    assert!(!run_dir.join("model.safetensors").exists(), "no weights of a diverged run");
    assert!(run_dir.join("checkpoints/update_0000002/position.json").is_file(), "the last good checkpoint stays");
    assert_eq!(logged_losses(&run_dir).iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, 3], "nothing logged past it");
}

#[test]
fn skipped_non_finite_updates_are_counted_and_never_reach_the_weights() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("PTCGA200");
    dataset(&data);
    let mut c = config(&data, &dir.path().join("runs"), "skip");
    c.warmup_epochs = 0.0;
    c.epochs = 2;
    c.lr = 1e30;
    c.on_nonfinite = patchtcga_engine::config::OnNonFinite::Skip;
    let s = run(&c, false);
    assert_eq!(s.position.update, 8);
    let skipped = s.position.skipped_updates;
    assert!(skipped > 0, "lr 1e30 makes some update non-finite");
    assert_eq!(s.last.get("skipped_updates").copied(), Some(skipped as f64));
    let nulls = logged_losses(&s.run_dir).iter().filter(|x| x.1.is_none()).count();
    assert!(nulls > 0 && nulls <= skipped, "{nulls} non-finite losses logged, {skipped} updates skipped");
    for (n, t) in weights(&s.run_dir) {
        if t.is_floating_point() {
            assert!(t.isfinite().all().int64_value(&[]) == 1, "{n} is not finite");
        }
    }
}

#[test]
fn tensorboard_reads_the_scalars_of_the_metrics_log() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("PTCGA200");
    dataset(&data);
    let mut c = config(&data, &dir.path().join("runs"), "tb");
    c.epochs = 2;
    c.stop_num_updates = 3;
    run(&c, false);
    c.stop_num_updates = 0;
    let s = run(&c, true); // resumed: update 4 onwards written again into a second event file
    let root = patchtcga_testkit::repo_root();
    let out = std::process::Command::new("python3")
        .env("PYTHONPATH", root.join(".pytools"))
        .arg(root.join("tools/read_tensorboard.py"))
        .arg(&s.run_dir)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "TensorBoard's reader failed (make test installs it into .pytools): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tb: std::collections::BTreeMap<String, Vec<(u64, f64)>> = serde_json::from_slice(&out.stdout).unwrap();
    let want: Vec<(u64, f64)> = logged_losses(&s.run_dir).into_iter().map(|(u, l)| (u, l.unwrap())).collect();
    let got = &tb["train/loss"];
    assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), want.iter().map(|x| x.0).collect::<Vec<_>>());
    for ((_, a), (_, b)) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }
    for tag in ["train/lr", "perf/images_per_s", "perf/data_wait", "val/accuracy", "val/loss"] {
        assert!(tb.contains_key(tag), "{tag} missing from {:?}", tb.keys().collect::<Vec<_>>());
    }
}

#[test]
fn config_choices_are_typed_when_the_config_loads() {
    let load = |sets: &[&str]| Config::load(None, &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let e = load(&["optim=\"adamx\""]).unwrap_err().to_string();
    assert!(e.contains("`adamx`") && e.contains("`adamw`") && e.contains("in `optim`"), "{e}");
    let e = load(&["self_supervised=\"simclrr\""]).unwrap_err().to_string();
    assert!(e.contains("in `self_supervised`") && e.contains("`mocov2`"), "{e}");
    assert!(load(&["device=\"tpu\""]).unwrap_err().to_string().contains("cpu, cuda or cuda:N"));
    assert!(load(&["image_stats=\"1,2,3\""]).unwrap_err().to_string().contains("three positive stds"));
    let c = load(&["pretrained=\"\"", "seg_head=\"\"", "device=\"cuda:1\"", "image_stats=\"ptcga\""]).unwrap();
    assert_eq!((c.pretrained, c.seg_head), (None, None), "empty paths and heads read as none");
    assert_eq!(c.device, patchtcga_engine::config::DeviceChoice::CudaIndex(1));
    assert_eq!(c.image_stats.mean, [0.7184, 0.5076, 0.6476]);
    // A foundation-model preset brings its own normalisation unless the config names one.
    let h = load(&["model_name=\"h-optimus-0\""]).unwrap();
    assert_eq!(h.image_stats.mean, [0.707223, 0.578729, 0.703617]);
    assert_eq!(h.backbone_spec().unwrap().feature_dim(), 1536);
    let given = load(&["model_name=\"h-optimus-0\"", "image_stats=\"imagenet\""]).unwrap();
    assert_eq!(given.image_stats.mean, [0.485, 0.456, 0.406]);
    assert!(load(&["model_name=\"uni3\""]).unwrap_err().to_string().contains("uni2-h"), "names the presets");
    // The resolved config round-trips through its TOML (what a run folder keeps).
    let again = Config::load(None, &[]).unwrap();
    let text = again.to_toml();
    assert!(!text.contains("pretrained") && text.contains("optim = \"adam\""), "{text}");
}

/// Every line of a run's `metrics.jsonl` is a typed log entry (updates and evaluations both
/// present) that writes back to the same JSON: the types `report` reads with are the log's.
fn log_is_typed(run: &std::path::Path) {
    use patchtcga_metrics::run::LogEntry;
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let (mut updates, mut evaluations) = (0, 0);
    for line in text.lines() {
        let entry: LogEntry = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        match &entry {
            LogEntry::Update(u) => {
                updates += 1;
                assert!(u.loss.is_finite() && u.lr > 0.0 && u.images_per_s > 0.0, "{line}");
            }
            LogEntry::Evaluation(_) => evaluations += 1,
        }
        let written: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_value(&entry).unwrap(), written, "{line}");
    }
    assert!(updates > 0 && evaluations > 0, "{updates} updates, {evaluations} evaluations");
}

#[test]
fn an_unreadable_image_is_left_out_and_reported_by_name() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("PTCGA200");
    dataset(&data);
    let victim = data.join("lung").join("s0_0_0.jpg");
    std::fs::write(&victim, b"not a JPEG").unwrap();
    let mut c = config(&data, &dir.path().join("runs"), "skip");
    c.epochs = 1;
    let (s, told) = run_told(&c, false);
    assert_eq!(s.position.epoch, 1);
    let skipped: Vec<&String> = told.iter().filter(|t| t.starts_with("Skipped(")).collect();
    assert_eq!(skipped.len(), 1, "{told:?}");
    assert!(skipped[0].contains("s0_0_0.jpg"), "{skipped:?}");
}
