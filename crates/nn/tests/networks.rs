//! `patchtcga pretrain` and `patchtcga embed` on a dataset tiled from the bundled slide, and the
//! other network commands, through `patchtcga` as users run them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use patchtcga_testkit::sample_slide;

/// `patchtcga`, the data binary (package patchtcga-cli) beside `patchtcga-nn`, which hands the
/// network commands to it as users run them.
fn patchtcga_bin() -> PathBuf {
    let thin = Path::new(env!("CARGO_BIN_EXE_patchtcga-nn")).with_file_name("patchtcga");
    assert!(
        thin.is_file(),
        "{} is not built: cargo build -p patchtcga-cli (cargo test --workspace builds it)",
        thin.display()
    );
    thin
}

fn patchtcga() -> Command {
    Command::new(patchtcga_bin())
}

/// A PTCGA200 layout from the bundled slide listed as three `lung` and three `skin` slides,
/// with a one-trial split (one slide per organ each for val and test).
fn dataset(dir: &Path) -> PathBuf {
    let csv = dir.join("slides.csv");
    let mut rows = String::from("slide,organ,id\n");
    for organ in ["lung", "skin"] {
        for i in 0..3 {
            rows += &format!("{},{organ},{organ}{i}\n", sample_slide().display());
        }
    }
    std::fs::write(&csv, rows).unwrap();
    let data = dir.join("PTCGA200");
    patchtcga()
        .args([
            "build",
            "ptcga200",
            "--size",
            "64",
            "--field-um",
            "25",
            "--per-slide",
            "8",
            "--sampling",
            "random",
            "--slides",
        ])
        .arg(&csv)
        .arg("--out")
        .arg(&data)
        .assert()
        .success();
    patchtcga().arg("split").arg(&data).args(["--trials", "1"]).assert().success();
    data
}

/// `patchtcga embed` of `images` with a ResNet18 checkpoint at 32 px into `feats`.
fn embed_resnet18(weights: &Path, images: &Path, feats: &Path) -> std::process::Output {
    patchtcga()
        .args(["embed", "--arch", "resnet18", "--image-size", "32", "--weights"])
        .arg(weights)
        .arg("--images")
        .arg(images)
        .arg("--out")
        .arg(feats)
        .output()
        .unwrap()
}

fn config(dir: &Path, data: &Path) -> PathBuf {
    let p = dir.join("run.toml");
    let text = format!(
        "model_name = \"resnet18\"\nimage_size = 32\nval_image_size = 32\nbatch_size = 4\nbase_batch_size = 4\n\
         num_workers = 2\nlr = 1e-3\nepochs = 6\nwarmup_epochs = 0.5\nsplit = \"3fold_dict_idx_filenames.pickle\"\n\
         dataset_dir = {:?}\nroot_dir = {:?}\n",
        data.display().to_string(),
        dir.join("runs").display().to_string()
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn pretrain_killed_then_resumed_ends_like_an_uninterrupted_run_and_feeds_embed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let cfg = config(dir.path(), &data);
    let whole =
        patchtcga().args(["pretrain", "--config"]).arg(&cfg).args(["--set", "name=\"whole\""]).output().unwrap();
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
    let stdout = String::from_utf8_lossy(&whole.stdout);
    assert!(stdout.contains("test_accuracy") && stdout.contains("run folder"), "{stdout}");

    // Kill -9 once the first epoch's checkpoint is on disk, then resume.
    let bin = patchtcga_bin();
    let mut child = std::process::Command::new(&bin)
        .args(["pretrain", "--config"])
        .arg(&cfg)
        .args(["--set", "name=\"killed\""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = dir.path().join("runs/killed/checkpoints/epoch_0001/position.json");
    let start = Instant::now();
    while !first.exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.exists(), "no checkpoint after the first epoch");
    assert!(!dir.path().join("runs/killed/model.safetensors").exists(), "killed before the end");
    let resumed = patchtcga()
        .args(["pretrain", "--config"])
        .arg(&cfg)
        .args(["--set", "name=\"killed\"", "--resume"])
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming from"));
    let a = std::fs::read(dir.path().join("runs/whole/model.safetensors")).unwrap();
    let b = std::fs::read(dir.path().join("runs/killed/model.safetensors")).unwrap();
    assert!(a == b, "the resumed run's weights differ from the uninterrupted run's");
    for f in ["metrics.jsonl", "config.toml", "plots/loss.png", "plots/lr.png", "plots/accuracy.png"] {
        assert!(dir.path().join("runs/killed").join(f).is_file(), "{f}");
    }

    // The trained checkpoint (torchvision names) feeds embed.
    let feats = dir.path().join("feats.npy");
    let out = embed_resnet18(&dir.path().join("runs/whole/model.safetensors"), &data, &feats);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("48 × 512 features"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let f = tch::Tensor::read_npy(&feats).unwrap();
    assert_eq!(f.size(), [48, 512]);
    assert!(f.isfinite().all().int64_value(&[]) == 1 && f.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
    let csv = std::fs::read_to_string(feats.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), 49);
    assert!(csv.lines().nth(1).unwrap().starts_with("0,lung/"), "{csv}");

    // And exports for PyTorch with torchvision names, batch-norm counters included, no head.
    let pth = dir.path().join("backbone.pth");
    let out = patchtcga()
        .args(["export", "--arch", "resnet18", "--weights"])
        .arg(dir.path().join("runs/whole/model.safetensors"))
        .arg("--out")
        .arg(&pth)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<String> = patchtcga_model::read_tensors(&pth).unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"layer4.1.bn2.num_batches_tracked".to_owned()));
    assert!(names.contains(&"conv1.weight".to_owned()) && !names.iter().any(|n| n.starts_with("fc.")));
}

#[test]
fn bad_network_input_gets_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.pth");
    std::fs::write(&weights, b"not a checkpoint").unwrap();
    std::fs::create_dir_all(dir.path().join("imgs")).unwrap();
    image::RgbImage::new(8, 8).save(dir.path().join("imgs/a.png")).unwrap();
    let out = patchtcga()
        .args(["embed", "--arch", "resnet18", "--weights"])
        .arg(&weights)
        .arg("--images")
        .arg(dir.path().join("imgs"))
        .arg("--out")
        .arg(dir.path().join("f.npy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("w.pth") && err.contains("neither a PyTorch"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = patchtcga()
        .args(["embed", "--arch", "incv4", "--weights", "x", "--images", "y", "--out", "z"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("incv4") && err.contains("incv3, eff-b3"), "{err}");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "model_name = \"resnet18\"\nlearning_rate = 0.1\n").unwrap();
    let out = patchtcga().args(["pretrain", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.toml") && err.contains("learning_rate"), "{err}");
    // NCCL for a CPU run is refused before any process starts.
    std::fs::write(&cfg, "device = \"cpu\"\ndist_backend = \"nccl\"\n").unwrap();
    let out = patchtcga().args(["pretrain", "--nproc-per-node", "2", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("dist_backend nccl needs a CUDA device"), "{err}");
    assert!(!err.contains("rank 0"), "refused before starting ranks: {err}");
}

#[test]
fn dino_and_mae_presets_train_through_the_cli_and_feed_embed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let small = [
        "device=\"cpu\"",
        "enable_autocast=false",
        "model_name=\"vit-s16\"",
        "image_size=64",
        "val_image_size=64",
        "batch_size=4",
        "num_workers=2",
        "epochs=1",
        "warmup_epochs=0",
        "split=\"3fold_dict_idx_filenames.pickle\"",
    ];
    let heads: [(&str, &[&str]); 2] = [
        ("dino_vit_s16", &["local_crops=2", "out_dim=64", "proj_hidden_dim=32", "proj_dim=16"]),
        ("mae_vit_b16", &["decoder_embed_dim=32", "decoder_depth=1", "decoder_num_heads=2"]),
    ];
    for (preset, extra) in heads {
        let mut cmd = patchtcga();
        cmd.arg("pretrain").arg("--config").arg(root.join(format!("{preset}_ptcga200.toml")));
        for s in small.iter().chain(extra) {
            cmd.args(["--set", s]);
        }
        cmd.arg("--set").arg(format!("dataset_dir={:?}", data.display().to_string()));
        cmd.arg("--set").arg(format!("root_dir={:?}", dir.path().join("runs").display().to_string()));
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{preset}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("val_knn_accuracy"), "{preset}: k-NN monitor reported");
    }

    // DINO's teacher (`target.`) and student, and MAE's encoder, each embed the patches.
    for (run, prefix) in
        [("dino_vit_s16_ptcga200", "target."), ("dino_vit_s16_ptcga200", ""), ("mae_vit_b16_ptcga200", "")]
    {
        let feats = dir.path().join(format!("{run}{prefix}.npy"));
        let mut cmd = patchtcga();
        cmd.args(["embed", "--arch", "vit-s16", "--image-size", "64", "--preprocess", "none", "--weights"])
            .arg(dir.path().join("runs").join(run).join("model.safetensors"))
            .arg("--images")
            .arg(&data)
            .arg("--out")
            .arg(&feats);
        if !prefix.is_empty() {
            cmd.args(["--prefix", prefix]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{run} {prefix}: {}", String::from_utf8_lossy(&out.stderr));
        let f = tch::Tensor::read_npy(&feats).unwrap();
        assert_eq!(f.size(), [48, 384]);
        assert!(f.isfinite().all().int64_value(&[]) == 1);
    }
}

/// A PCam200 layout of 24 crops (96 px) of the bundled slide's patches, tumour ones
/// colour-inverted.
fn pcam200(dir: &Path) -> PathBuf {
    let src =
        image::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("../slide/tests/golden/cmu1_0.39_512_800_800.png"))
            .unwrap()
            .to_rgb8();
    let data = dir.join("PCam200");
    for (i, (split, class)) in
        ["train", "val", "test"].iter().flat_map(|s| ["normal", "tumor"].map(|c| (*s, c))).cycle().take(24).enumerate()
    {
        let mut crop = image::imageops::crop_imm(&src, (i as u32 * 37) % 400, (i as u32 * 61) % 400, 96, 96).to_image();
        if class == "tumor" {
            image::imageops::invert(&mut crop);
        }
        let p = data.join(split).join(class).join("case0").join(format!("p{i}.jpg"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        crop.save(&p).unwrap();
    }
    data
}

// Long on purpose: one fine-tuning run (minutes of training) feeds the checks that follow it:
// its reports, a bad --init, embedding and probing its backbone, the report page.
#[test]
fn finetune_from_the_preset_reports_val_and_test() {
    let dir = tempfile::tempdir().unwrap();
    let data = pcam200(dir.path());
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/pcam200_resnet50.toml");
    let run_with = |init: &str, extra: &[&str]| {
        let mut cmd = patchtcga();
        cmd.arg("finetune")
            .arg("--config")
            .arg(&preset)
            .args(["--init", init])
            .args(["--set", "model_name=\"resnet18\"", "--set", "image_size=32", "--set", "val_image_size=32"])
            .args([
                "--set",
                "batch_size=4",
                "--set",
                "epochs=2",
                "--set",
                "device=\"cpu\"",
                "--set",
                "enable_autocast=false",
            ])
            .args(["--set", "num_workers=2"])
            .arg("--set")
            .arg(format!("dataset_dir={:?}", data.display().to_string()))
            .arg("--set")
            .arg(format!("root_dir={:?}", dir.path().join("runs").display().to_string()))
            .args(["--set", "dropout_p=0"]);
        cmd.args(extra).output().unwrap()
    };
    let run = |init: &str| run_with(init, &[]);
    let out = run("none");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("selected epoch") && text.contains("test: accuracy") && text.contains("95 % CI"), "{text}");
    assert!(dir.path().join("runs/pcam200_resnet50/results.json").exists());

    // Two processes of batch 2: the same training as one of batch 4, and the metrics of the
    // whole val and test sets (each rank evaluated half of them).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let two = ["--set", "batch_size=2", "--set", "name=\"pcam_two\"", "--nproc-per-node", "2", "--master-port", &port];
    let out = run_with("none", &two);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join("runs").join(name).join("results.json")).unwrap())
            .unwrap()
    };
    let (one, two) = (results("pcam200_resnet50"), results("pcam_two"));
    assert_eq!(one["selected_epoch"], two["selected_epoch"]);
    for set in ["val", "test"] {
        assert_eq!(two[set]["samples"], 8, "{set}: every image once");
        assert_eq!(one[set]["confusion"], two[set]["confusion"], "{set}");
        let auc = |r: &serde_json::Value| r[set]["roc_auc"].as_f64().unwrap();
        assert!((auc(&one) - auc(&two)).abs() < 1e-6, "{set}: ROC-AUC {} against {}", auc(&one), auc(&two));
    }
    let d = max_difference(
        &weights(&dir.path().join("runs/pcam200_resnet50")),
        &weights(&dir.path().join("runs/pcam_two")),
    );
    assert!(d < 1e-5, "fine-tuned weights differ by {d}");

    let out = run("missing.pth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.pth") && err.contains("no such file"), "{err}");

    // Frozen-feature evaluation of the fine-tuned backbone: embed the splits once, then probe.
    let feats = dir.path().join("feats.npy");
    let out = embed_resnet18(&dir.path().join("runs/pcam200_resnet50/model.safetensors"), &data, &feats);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = dir.path().join("probe.json");
    let out = patchtcga()
        .args(["probe", "--k", "3", "--dataset"])
        .arg(&data)
        .arg("--features")
        .arg(&feats)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| linear | test | 8 |") && text.contains("| knn | val | 8 |"), "{text}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["train"], 8);
    assert_eq!(r["knn"]["test"]["confusion"]["counts"].as_array().unwrap().len(), 2);

    // The report of the runs folder: one row for the fine-tuning run, its pictures embedded.
    let page = dir.path().join("report.html");
    let out = patchtcga().arg("report").arg(dir.path().join("runs")).arg("--out").arg(&page).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<td>pcam200_resnet50</td>") || html.contains(">pcam200_resnet50</a>"), "{html}");
    assert!(html.contains("<td>fine-tuning</td>") && html.matches("data:image/png;base64,").count() >= 3);
    let out = patchtcga().arg("report").arg(&data).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a run folder"));

    // Features of another dataset are refused, naming the missing image.
    std::fs::write(feats.with_extension("csv"), "row,image\n0,elsewhere.jpg\n").unwrap();
    let out = patchtcga().args(["probe", "--dataset"]).arg(&data).arg("--features").arg(&feats).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rows for 24 feature vectors"), "{err}");
}

// Long on purpose: one trained classifier and one segmentation network, slid over the slide in
// each map mode (tiles, overlapping windows, class maps).
#[test]
fn infer_maps_a_classifier_over_the_slide_tissue() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("classifier.safetensors");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _m = patchtcga_model::Classifier::new(&vs.root(), patchtcga_model::Arch::ResNet18.spec(32), 2, 0.0);
    vs.save(&weights).unwrap();
    let out_png = dir.path().join("heat.png");
    let infer = |w: &Path, extra: &[&str]| {
        patchtcga()
            .args(["infer", "--arch", "resnet18", "--image-size", "32", "--field-um", "100", "--weights"])
            .arg(w)
            .arg("--slide")
            .arg(sample_slide())
            .arg("--out")
            .arg(&out_png)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = infer(&weights, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The raw map tiles the slide: 100 µm tiles over its level-0 extent, NaN off tissue.
    let slide = patchtcga_slide::Slide::open(sample_slide(), &patchtcga_slide::SlideOptions::default()).unwrap();
    let (w, h) = slide.dimensions();
    let tile_px = 100.0 / slide.mpp().x;
    let map = tch::Tensor::read_npy(dir.path().join("heat.npy")).unwrap();
    assert_eq!(map.size(), [(h as f64 / tile_px) as i64, (w as f64 / tile_px) as i64]);
    let on_tissue = map.isfinite().sum(tch::Kind::Int64).int64_value(&[]);
    assert!(on_tissue > 0 && on_tissue < map.numel() as i64, "{on_tissue} of {} tiles on tissue", map.numel());
    let finite = map.masked_select(&map.isfinite());
    assert!(finite.min().double_value(&[]) >= 0.0 && finite.max().double_value(&[]) <= 1.0);
    // The same tiles for QuPath: one detection per tile on tissue, its probability a measurement.
    let tiles = geojson_features(&dir.path().join("heat.geojson"));
    assert_eq!(tiles.len() as i64, on_tissue);
    let p = tiles[0]["properties"]["measurements"]["probability of class 1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{p}");
    // The picture is the thumbnail (same aspect as the slide) plus a colour bar.
    let img = image::open(&out_png).unwrap();
    let thumb_h = img.height() - 64;
    assert!(((img.width() as f64 / thumb_h as f64) - w as f64 / h as f64).abs() < 0.01);

    // A segmentation network: a class per cell of an 8×8 grid over each tile.
    let seg = dir.path().join("segmenter.safetensors");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _s = patchtcga_model::SegNet::new(
        &vs.root(),
        patchtcga_model::Arch::ResNet18.spec(32),
        patchtcga_model::SegHead::Fcn,
        6,
    )
    .unwrap();
    vs.save(&seg).unwrap();
    let out = infer(&seg, &["--seg-head", "fcn"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let classes = tch::Tensor::read_npy(dir.path().join("heat.npy")).unwrap();
    assert_eq!(classes.size(), [map.size()[0] * 8, map.size()[1] * 8]);
    let c = classes.masked_select(&classes.isfinite());
    assert!(c.numel() as i64 == 64 * on_tissue, "the same tiles, 64 cells each");
    assert!((&c - c.round()).abs().max().double_value(&[]) == 0.0 && c.max().double_value(&[]) < 6.0);

    // Windows half a tile apart: cells half a tile wide, each the mean of the windows over it.
    let out = infer(&weights, &["--overlap", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let half = tch::Tensor::read_npy(dir.path().join("heat.npy")).unwrap();
    let (r, c) = (map.size()[0], map.size()[1]);
    let (hr, hc) = (half.size()[0], half.size()[1]);
    assert!((2 * r..=2 * r + 1).contains(&hr) && (2 * c..=2 * c + 1).contains(&hc), "{:?}", half.size());
    let finite = half.masked_select(&half.isfinite());
    assert!(finite.numel() as i64 > 2 * on_tissue && finite.max().double_value(&[]) <= 1.0);
    // The top-left cell lies under one window only, the same as the first tile without overlap.
    let (a, b) = (map.double_value(&[0, 0]), half.double_value(&[0, 0]));
    assert!(a.is_nan() && b.is_nan() || (a - b).abs() < 1e-6, "{a} against {b}");
    // A segmentation map with overlap: 8×8 cells a window, windows 4 cells apart.
    let out = infer(&seg, &["--seg-head", "fcn", "--overlap", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let classes = tch::Tensor::read_npy(dir.path().join("heat.npy")).unwrap();
    assert_eq!(classes.size(), [4 * hr, 4 * hc]);
    let out = infer(&seg, &["--seg-head", "fcn", "--overlap", "3"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs 1, 2, 4 or 8"));

    let out = infer(&weights, &["--class", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has 2 classes"));
    let backbone = dir.path().join("backbone.safetensors");
    let out = patchtcga()
        .args(["export", "--arch", "resnet18", "--weights"])
        .arg(&weights)
        .arg("--out")
        .arg(&backbone)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = infer(&backbone, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no classification head"), "{err}");
}

/// The weights `name` of a checkpoint folder.
fn weights(dir: &Path) -> std::collections::HashMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap().into_iter().collect()
}

fn max_difference(
    a: &std::collections::HashMap<String, tch::Tensor>,
    b: &std::collections::HashMap<String, tch::Tensor>,
) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().map(|(n, t)| (t - &b[n]).abs().max().double_value(&[])).fold(0.0, f64::max)
}

/// `patchtcga pretrain` of the test config with `sets`, over `procs` local processes.
fn pretrain_over(dir: &Path, data: &Path, port: u16, procs: usize, sets: &[String], resume: bool) {
    let mut cmd = patchtcga();
    cmd.args(["pretrain", "--config"]).arg(config(dir, data));
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.args(["--nproc-per-node", &procs.to_string(), "--master-port", &port.to_string()]);
    if resume {
        cmd.arg("--resume");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{sets:?}: {}", String::from_utf8_lossy(&out.stderr));
}

// Long on purpose: the one-process run is the reference for the two-process run and its resume.
#[test]
fn two_processes_of_batch_b_train_like_one_of_batch_2b_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sets = |name: &str, batch: usize, stop: usize, extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            format!("name={name:?}"),
            "dropout_p=0".into(),
            format!("batch_size={batch}"),
            "base_batch_size=8".into(),
            "optim=\"sgd\"".into(),
            "lr=0.01".into(),
            "warmup_epochs=0".into(),
            "split=\"\"".into(),
            format!("stop_num_updates={stop}"),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let ckpt = |name: &str, u: usize| dir.path().join("runs").join(name).join(format!("checkpoints/update_{u:07}"));
    // The supervised recipe on a ViT and on a ResNet (synchronised batch norm), SimCLR (global
    // negatives) and BYOL (synchronised batch norm in the backbone, projector and predictor;
    // the target's too).
    let byol = ["self_supervised=\"byol\"", "proj_hidden_dim=32", "proj_dim=16", "pred_hidden_dim=32"];
    // SimCLR also runs its k-NN monitor on the validation slides at update 3, each rank on half.
    let simclr = [
        "self_supervised=\"simclr\"",
        "proj_hidden_dim=32",
        "proj_dim=16",
        "split=\"3fold_dict_idx_filenames.pickle\"",
        "val_every=3",
    ];
    let cases: [(&str, Vec<&str>); 4] = [
        ("vit", vec!["model_name=\"vit-s16\""]),
        ("resnet", vec![]),
        ("simclr", simclr.to_vec()),
        ("byol", byol.to_vec()),
    ];
    for (case, extra) in &cases {
        let (one, two) = (format!("{case}_one"), format!("{case}_two"));
        pretrain_over(dir.path(), &data, port, 1, &sets(&one, 8, 3, extra), false);
        pretrain_over(dir.path(), &data, port, 2, &sets(&two, 4, 3, extra), false);
        let d = max_difference(&weights(&ckpt(&one, 3)), &weights(&ckpt(&two, 3)));
        assert!(d < 1e-5, "{case}: 2 × batch 4 against 1 × batch 8 after 3 updates: max difference {d}");
    }
    // Accumulation: 2 micro-batches per update, the all-reduce armed on the second only.
    pretrain_over(dir.path(), &data, port, 1, &sets("accum_one", 4, 3, &["num_accum=2"]), false);
    pretrain_over(dir.path(), &data, port, 2, &sets("accum_two", 2, 3, &["num_accum=2"]), false);
    let d = max_difference(&weights(&ckpt("accum_one", 3)), &weights(&ckpt("accum_two", 3)));
    assert!(d < 1e-5, "accumulated: 2 × batch 2 against 1 × batch 4, 2 micro-batches each: {d}");
    let knn = |name: &str| -> Vec<f64> {
        let log = std::fs::read_to_string(dir.path().join("runs").join(name).join("metrics.jsonl")).unwrap();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["val_knn_accuracy"].as_f64())
            .collect()
    };
    assert!(!knn("simclr_one").is_empty());
    assert_eq!(knn("simclr_one"), knn("simclr_two"), "the monitor sees the whole validation set");
    // Without synchronised batch norm each rank normalises its own half: not the same training.
    let mut per_rank = byol.to_vec();
    per_rank.push("sync_batch_norm=false");
    pretrain_over(dir.path(), &data, port, 2, &sets("byol_local", 4, 3, &per_rank), false);
    let d = max_difference(&weights(&ckpt("byol_one", 3)), &weights(&ckpt("byol_local", 3)));
    assert!(d > 1e-4, "per-rank batch norm should differ, by {d}");
    // Rank 0 alone wrote the log: one line per update. The first update all-reduces after its
    // backward pass, the others during it, in buckets.
    let log = std::fs::read_to_string(dir.path().join("runs/vit_two/metrics.jsonl")).unwrap();
    let buckets: Vec<u64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["allreduce_buckets"].as_u64())
        .collect();
    assert_eq!(buckets.len(), 3);
    assert!(buckets[0] == 0 && buckets[1] > 1 && buckets[2] == buckets[1], "{buckets:?}");

    // Stopped at 2 and resumed to 3 by both ranks: the same weights as straight through.
    pretrain_over(dir.path(), &data, port, 2, &sets("halves", 4, 2, &cases[3].1), false);
    pretrain_over(dir.path(), &data, port, 2, &sets("halves", 4, 3, &cases[3].1), true);
    let d = max_difference(&weights(&ckpt("halves", 3)), &weights(&ckpt("byol_two", 3)));
    assert!(d < 1e-6, "resumed 2-process run differs by {d}");

    // MoCo v2 over two processes: both ranks' keys join the queue at every step.
    let moco = ["self_supervised=\"mocov2\"", "queue_size=32", "proj_hidden_dim=32", "proj_dim=16"];
    pretrain_over(dir.path(), &data, port, 2, &sets("moco", 4, 3, &moco), false);
    let w = weights(&ckpt("moco", 3));
    assert_eq!(w["target.queue_ptr"].double_value(&[0]), 24.0, "3 steps × 2 ranks × 4 keys");
}

/// The children of process `parent` whose environment has `var`.
fn children_with(parent: u32, var: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid …: the fields after the last ')'.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            ppid == Some(parent) && env.split(|&b| b == 0).any(|kv| kv == var.as_bytes())
        })
        .collect()
}

#[test]
fn a_rank_lost_at_the_start_stops_the_whole_run_long_before_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let run = std::process::Command::new(patchtcga_bin())
        .args(["pretrain", "--config"])
        .arg(config(dir.path(), &data))
        .args(["--nproc-per-node", "2", "--master-port", &port.to_string(), "--dist-timeout", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Rank 1 dies as soon as it exists: before the rendezvous, rank 0 would wait for it 600 s.
    let rank1 = loop {
        if let Some(&pid) = children_with(run.id(), "RANK=1").first() {
            break pid;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "rank 1 never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    std::process::Command::new("sh").args(["-c", &format!("kill -9 {rank1}")]).status().unwrap();
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("distributed run failed: rank 1 (signal: 9"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}: {err}", start.elapsed());
}

/// A randomly initialised ResNet18 backbone for 64 px inputs, saved as `dir/resnet18.safetensors`.
fn resnet18_backbone(dir: &Path) -> PathBuf {
    let weights = dir.join("resnet18.safetensors");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _b = patchtcga_model::Backbone::new(&vs.root(), patchtcga_model::Arch::ResNet18.spec(64));
    vs.save(&weights).unwrap();
    weights
}

// Long on purpose: one embedding of the slide list, then its file layout, a re-run's resume and
// two processes sharing the list checked against it.
#[test]
fn embed_slides_writes_one_clam_layout_h5_per_slide_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let weights = resnet18_backbone(dir.path());
    let csv = dir.path().join("slides.csv");
    std::fs::write(&csv, format!("slide,id\n{},cmu1\nmissing.svs,gone\n", sample_slide().display())).unwrap();
    let feats = dir.path().join("feats");
    let embed = || {
        patchtcga()
            .args(["embed", "--arch", "resnet18", "--image-size", "64", "--mpp", "1.0", "--weights"])
            .arg(&weights)
            .arg("--slides")
            .arg(&csv)
            .arg("--out")
            .arg(&feats)
            .output()
            .unwrap()
    };
    let out = embed();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !out.status.success() && stderr.contains("missing.svs") && stderr.contains("1 of 2 slide(s) failed"),
        "{stderr}"
    );
    assert!(stdout.contains("1 embedded, 0 already done, 1 failed"), "{stdout}");
    assert!(!feats.join("gone.h5").exists(), "nothing half-written for the failed slide");

    let h5 = hdf5_metno::File::open(feats.join("cmu1.h5")).unwrap();
    let f = h5.dataset("features").unwrap();
    let c = h5.dataset("coords").unwrap();
    let (n, d) = (f.shape()[0], f.shape()[1]);
    assert!(n > 20 && d == 512, "{n} × {d}");
    assert_eq!(geojson_features(&feats.join("cmu1.geojson")).len(), n, "the patch grid for QuPath");
    assert_eq!(c.shape(), [n, 2]);
    let coords: Vec<i64> = c.read_raw().unwrap();
    // 64 px at 1 µm/px on a 0.499 µm/px scan: 128.3 level-0 px cells inside the 2220 × 2967 slide.
    for xy in coords.chunks(2) {
        assert!(xy[0] >= 0 && xy[0] + 128 <= 2220 && xy[1] >= 0 && xy[1] + 128 <= 2967, "{xy:?}");
    }
    let x: Vec<f32> = f.read_raw().unwrap();
    assert!(x.iter().all(|v| v.is_finite()) && x.iter().any(|&v| v != 0.0));
    let attr_i = |o: &hdf5_metno::Location, k: &str| o.attr(k).unwrap().read_scalar::<i64>().unwrap();
    assert_eq!(attr_i(&c, "patch_size"), 64);
    // TRIDENT's level-0 footprint (TITAN's and GigaPath's grid cell): 64 × 1.0 / 0.499 px.
    assert_eq!(attr_i(&c, "patch_size_level0"), 128);
    assert_eq!(attr_i(&h5, "patch_size"), 64);
    assert_eq!(h5.attr("mpp").unwrap().read_scalar::<f64>().unwrap(), 1.0);
    let text = |k: &str| h5.attr(k).unwrap().read_scalar::<hdf5_metno::types::VarLenUnicode>().unwrap().to_string();
    assert_eq!(text("model"), "resnet18");
    let md5 = patchtcga_dataset_md5(&weights);
    assert_eq!(text("weights_md5"), md5);
    assert!(text("preprocessing").contains("imagenet"));

    // A re-run skips the finished slide and retries the failed one only.
    let before = std::fs::metadata(feats.join("cmu1.h5")).unwrap().modified().unwrap();
    let again = embed();
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 embedded, 1 already done, 1 failed"));
    assert_eq!(std::fs::metadata(feats.join("cmu1.h5")).unwrap().modified().unwrap(), before);

    // Two processes share a list of two slides (one each), writing float16 features: the
    // float32 values, rounded.
    let two = dir.path().join("two.csv");
    std::fs::write(&two, format!("slide,id\n{0},a\n{0},b\n", sample_slide().display())).unwrap();
    let feats16 = dir.path().join("feats16");
    let out = patchtcga()
        .args(["embed", "--arch", "resnet18", "--image-size", "64", "--mpp", "1.0", "--float16", "--weights"])
        .arg(&weights)
        .arg("--slides")
        .arg(&two)
        .arg("--out")
        .arg(&feats16)
        .args(["--nproc-per-node", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("2 rank(s) done"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("1 embedded, 0 already done, 0 failed").count(), 2, "{stdout}");
    for id in ["a", "b"] {
        let h = hdf5_metno::File::open(feats16.join(format!("{id}.h5"))).unwrap();
        let half: Vec<half::f16> = h.dataset("features").unwrap().read_raw().unwrap();
        assert_eq!(half.len(), x.len());
        // float16 keeps 11 significant bits (relative rounding ≤ 2⁻¹¹); the ranks' other thread
        // counts may move the float32 values in their last bits.
        let off = half.iter().zip(&x).filter(|(h, &f)| (h.to_f32() - f).abs() > 1e-3 * f.abs() + 1e-4).count();
        assert_eq!(off, 0, "{id}: {off} features are not the float32 ones rounded");
    }
}

/// MD5 of a file, as `md5sum` prints it.
/// A slide's `features` (as float32) and `coords`.
/// The features of a GeoJSON FeatureCollection, every one a QuPath detection.
fn geojson_features(path: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let features = v["features"].as_array().unwrap().clone();
    assert!(features.iter().all(|f| f["properties"]["objectType"] == "detection"), "{}", path.display());
    features
}

fn h5_bag(path: &Path) -> (Vec<f32>, Vec<i64>) {
    let h = hdf5_metno::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (h.dataset("features").unwrap().read_raw().unwrap(), h.dataset("coords").unwrap().read_raw().unwrap())
}

/// Batches run across slide boundaries (a batch size dividing no slide's patches), a coordinates
/// file stands in for the tissue grid, and a run killed mid-list then re-run writes exactly the
/// features an uninterrupted run does.
// Long on purpose: an uninterrupted run is the reference for both the coordinates file and the kill.
#[test]
fn embed_slides_across_slide_boundaries_from_coords_and_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let weights = resnet18_backbone(dir.path());
    let list = |name: &str, ids: &[&str]| {
        let csv = dir.path().join(name);
        let rows: String = ids.iter().map(|id| format!("{},{id}\n", sample_slide().display())).collect();
        std::fs::write(&csv, format!("slide,id\n{rows}")).unwrap();
        csv
    };
    let embed = |csv: &Path, out: &Path, extra: &[&str]| {
        let mut c = std::process::Command::new(patchtcga_bin());
        c.args(["embed", "--arch", "resnet18", "--image-size", "64", "--mpp", "1.0", "--weights"])
            .arg(&weights)
            .arg("--slides")
            .arg(csv)
            .arg("--out")
            .arg(out)
            .args(extra);
        c
    };
    let run = |c: &mut std::process::Command| {
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let one = dir.path().join("one");
    run(&mut embed(&list("one.csv", &["a"]), &one, &["--batch-size", "64"]));
    let (reference, coords) = h5_bag(&one.join("a.h5"));
    let n = coords.len() / 2;
    assert!(n > 20 && !n.is_multiple_of(7), "{n} patches");

    // Batches of 7 over three slides: most batches hold the end of one slide and the start of
    // the next, yet each slide gets its own rows.
    let ids = ["s1", "s2", "s3"];
    let three = dir.path().join("three");
    run(&mut embed(&list("three.csv", &ids), &three, &["--batch-size", "7"]));
    for id in ids {
        let (f, c) = h5_bag(&three.join(format!("{id}.h5")));
        assert_eq!(c, coords, "{id}: the grid");
        let worst = f.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(f.len() == reference.len() && worst < 1e-4, "{id}: features differ by {worst}");
    }

    // A coordinates file (CLAM's patching output, here the first 5 grid patches) replaces the grid.
    let given = dir.path().join("coords");
    std::fs::create_dir(&given).unwrap();
    let h = hdf5_metno::File::create(given.join("a.h5")).unwrap();
    let five = ndarray::Array2::from_shape_vec((5, 2), coords[..10].to_vec()).unwrap();
    h.new_dataset_builder().with_data(&five).create("coords").unwrap();
    drop(h);
    let from_coords = dir.path().join("from_coords");
    run(embed(&list("one.csv", &["a"]), &from_coords, &[]).arg("--coords").arg(&given));
    let (f, c) = h5_bag(&from_coords.join("a.h5"));
    assert_eq!(c, coords[..10]);
    let d = reference.len() / n;
    let worst = f.iter().zip(&reference[..5 * d]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "features from given coordinates differ by {worst}");

    // Killed as soon as its first slide is written, then re-run: the files of an uninterrupted run.
    let many: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let csv = list("many.csv", &many);
    let killed = dir.path().join("killed");
    let mut child =
        embed(&csv, &killed, &["--batch-size", "5"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !killed.join("k0.h5").exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let written = many.iter().filter(|id| killed.join(format!("{id}.h5")).exists()).count();
    assert!((1..many.len()).contains(&written), "killed after {written} of {} slides", many.len());
    run(&mut embed(&csv, &killed, &["--batch-size", "5"]));
    for id in &many {
        let (f, c) = h5_bag(&killed.join(format!("{id}.h5")));
        assert_eq!(c, coords, "{id}");
        let worst = f.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{id}: features differ by {worst} after the kill and re-run");
    }
    let visible: Vec<_> = std::fs::read_dir(&killed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    // Each slide's features and its patch grid for QuPath, nothing half-written.
    let mut want: Vec<String> = many.iter().flat_map(|id| [format!("{id}.h5"), format!("{id}.geojson")]).collect();
    let mut visible = visible;
    want.sort();
    visible.sort();
    assert_eq!(visible, want, "only whole slide files are visible");
}

fn patchtcga_dataset_md5(path: &Path) -> String {
    let out = std::process::Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// `embed --arch dinov2-s14` reads a checkpoint in DINOv2's own names (as the repository publishes
/// it, 518 px position embedding) at another input size; the same file with `--arch dinov2-b14` is
/// refused with one message naming the mismatched tensors.
#[test]
fn a_foundation_preset_embeds_from_its_published_names_and_refuses_another_presets() {
    use patchtcga_model::{reference_names, Arch, Backbone, Foundation};
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("dinov2_vits14_pretrain.safetensors");
    {
        let arch = Arch::Foundation(Foundation::Dinov2S14);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _net = Backbone::new(&vs.root(), arch.spec(224));
        let tensors = reference_names(arch, vs.variables().into_iter().collect());
        assert!(tensors.iter().any(|(n, _)| n == "mask_token"), "DINOv2's names");
        tch::Tensor::write_safetensors(&tensors, &weights).unwrap();
    }
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for i in 0..3u8 {
        image::RgbImage::from_pixel(56, 56, image::Rgb([200, 100 + 20 * i, 180]))
            .save(images.join(format!("p{i}.png")))
            .unwrap();
    }
    let embed = |arch: &str| {
        patchtcga()
            .args(["embed", "--arch", arch, "--preprocess", "none", "--image-size", "56", "--weights"])
            .arg(&weights)
            .arg("--images")
            .arg(&images)
            .arg("--out")
            .arg(dir.path().join(format!("{arch}.npy")))
            .output()
            .unwrap()
    };
    let ok = embed("dinov2-s14");
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(out.contains("3 × 384 features"), "{out}");
    let refused = embed("dinov2-b14");
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("dinov2_vits14_pretrain.safetensors"), "{err}");
    assert!(err.contains("cls_token (checkpoint [1, 1, 384], model [1, 1, 768])"), "{err}");
    assert_eq!(err.trim().lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
    assert!(!dir.path().join("dinov2-b14.npy").exists(), "nothing written");
}

/// The release's `incv3` (trained at 299 px, the least its auxiliary classifier takes; evaluated at
/// 75 px, the least it takes) and
/// `eff-b3` pretrain on PTCGA200 and fine-tune on PCam200 from that run through the CLI.
#[test]
fn the_release_incv3_and_eff_b3_pretrain_and_fine_tune() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let pcam = pcam200(dir.path());
    let runs = dir.path().join("runs");
    let finetune_preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/pcam200_resnet50.toml");
    for (arch, size, val_size) in [("incv3", 299, 75), ("eff-b3", 64, 64)] {
        let sets = |name: &str| {
            [
                format!("model_name={arch:?}"),
                format!("image_size={size}"),
                format!("val_image_size={val_size}"),
                format!("name={name:?}"),
                "batch_size=8".into(),
                "epochs=1".into(),
                "device=\"cpu\"".into(),
                "enable_autocast=false".into(),
                format!("root_dir={:?}", runs.display().to_string()),
            ]
            .into_iter()
            .flat_map(|s| ["--set".to_owned(), s])
            .collect::<Vec<_>>()
        };
        let pre = patchtcga()
            .args(["pretrain", "--config"])
            .arg(config(dir.path(), &data))
            .args(sets(&format!("pre_{arch}")))
            .output()
            .unwrap();
        assert!(pre.status.success(), "{arch}: {}", String::from_utf8_lossy(&pre.stderr));
        let weights = runs.join(format!("pre_{arch}/model.safetensors"));
        assert!(weights.exists(), "{arch}: the pretraining run's weights");
        let fine = patchtcga()
            .args(["finetune", "--config"])
            .arg(&finetune_preset)
            .arg("--init")
            .arg(&weights)
            .args(sets(&format!("fine_{arch}")))
            .args(["--set", "num_workers=2", "--set"])
            .arg(format!("dataset_dir={:?}", pcam.display().to_string()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&fine.stdout);
        assert!(fine.status.success(), "{arch}: {}", String::from_utf8_lossy(&fine.stderr));
        assert!(text.contains("test: accuracy"), "{arch}: {text}");
    }
}

/// `patchtcga mil train` on `.h5` files as `embed --slides` writes them: three folds, their
/// results and the summary in `mil_results.json` (CLAM-SB, its instance classifiers saved and
/// used again by the heat map); a labels file naming a slide without features
/// is refused in one message.
// Long on purpose: one cross-validation (minutes) feeds the heat map and the refusals after it.
#[test]
fn mil_train_cross_validates_slide_features() {
    use patchtcga_features::slide_features::{write_h5, Provenance, SlideEmbedding, SlideFeatures};
    let dir = tempfile::tempdir().unwrap();
    let feats = dir.path().join("feats");
    std::fs::create_dir(&feats).unwrap();
    let mut csv = String::from("slide,label\n");
    for i in 0..18i64 {
        let x =
            tch::Tensor::arange(10 * 8, (tch::Kind::Float, tch::Device::Cpu)).reshape([10, 8]).sin() + (i % 2) as f64;
        let f =
            SlideFeatures { features: x, coords: (0..10).map(|j| [j * 224, 0]).collect(), level: 0, footprint: 224 };
        let o = SlideEmbedding {
            geometry: patchtcga_slide::PatchGeometry { mpp: 0.5, size: 224 },
            device: tch::Device::Cpu,
            float16: false,
            autocast: false,
        };
        let p = Provenance { model: "test".into(), weights_md5: "-".into(), preprocessing: "-".into() };
        write_h5(&feats.join(format!("s{i}.h5")), &f, &o, &p).unwrap();
        csv += &format!("s{i},{}\n", if i % 2 == 1 { "tumor" } else { "normal" });
    }
    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, &csv).unwrap();
    let run = |labels: &Path| {
        patchtcga()
            .args([
                "mil",
                "train",
                "--model",
                "clam-sb",
                "--folds",
                "3",
                "--epochs",
                "2",
                "--patience",
                "5",
                "--features",
            ])
            .arg(&feats)
            .arg("--labels")
            .arg(labels)
            .arg("--out")
            .arg(dir.path().join("run"))
            .output()
            .unwrap()
    };
    let out = run(&labels);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("18 slides, 2 classes (normal, tumor), 8-wide features") && text.contains("3 folds:"),
        "{text}"
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/mil_results.json")).unwrap()).unwrap();
    assert_eq!(results["folds"].as_array().unwrap().len(), 3);
    assert_eq!(results["arch"], "clam-sb");
    for k in 0..3 {
        let names: Vec<String> = tch::Tensor::read_safetensors(dir.path().join(format!("run/fold_{k}.safetensors")))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.iter().any(|n| n == "instance_classifiers.1.weight"), "fold {k}'s CLAM-SB model: {names:?}");
    }
    // The run's attention over a slide: a heat map on the bundled slide's thumbnail (the
    // synthetic patches lie along its top row) and the raw attention, one value per patch.
    let heat = dir.path().join("heat.png");
    let out = patchtcga()
        .args(["mil", "heatmap", "--run"])
        .arg(dir.path().join("run"))
        .arg("--features")
        .arg(feats.join("s1.h5"))
        .arg("--slide")
        .arg(sample_slide())
        .arg("--out")
        .arg(&heat)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("mean of 3 folds' models") && text.contains("tumor 0."), "{text}");
    let picture = image::open(&heat).unwrap().to_rgb8();
    let bar = picture.height() - 64 + 12;
    let (low, high) = (picture.get_pixel(1, bar).0, picture.get_pixel(picture.width() - 2, bar).0);
    assert!(
        low[2] > 200 && low[0] < 60 && high[0] > 200 && high[2] < 60,
        "the attention colour bar: {low:?} → {high:?}"
    );
    let attention = tch::Tensor::read_npy(heat.with_extension("npy")).unwrap();
    assert_eq!(attention.size(), [10]);
    assert!((attention.sum(tch::Kind::Double).double_value(&[]) - 1.0).abs() < 1e-5, "a softmax per fold, averaged");
    let ghost = dir.path().join("ghost.csv");
    std::fs::write(&ghost, csv + "ghost,tumor\n").unwrap();
    let out = run(&ghost);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("ghost.csv") && err.contains("ghost") && err.contains("no features"), "{err}");
}

/// The first number before `unit` in `text`.
fn figure(text: &str, unit: &str) -> f64 {
    let before = &text[..text.find(unit).unwrap_or_else(|| panic!("no {unit:?} in {text}"))];
    before
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no figure before {unit:?} in {text}"))
}

#[test]
fn benches_time_the_training_update_and_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let step = ["bench", "step", "--arch", "resnet18", "--image-size", "32", "--batch-size", "2", "--steps", "2"];
    let out = patchtcga().args(step).args(["--warmup", "1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("supervised resnet18 batch 2"), "{text}");
    assert!(figure(&text, "images/s") > 0.0 && figure(&text, "MiB") > 100.0, "{text}");
    let out = patchtcga()
        .args(["bench", "loader", "--dataset"])
        .arg(&data)
        .args(["--recipe", "simclr", "--size", "32", "--batch-size", "4", "--seconds", "0.3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(figure(&text, "images/s") > 0.0 && figure(&text, "MiB") > 1.0, "{text}");
}

#[test]
fn infer_mil_embeds_a_slide_as_the_runs_features_were_and_predicts_it() {
    let dir = tempfile::tempdir().unwrap();
    let weights = resnet18_backbone(dir.path());
    // Six "slides" (the sample slide under six ids), three per label: enough for 3 folds.
    let (csv, labels) = (dir.path().join("slides.csv"), dir.path().join("labels.csv"));
    let ids = ["a1", "a2", "a3", "b1", "b2", "b3"];
    let rows: String = ids.iter().map(|id| format!("{},{id}\n", sample_slide().display())).collect();
    std::fs::write(&csv, format!("slide,id\n{rows}")).unwrap();
    let labelled: String = ids.iter().map(|id| format!("{id},{}\n", &id[..1])).collect();
    std::fs::write(&labels, format!("slide,label\n{labelled}")).unwrap();
    let feats = dir.path().join("feats");
    let embed = ["embed", "--arch", "resnet18", "--image-size", "32", "--mpp", "4.0", "--weights"];
    patchtcga().args(embed).arg(&weights).arg("--slides").arg(&csv).arg("--out").arg(&feats).assert().success();
    let run = dir.path().join("run");
    let train =
        ["mil", "train", "--model", "clam-sb", "--inst-loss", "svm", "--folds", "3", "--epochs", "2", "--features"];
    patchtcga().args(train).arg(&feats).arg("--labels").arg(&labels).arg("--out").arg(&run).assert().success();

    let heat = dir.path().join("heat.png");
    let infer = |weights: &Path, extra: &[&str]| {
        patchtcga()
            .args(["infer", "--mil"])
            .arg(&run)
            .arg("--slide")
            .arg(sample_slide())
            .arg("--weights")
            .arg(weights)
            .arg("--out")
            .arg(&heat)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = infer(&weights, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("mean of 3 folds' models"), "{text}");
    // The same prediction and attention as the run's models give the slide's embedded file.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(heat.with_extension("json")).unwrap()).unwrap();
    let probs: Vec<f64> = json["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(json["classes"], serde_json::json!(["a", "b"]));
    let from_h5 = dir.path().join("from_h5.png");
    let out = patchtcga()
        .args(["mil", "heatmap", "--run"])
        .arg(&run)
        .arg("--features")
        .arg(feats.join("a1.h5"))
        .arg("--slide")
        .arg(sample_slide())
        .arg("--out")
        .arg(&from_h5)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = format!("a {:.3}, b {:.3}", probs[0], probs[1]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&shown), "{shown} in {said}");
    let (a, b) = (
        tch::Tensor::read_npy(heat.with_extension("npy")).unwrap(),
        tch::Tensor::read_npy(from_h5.with_extension("npy")).unwrap(),
    );
    assert_eq!(a.size(), b.size());
    assert!((&a - &b).abs().max().double_value(&[]) < 1e-5);
    assert!(heat.is_file());
    // The attention for QuPath: a detection per patch, its attention and percentile measured.
    let patches = geojson_features(&heat.with_extension("geojson"));
    assert_eq!(patches.len() as i64, a.numel() as i64);
    let m = &patches[0]["properties"]["measurements"];
    assert!(m["attention"].is_f64() && m["attention percentile"].is_f64(), "{m}");

    // Other weights, or another normalisation, than the run's features were made with: refused.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let out = infer(&resnet18_backbone(&other), &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("weights (MD5)"));
    let out = infer(&weights, &["--stats", "ptcga"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("preprocessing"));
}

/// The `NEEDED` entries of a binary's dynamic section.
fn needed_libraries(bin: &Path) -> String {
    let out = std::process::Command::new("readelf").arg("-d").arg(bin).output().expect("readelf (binutils)");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("(NEEDED)")).collect::<Vec<_>>().join("\n")
}

#[test]
fn only_the_network_binary_loads_libtorch_and_patchtcga_hands_it_its_commands() {
    let thin = needed_libraries(&patchtcga_bin());
    assert!(thin.contains("libopenslide") && !thin.contains("torch"), "{thin}");
    assert!(needed_libraries(Path::new(env!("CARGO_BIN_EXE_patchtcga-nn"))).contains("libtorch"));
    // A network command's help comes from patchtcga-nn, through patchtcga.
    let help = patchtcga().args(["export", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success() && text.contains("Usage: patchtcga export"), "{text}");
}

/// `embed-slides` over a folder of patch features, then `probe --slides` on what it wrote.
#[test]
fn embed_slides_then_probe_slides_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let feats = dir.path().join("feats");
    std::fs::create_dir(&feats).unwrap();
    let mut labels = String::from("slide,label\n");
    for i in 0..9usize {
        // Two kinds of slide, features around +1 or −1.
        let sign = if i.is_multiple_of(2) { 1.0 } else { -1.0 };
        let x = ndarray::Array2::from_shape_fn((20, 8), |(r, c)| {
            sign + 0.3 * (((i * 31 + r * 7 + c) % 11) as f32 - 5.0) / 5.0
        });
        let file = hdf5_metno::File::create(feats.join(format!("s{i}.h5"))).unwrap();
        file.new_dataset_builder().with_data(&x).create("features").unwrap();
        let c = ndarray::Array2::<i64>::zeros((20, 2));
        file.new_dataset_builder().with_data(&c).create("coords").unwrap();
        labels += &format!("s{i},{}\n", ["tumour", "normal"][i % 2]);
    }
    let labels_csv = dir.path().join("labels.csv");
    std::fs::write(&labels_csv, labels).unwrap();
    let slides = dir.path().join("slides.h5");
    let out = patchtcga()
        .args(["embed-slides", "--encoder", "mean", "--features"])
        .arg(&feats)
        .arg("--out")
        .arg(&slides)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("9 slides × 8"));
    let h5 = hdf5_metno::File::open(&slides).unwrap();
    assert_eq!(h5.dataset("features").unwrap().shape(), [9, 8]);

    let report = dir.path().join("probe.json");
    let out = patchtcga()
        .args(["probe", "--slides"])
        .arg(&slides)
        .arg("--labels")
        .arg(&labels_csv)
        .args(["--folds", "3", "--out"])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("| mean ± sd | 9 |"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["folds"].as_array().unwrap().len(), 3);
    assert_eq!(json["balanced_accuracy"]["mean"], 1.0, "{json}");
    assert_eq!(json["encoder"], "mean");

    // FEATHER needs its weights; probe needs one of its two inputs.
    let out = patchtcga()
        .args(["embed-slides", "--encoder", "feather", "--features"])
        .arg(&feats)
        .arg("--out")
        .arg(&slides)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("needs --weights"));
    let out = patchtcga().args(["probe", "--folds", "3"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--dataset <DATASET>"));
    let out = patchtcga().args(["probe", "--slides"]).arg(&slides).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--labels <LABELS>"));
}

/// A HEST-layout tissue segmenter (Lightning's `model.` prefix, torchvision's DeepLabv3 names, an
/// auxiliary classifier) whose class layer says `tissue` everywhere or nowhere.
fn hest_checkpoint(path: &Path, tissue_everywhere: bool) {
    use patchtcga_model::{Arch, SegHead, SegNet};
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = SegNet::new(&vs.root(), Arch::ResNet50.spec(64), SegHead::DeepLabV3, 2).unwrap();
    let sign = if tissue_everywhere { 1.0 } else { -1.0 };
    let mut tensors: Vec<(String, tch::Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| match n.as_str() {
            "classifier.4.weight" => (n, t.zeros_like()),
            "classifier.4.bias" => (n, tch::Tensor::from_slice(&[-10.0f32 * sign, 10.0 * sign])),
            _ => (n, t),
        })
        .map(|(n, t)| {
            (if n.starts_with("classifier.") { format!("model.{n}") } else { format!("model.backbone.{n}") }, t)
        })
        .collect();
    tensors.push(("model.aux_classifier.4.weight".into(), tch::Tensor::zeros([2, 256, 1, 1], tch::kind::FLOAT_CPU)));
    patchtcga_model::write_pth(path, &tensors).unwrap();
}

#[test]
fn segment_tissue_writes_the_learned_tissue_and_the_list_build_takes() {
    let dir = tempfile::tempdir().unwrap();
    let (all, none) = (dir.path().join("all.ckpt"), dir.path().join("none.ckpt"));
    hest_checkpoint(&all, true);
    hest_checkpoint(&none, false);
    let list = dir.path().join("slides.csv");
    std::fs::write(&list, format!("slide,organ,id\n{},skin,cmu1\n", sample_slide().display())).unwrap();
    let segment = |weights: &Path, out: &Path| {
        patchtcga()
            .args(["segment-tissue", "--weights"])
            .arg(weights)
            .arg("--slides")
            .arg(&list)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let tissue = dir.path().join("tissue");
    let out = segment(&all, &tissue);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("tissue 100.0 %"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One annotation over the whole 2220 × 2967 px slide (3 × 3 windows of 512 µm at 0.499 µm/px
    // read, the last ones past its edges; the outline clipped to them).
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(tissue.join("cmu1.geojson")).unwrap()).unwrap();
    let f = &v["features"][0];
    assert_eq!(
        (f["properties"]["objectType"].as_str(), f["properties"]["classification"]["name"].as_str()),
        (Some("annotation"), Some("Tissue"))
    );
    let ring = f["geometry"]["coordinates"][0].as_array().unwrap();
    let extent = |axis: usize| {
        let v: Vec<f64> = ring.iter().map(|p| p[axis].as_f64().unwrap()).collect();
        v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
    };
    assert!((extent(0) - 2220.0).abs() < 1.0 && (extent(1) - 2967.0).abs() < 1.0, "{} × {}", extent(0), extent(1));
    // The list with the tissue as `roi`: `build` keeps to it, and tissue everywhere loses no
    // patch, at the slide's edges either.
    let with_roi = std::fs::read_to_string(tissue.join("slides.csv")).unwrap();
    assert!(with_roi.starts_with("slide,organ,id,roi\n") && with_roi.contains("cmu1.geojson"), "{with_roi}");
    let build = |list: &Path, out: &Path| {
        patchtcga()
            .args(["build", "ptcga200", "--size", "64", "--slides"])
            .arg(list)
            .arg("--out")
            .arg(out)
            .assert()
            .success();
        walk_jpgs(out)
    };
    let (inside, whole) =
        (build(&tissue.join("slides.csv"), &dir.path().join("in")), build(&list, &dir.path().join("all")));
    assert!(inside > 0 && inside == whole, "{inside} patches inside the segmented tissue, {whole} on the slide");
    // Nowhere tissue: an empty annotation.
    let empty = dir.path().join("empty");
    let out = segment(&none, &empty);
    assert!(String::from_utf8_lossy(&out.stdout).contains("tissue 0.0 %"));
    // A checkpoint that is not HEST's is named.
    let out = segment(&list, &dir.path().join("bad"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("slides.csv"));
}

/// JPEG files under `dir`, counted.
fn walk_jpgs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { walk_jpgs(&p) } else { usize::from(p.extension().is_some_and(|e| e == "jpg")) })
        .sum()
}

/// `embed --slides --stain-normalize` records the normalisation with the features; `--images`
/// refuses it.
#[test]
fn embed_slides_normalises_stain_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let weights = resnet18_backbone(dir.path());
    let csv = dir.path().join("slides.csv");
    std::fs::write(&csv, format!("slide,id\n{},cmu1\n", sample_slide().display())).unwrap();
    let target = patchtcga_testkit::repo_root().join("crates/augment/tests/golden/stain_target.png");
    let embed = |source: &str, path: &Path, out: &Path| {
        patchtcga()
            .args(["embed", "--arch", "resnet18", "--image-size", "64", "--mpp", "2.0", "--weights"])
            .arg(&weights)
            .arg(source)
            .arg(path)
            .args(["--stain-normalize", "reinhard", "--stain-target"])
            .arg(&target)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let feats = dir.path().join("feats");
    let out = embed("--slides", &csv, &feats);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let h5 = hdf5_metno::File::open(feats.join("cmu1.h5")).unwrap();
    let pre = h5.attr("preprocessing").unwrap().read_scalar::<hdf5_metno::types::VarLenUnicode>().unwrap().to_string();
    assert!(pre.ends_with(", stain reinhard to stain_target.png"), "{pre}");
    let out = embed("--images", dir.path(), &dir.path().join("f.npy"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("applies to --slides"));
}
