//! Slide-level MIL: ABMIL, CLAM-SB and TransMIL against PyTorch references written from the papers
//! (tools/make_mil_goldens.py), a synthetic task they must learn with attention on the planted
//! instances, and bad input.

use std::path::{Path, PathBuf};

use patchtcga_engine::config::Optim;
use patchtcga_features::slide_features::{write_h5, Provenance, SlideEmbedding, SlideFeatures};
use patchtcga_mil::{
    self as mil, Abmil, AbmilConfig, EpochLosses, FoldResult, FoldStore, InstanceCriterion, InstanceLoss, LrSchedule,
    MilArch, MilNet, MilOptions, Unkept,
};
use patchtcga_slide::PatchGeometry;
use patchtcga_testkit::det_values;
use patchtcga_testkit::layouts::TORCH_RNG;
use rand::{Rng, SeedableRng};
use tch::nn;
use tch::{Device, Kind, Tensor};

fn golden() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mil.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Compares in float64 with the float64 goldens: the steepened attention softmax amplifies float32
/// rounding, which differs between CPUs (MKL's AVX-512 and AVX2 kernels disagree by 1.35e-5), so
/// the tests run the networks in float64, where every kernel agrees far below the tolerance.
fn close(ours: &Tensor, reference: &[f64], what: &str) {
    let r = Tensor::from_slice(reference).reshape(ours.size());
    let err = (ours - &r).abs().max().double_value(&[]) / r.abs().max().double_value(&[]);
    assert!(err <= 1e-9, "{what}: rel. error {err:.2e}");
}

fn doubles(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// A bag of the goldens' deterministic values ×30, in float64.
fn det_bag(n: i64, d: i64) -> Tensor {
    Tensor::from_slice(&det_values("bag", &[n, d])).reshape([n, d]).to_kind(Kind::Double) * 30.0
}

/// Every parameter set to the goldens' deterministic values by name, then the whole store in
/// float64 with the attention scorer's weight (ABMIL, CLAM-SB) steepened by `attention_scale` as
/// the golden script does (in float64, as it does).
fn fill_det(vs: &mut nn::VarStore, attention_scale: f64) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            t.copy_(&Tensor::from_slice(&det_values(&name, &t.size())).reshape(t.size()));
        }
    });
    vs.double();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name == "attention_net.3.attention_c.weight" {
                let _ = t.g_mul_scalar_(attention_scale);
            }
        }
    });
}

#[test]
fn abmil_forward_and_loss_match_the_pytorch_reference() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let g = golden();
    let (d, n, c) = (g["input"].as_i64().unwrap(), g["instances"].as_i64().unwrap(), g["classes"].as_i64().unwrap());
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = Abmil::new(&vs.root(), AbmilConfig::small(MilArch::Abmil, d, c));
    fill_det(&mut vs, g["attention_c_scale"].as_f64().unwrap());
    assert_eq!(vs.variables().len(), 10, "CLAM's ten tensors");
    let out = tch::no_grad(|| model.forward(&det_bag(n, d), false));
    close(&out.logits, &doubles(&g["logits"]), "logits");
    close(&out.attention, &doubles(&g["attention"]), "attention");
    let y = Tensor::from_slice(&[g["label"].as_i64().unwrap()]);
    let w = Tensor::from_slice(&doubles(&g["class_weights"]));
    let loss = out.logits.log_softmax(-1, Kind::Double).nll_loss(&y).double_value(&[]);
    let weighted =
        out.logits.cross_entropy_loss::<&Tensor>(&y, Some(&w), tch::Reduction::Mean, -100, 0.0).double_value(&[]);
    assert!((loss - g["loss"].as_f64().unwrap()).abs() < 1e-9, "loss {loss}");
    assert!((weighted - g["weighted_loss"].as_f64().unwrap()).abs() < 1e-9, "weighted loss {weighted}");
}

#[test]
fn clam_sb_instance_and_total_loss_match_the_pytorch_reference() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let g = golden();
    let (d, n, c) = (g["input"].as_i64().unwrap(), g["instances"].as_i64().unwrap(), g["classes"].as_i64().unwrap());
    let label = g["label"].as_i64().unwrap();
    let weight = Tensor::from_slice(&doubles(&g["class_weights"])).get(label);
    let cases = [("", InstanceCriterion::CrossEntropy), ("_svm", InstanceCriterion::SmoothSvm)];
    for ((key, subtyping), (loss, criterion)) in
        [("subtyping", true), ("binary", false)].into_iter().flat_map(|k| cases.map(|c| (k, c)))
    {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let instance = InstanceLoss {
            k: g["k"].as_i64().unwrap(),
            bag_weight: g["bag_weight"].as_f64().unwrap(),
            subtyping,
            criterion,
        };
        let config = AbmilConfig { instance: Some(instance), ..AbmilConfig::small(MilArch::ClamSb, d, c) };
        let model = Abmil::new(&vs.root(), config);
        fill_det(&mut vs, g["attention_c_scale"].as_f64().unwrap());
        assert_eq!(vs.variables().len(), 16, "CLAM-SB's ten tensors and two per instance classifier");
        let out = tch::no_grad(|| model.forward(&det_bag(n, d), false));
        let inst = model.instance_loss(&out, label, instance).double_value(&[]);
        let total = model.loss(&out, label, &weight).double_value(&[]);
        let want = |k: &str| g[format!("{k}_{key}")].as_f64().unwrap();
        let (want_inst, want_total) = (want(&format!("instance{loss}_loss")), want(&format!("clam_sb{loss}_loss")));
        assert!((inst - want_inst).abs() < 1e-9, "{key}{loss}: instance loss {inst} vs {want_inst}");
        assert!((total - want_total).abs() < 1e-9, "{key}{loss}: loss {total} vs {want_total}");
    }
    // The SVM alone, on scores that take its smooth and its hard branch.
    let scores = Tensor::from_slice(&doubles(&g["svm_scores"])).reshape([-1, 2]).to_kind(Kind::Double);
    let labels: Vec<i64> = g["svm_labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let svm = InstanceCriterion::SmoothSvm.loss(&scores, &Tensor::from_slice(&labels)).double_value(&[]);
    assert!((svm - g["svm_loss"].as_f64().unwrap()).abs() < 1e-6, "SVM {svm} vs {}", g["svm_loss"]);
}

#[test]
fn transmil_forward_matches_the_pytorch_reference() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transmil.json");
    let g: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    let (d, c) = (g["input"].as_i64().unwrap(), g["classes"].as_i64().unwrap());
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = MilNet::new(&vs.root(), MilArch::TransMil, d, c);
    fill_det(&mut vs, 1.0);
    assert_eq!(vs.variables().len(), 25, "TransMIL's tensors");
    // A bag of 9 (a 3 × 3 square, one landmark per token) and of 300 (padded to 18 × 18, two
    // tokens per landmark).
    for b in g["bags"].as_array().unwrap() {
        let n = b["instances"].as_i64().unwrap();
        let bag =
            Tensor::from_slice(&det_values(&format!("bag{n}"), &[n, d])).reshape([n, d]).to_kind(Kind::Double) * 30.0;
        let (logits, attention) = tch::no_grad(|| model.predict(&bag, false));
        assert!(attention.is_none());
        let r = Tensor::from_slice(
            &b["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>(),
        );
        let err = (logits.reshape([-1]) - &r).abs().max().double_value(&[]) / r.abs().max().double_value(&[]);
        assert!(err <= 1e-9, "{n} instances: rel. error {err:.2e}");
    }
}

/// Writes `<dir>/<slide>.h5` as `patchtcga embed --slides` does.
fn write_bag(dir: &Path, slide: &str, features: &Tensor) {
    let n = features.size()[0];
    let f = SlideFeatures {
        features: features.shallow_clone(),
        coords: (0..n).map(|i| [i * 224, 0]).collect(),
        level: 0,
        footprint: 224,
    };
    let o = SlideEmbedding {
        geometry: PatchGeometry { mpp: 0.5, size: 224 },
        device: Device::Cpu,
        float16: slide.ends_with('7'),
        autocast: false,
    };
    let p = Provenance { model: "synthetic".into(), weights_md5: "-".into(), preprocessing: "-".into() };
    write_h5(&dir.join(format!("{slide}.h5")), &f, &o, &p).unwrap();
}

/// A synthetic task: 120 slides (two per case) of 20–34 Gaussian instances; the tumour ones hold
/// 3–5 instances shifted by 4 along 8 of 16 dimensions (instances 0..k); slides ending in 7 stored
/// as float16. Returns the folder and the labels CSV.
fn synthetic(dir: &Path) -> (PathBuf, PathBuf) {
    let feats = dir.join("feats");
    std::fs::create_dir_all(&feats).unwrap();
    // Our own generator, not LibTorch's global one, which tests running alongside would share.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut gaussian = move || {
        let (u, v): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    };
    let mut csv = String::from("slide,label,case\n");
    for i in 0..120 {
        let tumour = i % 2 == 1;
        let n = 20 + (i * 7) % 21;
        let values: Vec<f32> = (0..n * 16).map(|_| gaussian()).collect();
        let x = Tensor::from_slice(&values).reshape([n, 16]);
        if tumour {
            let k = 3 + i % 3;
            let _ = x.narrow(0, 0, k).narrow(1, 0, 8).g_add_scalar_(4.0);
        }
        let slide = format!("slide{i:03}");
        write_bag(&feats, &slide, &x);
        csv += &format!("{slide},{},case{}\n", if tumour { "tumor" } else { "normal" }, i / 4 * 2 + i % 2);
    }
    let labels = dir.join("labels.csv");
    std::fs::write(&labels, csv).unwrap();
    (feats, labels)
}

/// This test's turn at LibTorch's generator (on two threads), a temporary folder, and the
/// synthetic task's bags written into it.
fn synthetic_task() -> (std::sync::MutexGuard<'static, ()>, tempfile::TempDir, mil::Bags) {
    let turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let (feats, labels) = synthetic(dir.path());
    let data = mil::load(&feats, &labels, false).unwrap();
    (turn, dir, data)
}

/// With 60 slides instead of 120, a 512-wide ABMIL memorised the 36 training bags in some folds
/// instead of finding the planted signal (held-out AUC 0.5 there); with 72 training bags every
/// fold finds it.
fn options() -> MilOptions {
    MilOptions {
        arch: MilArch::Abmil,
        instance_criterion: InstanceCriterion::CrossEntropy,
        folds: 5,
        epochs: 20,
        optim: Optim::Adam,
        lr: 1e-3,
        schedule: LrSchedule::Constant,
        warmup_epochs: 0,
        weight_decay: 1e-5,
        seed: 3,
        class_weights: true,
        patience: None,
        device: Device::Cpu,
    }
}

#[test]
fn abmil_clam_sb_and_transmil_learn_a_planted_signal() {
    let (_turn, _dir, data) = synthetic_task();
    assert_eq!(
        (data.bags.len(), data.classes.clone(), data.width),
        (120, vec!["normal".to_string(), "tumor".into()], 16)
    );
    let cv = mil::cross_validate(&data, &options(), &mut Unkept).unwrap();
    assert_eq!(cv.folds.len(), 5);
    let tested: usize = cv.folds.iter().map(|f| f.test.samples).sum();
    assert_eq!(tested, 120, "every slide is tested once");
    assert!(cv.roc_auc.mean > 0.9, "held-out ROC-AUC {:?}", cv.roc_auc);
    // Attention: trained on the first 60 slides, highest on a planted instance of each held-out
    // tumour slide.
    let (train, held): (Vec<_>, Vec<_>) = data.bags.iter().partition(|b| b.slide.as_str() < "slide060");
    // TransMIL pools no attention: its held-out predictions are checked instead.
    let o = MilOptions { arch: MilArch::TransMil, epochs: 2, ..options() };
    let (model, _vs, _, _) = mil::cv::fit(&data, &train, &held, &o, 0, &mut Unkept).unwrap();
    let tumour = |b: &&mil::Bag| {
        let (logits, _) = tch::no_grad(|| model.predict(&b.features, false));
        logits.softmax(-1, Kind::Float).double_value(&[0, 1])
    };
    let right = held.iter().filter(|b| (tumour(b) > 0.5) == (b.label == 1)).count();
    assert!(right as f64 >= 0.9 * held.len() as f64, "TransMIL: {right} of {} held-out slides right", held.len());
    for arch in [MilArch::Abmil, MilArch::ClamSb] {
        let (model, _vs, _, _) =
            mil::cv::fit(&data, &train, &held, &MilOptions { arch, ..options() }, 0, &mut Unkept).unwrap();
        for b in held.iter().filter(|b| b.label == 1) {
            let i: usize = b.slide["slide".len()..].parse().unwrap();
            let attention = tch::no_grad(|| model.predict(&b.features, false)).1.expect("attention pooling");
            let top = attention.argmax(0, false).int64_value(&[]);
            assert!(top < (3 + i % 3) as i64, "{arch}: {}: attention peaks on instance {top}", b.slide);
        }
    }
}

#[test]
fn bad_input_gets_one_message_naming_the_file() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (feats, labels) = synthetic(dir.path());
    let err = |feats: &Path, labels: &Path| match mil::load(feats, labels, false) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    // A labelled slide without features.
    let more = dir.path().join("more.csv");
    std::fs::write(&more, std::fs::read_to_string(&labels).unwrap() + "ghost,tumor,case99\n").unwrap();
    let e = err(&feats, &more);
    assert!(e.contains("more.csv") && e.contains("ghost") && e.contains("no features"), "{e}");
    // Features without a label, unless allowed.
    let fewer = dir.path().join("fewer.csv");
    let text = std::fs::read_to_string(&labels).unwrap();
    std::fs::write(&fewer, text.lines().filter(|l| !l.starts_with("slide119")).collect::<Vec<_>>().join("\n")).unwrap();
    let e = err(&feats, &fewer);
    assert!(e.contains("slide119") && e.contains("--allow-unlabelled"), "{e}");
    assert_eq!(mil::load(&feats, &fewer, true).unwrap().bags.len(), 119);
    // A split that is not train, val or test (a typo would put a held-out slide into the folds).
    let typo = dir.path().join("typo.csv");
    let rows: Vec<String> =
        text.lines().skip(1).enumerate().map(|(i, l)| format!("{l},{}", ["", "Test"][(i == 3) as usize])).collect();
    std::fs::write(&typo, format!("{},split\n{}\n", text.lines().next().unwrap(), rows.join("\n"))).unwrap();
    let e = err(&feats, &typo);
    assert!(e.contains("typo.csv") && e.contains("row 5") && e.contains("\"Test\" is not train, val or test"), "{e}");
    // An .h5 without features, and one of another width.
    write_bag(&feats, "slide005", &Tensor::zeros([4, 8], (Kind::Float, Device::Cpu)));
    let e = err(&feats, &labels);
    assert!(e.contains("slide005 (8)") && e.contains("another width"), "{e}");
    hdf5_metno::File::create(feats.join("slide005.h5")).unwrap();
    let e = err(&feats, &labels);
    assert!(e.contains("slide005.h5") && e.contains("no `features`"), "{e}");
    // A class with fewer cases than folds.
    let (feats, labels) = synthetic(&dir.path().join("again"));
    let data = mil::load(&feats, &labels, false).unwrap();
    let e = match mil::cross_validate(&data, &MilOptions { folds: 40, ..options() }, &mut Unkept) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("has 30 case(s), fewer than the 40 folds"), "{e}");
}

#[test]
fn a_held_out_test_split_stays_out_of_the_folds_and_is_tested_by_every_fold() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let (feats, labels) = synthetic(dir.path());
    // The last 20 slides (cases 58–59 and on) become the held-out test set.
    let text = std::fs::read_to_string(&labels).unwrap();
    let mut rows = String::from("slide,label,case,split\n");
    for line in text.lines().skip(1) {
        let held = line["slide".len()..line.find(',').unwrap()].parse::<usize>().unwrap() >= 100;
        rows += &format!("{line},{}\n", if held { "test" } else { "train" });
    }
    std::fs::write(&labels, rows).unwrap();
    let data = mil::load(&feats, &labels, false).unwrap();
    assert_eq!(data.bags.iter().filter(|b| b.held_out).count(), 20);
    let o = MilOptions { folds: 4, epochs: 10, ..options() };
    let cv = mil::cross_validate(&data, &o, &mut Unkept).unwrap();
    let tested: usize = cv.folds.iter().map(|f| f.test.samples).sum();
    assert_eq!(tested, 100, "the folds test only the other 100 slides");
    assert!(cv.folds.iter().all(|f| f.test_slides.iter().all(|s| s.as_str() < "slide100")));
    let h = cv.held_out.as_ref().expect("held-out results");
    assert_eq!(h.slides.len(), 20);
    assert!(cv.folds.iter().all(|f| f.held_out.as_ref().is_some_and(|r| r.report.samples == 20)));
    assert_eq!(h.ensemble.samples, 20);
    assert!(h.ensemble.roc_auc.unwrap() > 0.9, "held-out ensemble {:?}", h.ensemble.roc_auc);
    // Written and read back through the shared types.
    let back: mil::CrossValidation = serde_json::from_slice(&serde_json::to_vec(&cv).unwrap()).unwrap();
    assert_eq!(back.held_out.unwrap().slides, h.slides);
}

#[test]
fn a_run_cut_after_some_folds_resumes_to_the_uninterrupted_result() {
    let (_turn, dir, data) = synthetic_task();
    let o = MilOptions { folds: 3, epochs: 2, ..options() };
    let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
    mil::run::train(&data, &o, &whole, |_| {}).unwrap();
    mil::run::train(&data, &o, &cut, |_| {}).unwrap();
    // A run stopped during its last fold: that fold's result and the final results never written.
    std::fs::remove_file(cut.join("fold_2.json")).unwrap();
    std::fs::remove_file(cut.join("mil_results.json")).unwrap();
    let mut trained = Vec::new();
    mil::run::train(&data, &o, &cut, |p| {
        if let mil::run::Progress::Fold(r) = p {
            trained.push(r.fold)
        }
    })
    .unwrap();
    assert_eq!(trained, [2], "only the unfinished fold trains again");
    let left: Vec<_> = std::fs::read_dir(&whole)
        .unwrap()
        .flatten()
        .filter(|e| e.path().to_string_lossy().contains("checkpoint"))
        .collect();
    assert!(left.is_empty(), "a finished run keeps no epoch checkpoints: {left:?}");
    // Each fold's losses by epoch in a TensorBoard event file of its own.
    for k in 0..3 {
        let dir = whole.join(format!("tensorboard/fold_{k}"));
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "{}", dir.display());
        let bytes = std::fs::read(files[0].path()).unwrap();
        let has = |tag: &[u8]| bytes.windows(tag.len()).filter(|w| *w == tag).count();
        assert_eq!((has(b"train/loss"), has(b"val/loss")), (2, 2), "two epochs of fold {k}");
    }
    let read = |d: &Path| std::fs::read_to_string(d.join("mil_results.json")).unwrap();
    assert_eq!(read(&cut), read(&whole));
    // Other settings into the same folder are refused, naming them.
    let e = mil::run::train(&data, &MilOptions { epochs: 3, ..o.clone() }, &cut, |_| {}).unwrap_err().to_string();
    assert!(e.contains("mil_settings.json") && e.contains("epochs"), "{e}");
    // Another optimizer and a cosine schedule train otherwise and are recorded; the defaults
    // record neither, so runs from before the choice existed still resume.
    let cosine = dir.path().join("cosine");
    let o2 = MilOptions { optim: Optim::AdamW, schedule: LrSchedule::Cosine, warmup_epochs: 1, ..o.clone() };
    mil::run::train(&data, &o2, &cosine, |_| {}).unwrap();
    let settings = |d: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join("mil_settings.json")).unwrap()).unwrap()
    };
    let (s2, s1) = (settings(&cosine), settings(&whole));
    assert_eq!((&s2["optim"], &s2["schedule"], &s2["warmup_epochs"]), (&"adamw".into(), &"cosine".into(), &1.into()));
    assert!(s1.get("optim").is_none() && s1.get("schedule").is_none(), "{s1}");
    assert_ne!(read(&cosine), read(&whole), "the optimizer and schedule change the result");
}

/// Keeps finished folds in memory and checkpoints in a folder; stops the run after a given epoch
/// of a given fold, as a killed process would stop.
struct Interrupted {
    dir: PathBuf,
    finished: Vec<FoldResult>,
    stop_after: Option<(usize, usize)>,
    /// (fold, epoch, validation loss) of every epoch trained.
    trained: Vec<(usize, usize, f64)>,
}

impl FoldStore for Interrupted {
    fn finished(&self, k: usize) -> Option<FoldResult> {
        self.finished.iter().find(|r| r.fold == k).cloned()
    }
    fn checkpoint(&self, k: usize) -> Option<PathBuf> {
        Some(self.dir.join(format!("fold_{k}.checkpoint.safetensors")))
    }
    fn epoch_done(&mut self, k: usize, epoch: usize, losses: EpochLosses) -> Result<(), patchtcga_engine::LearnError> {
        self.trained.push((k, epoch, losses.val));
        match self.stop_after {
            Some(at) if at == (k, epoch) => Err(patchtcga_engine::LearnError::Config("stopped".into())),
            _ => Ok(()),
        }
    }
    fn finish(&mut self, r: &FoldResult, _: &nn::VarStore) -> Result<(), patchtcga_engine::LearnError> {
        self.finished.push(r.clone());
        Ok(())
    }
}

#[test]
fn a_fold_cut_between_epochs_resumes_from_its_checkpoint_to_the_uninterrupted_result() {
    let (_turn, dir, data) = synthetic_task();
    for arch in [MilArch::Abmil, MilArch::ClamSb] {
        let o = MilOptions { arch, folds: 3, epochs: 3, ..options() };
        let store = |name: &str, stop_after| {
            let dir = dir.path().join(format!("{name}_{arch}"));
            std::fs::create_dir_all(&dir).unwrap();
            Interrupted { dir, finished: Vec::new(), stop_after, trained: Vec::new() }
        };
        let mut whole = store("whole", None);
        let uninterrupted = mil::cross_validate(&data, &o, &mut whole).unwrap();
        let mut cut = store("cut", Some((1, 2)));
        let e = mil::cross_validate(&data, &o, &mut cut).unwrap_err();
        assert_eq!(e.to_string(), "stopped");
        assert_eq!(cut.finished.len(), 1, "fold 0 finished, fold 1 stopped after its epoch 2");
        assert!(cut.dir.join("fold_1.checkpoint.safetensors").is_file());
        // A damaged checkpoint is refused, named, with what to do.
        let file = cut.dir.join("fold_1.checkpoint.safetensors");
        let good = std::fs::read(&file).unwrap();
        std::fs::write(&file, &good[..good.len() / 2]).unwrap();
        cut.stop_after = None;
        let e = mil::cross_validate(&data, &o, &mut cut).unwrap_err().to_string();
        assert!(e.contains("fold_1.checkpoint.safetensors") && e.contains("delete it"), "{e}");
        std::fs::write(&file, good).unwrap();
        cut.stop_after = None;
        cut.trained.clear();
        let resumed = mil::cross_validate(&data, &o, &mut cut).unwrap();
        // Fold 1 goes on from its epoch 3, which ends where the uninterrupted one's did (the
        // network, the optimizer's moments and the epoch's randomness restored).
        assert_eq!(cut.trained, whole.trained[5..], "{arch}: the epochs trained after the cut");
        assert_eq!(
            serde_json::to_string(&resumed).unwrap(),
            serde_json::to_string(&uninterrupted).unwrap(),
            "{arch}: the resumed run ends as the uninterrupted one"
        );
    }
}

#[test]
fn patience_stops_a_fold_when_validation_stops_improving() {
    let (_turn, dir, data) = synthetic_task();
    let o = MilOptions { folds: 3, epochs: 20, patience: Some(1), ..options() };
    let mut store =
        Interrupted { dir: dir.path().to_path_buf(), finished: Vec::new(), stop_after: None, trained: Vec::new() };
    let cv = mil::cross_validate(&data, &o, &mut store).unwrap();
    for f in &cv.folds {
        let epochs: Vec<usize> = store.trained.iter().filter(|t| t.0 == f.fold).map(|t| t.1).collect();
        let last = *epochs.last().unwrap();
        assert_eq!(epochs, (1..=last).collect::<Vec<_>>());
        assert!(
            last == 20 || last == f.selected_epoch + 1,
            "fold {}: stopped after {last}, best {}",
            f.fold,
            f.selected_epoch
        );
    }
    assert!(
        cv.folds.iter().any(|f| store.trained.iter().filter(|t| t.0 == f.fold).count() < 20),
        "a fold stops early: {:?}",
        store.trained
    );
}
