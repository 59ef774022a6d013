//! The report of a pretraining run and a fine-tuning run: table values and order, embedded
//! pictures that decode as PNG, markdown links that resolve, the QC of the datasets they trained
//! on, and a clear error for a folder that is not a run.

use std::path::Path;

use base64::Engine;
use patchtcga_report::{html, markdown, ReportArgs, Run, MAPS_SHOWN};

/// A 1×1 PNG.
const PNG: [u8; 67] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0a, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn run(dir: &Path, config: &str, log: &str, results: Option<&str>, picture: &str) {
    std::fs::create_dir_all(dir.join("plots")).unwrap();
    std::fs::write(dir.join("config.toml"), config).unwrap();
    std::fs::write(dir.join("metrics.jsonl"), log).unwrap();
    if let Some(r) = results {
        std::fs::write(dir.join("results.json"), r).unwrap();
    }
    std::fs::write(dir.join("plots").join(picture), PNG).unwrap();
}

// Long on purpose: one pair of run folders, then every part of the page it makes (table, order,
// pictures, links, markdown) checked against it.
#[test]
fn a_pretraining_and_a_fine_tuning_run_in_one_page() {
    let d = tempfile::tempdir().unwrap();
    let (pre, ft) = (d.path().join("runs/simclr_r50"), d.path().join("runs/pcam_simclr"));
    run(
        &pre,
        "name = \"simclr_r50\"\nself_supervised = \"simclr\"\nmodel_name = \"resnet50\"\ndataset_dir = \"data/PTCGA200\"\n",
        "{\"update\":1,\"epoch\":1,\"batch\":1,\"lr\":0.1,\"loss\":5.5,\"images_per_s\":100.0,\"data_wait\":0.1}\n{\"update\":2,\"epoch\":1,\"batch\":2,\"lr\":0.1,\"loss\":4.25,\"images_per_s\":100.0,\"data_wait\":0.1}\n{\"update\":2,\"epoch\":1,\"val_knn_accuracy\":0.8125}\n",
        None,
        "loss.png",
    );
    let results = format!(
        "{{\"init\":{:?},\"selected_epoch\":3,\"val\":{{\"accuracy\":0.9}},\"test\":{{\"accuracy\":0.8641,\
         \"accuracy_ci\":[0.85,0.88],\"balanced_accuracy\":0.86,\"f1\":0.85,\"roc_auc\":0.93}}}}",
        pre.join("model.safetensors").display().to_string()
    );
    run(
        &ft,
        "name = \"pcam_simclr\"\nself_supervised = \"none\"\nmodel_name = \"resnet50\"\ndataset_dir = \"data/PCam200\"\n",
        "{\"update\":1,\"epoch\":1,\"batch\":1,\"lr\":0.1,\"loss\":0.7,\"images_per_s\":100.0,\"data_wait\":0.1}\n",
        Some(&results),
        "confusion_test.png",
    );
    // Given fine-tuning first, the table still opens with pretraining.
    let runs = vec![Run::read(&ft).unwrap(), Run::read(&pre).unwrap()];
    let page = html(&runs, &[]).unwrap();
    let (a, b) = (page.find("<td>pretraining (simclr)</td>").unwrap(), page.find("<td>fine-tuning</td>").unwrap());
    assert!(a < b, "pretraining rows first");
    for want in [
        "<td>4.2500</td>",
        "<td>81.25</td>",
        "<td>86.41 (85.00–88.00)</td>",
        "<td>simclr_r50 (run)</td>",
        "<td>0.9300</td>",
        "<td>PCam200</td>",
    ] {
        assert!(page.contains(want), "{want} missing from the table");
    }
    let imgs: Vec<&str> =
        page.split("src=\"data:image/png;base64,").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
    assert_eq!(imgs.len(), 2, "both runs' pictures embedded");
    for b64 in imgs {
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), PNG);
    }

    let md = markdown(&runs, &[], d.path());
    assert!(md.contains("| pcam_simclr | fine-tuning | PCam200 | resnet50 | simclr_r50 (run) |"), "{md}");
    let link = md.lines().find(|l| l.starts_with("![confusion_test](")).unwrap();
    let rel = &link["![confusion_test](".len()..link.len() - 1];
    assert!(d.path().join(rel).exists(), "{rel} resolves from the report's folder");
}

#[test]
fn a_folder_that_is_not_a_run_is_named() {
    let d = tempfile::tempdir().unwrap();
    let e = Run::read(d.path()).unwrap_err().to_string();
    assert!(e.contains(&d.path().display().to_string()) && e.contains("not a patchtcga run folder"), "{e}");
}

/// Renders `page` in headless Chromium and returns the DOM after load. `None` when Chromium is
/// not installed, unless `PATCHTCGA_REQUIRE_CHROMIUM` is set (as `make test` does).
fn rendered(page: &Path) -> Option<String> {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(browser) = browser else {
        assert!(std::env::var_os("PATCHTCGA_REQUIRE_CHROMIUM").is_none(), "Chromium is required but not installed");
        eprintln!("Chromium not installed: the rendering check is skipped");
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_page_renders_in_a_browser_with_every_picture() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("run");
    run(
        &dir,
        "name = \"r\"\nmodel_name = \"resnet18\"\n",
        "{\"update\":1,\"epoch\":1,\"batch\":1,\"lr\":0.1,\"loss\":1.0,\"images_per_s\":100.0,\"data_wait\":0.1}\n",
        None,
        "loss.png",
    );
    std::fs::write(dir.join("plots/broken.png"), b"not a png").unwrap();
    let page = d.path().join("report.html");
    std::fs::write(&page, html(&[Run::read(&dir).unwrap()], &[]).unwrap()).unwrap();
    let Some(dom) = rendered(&page) else { return };
    assert!(dom.contains("<table id=\"runs\">") && dom.contains("<td>pretraining (supervised)</td>"), "{dom}");
    assert!(dom.contains("data-broken-images=\"1\""), "exactly the damaged picture fails to decode: {dom}");
    assert!(dom.contains("[picture broken did not decode]"));
}

// Long on purpose: one segmentation run folder and every place its IoU and Dice appear.
#[test]
fn a_segmentation_run_reports_its_iou() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("seg");
    let results = "{\"task\":\"segmentation\",\"init\":\"none\",\"selected_epoch\":2,\"val\":{\"mean_iou\":0.5},\
                   \"test\":{\"mean_iou\":0.6353,\"micro_iou\":0.7,\"mean_dice\":0.71,\"mean_pixel_accuracy\":0.8}}";
    run(
        &dir,
        "name = \"seg\"\nmodel_name = \"resnet50\"\nseg_head = \"deeplabv3\"\ndataset_dir = \"data/segPANDA200\"\n",
        "{\"update\":1,\"epoch\":1,\"batch\":1,\"lr\":0.1,\"loss\":1.0,\"images_per_s\":100.0,\"data_wait\":0.1}\n",
        Some(results),
        "overlay_test.png",
    );
    let page = html(&[Run::read(&dir).unwrap()], &[]).unwrap();
    for want in ["<td>segmentation (deeplabv3)</td>", "<td>63.53</td>", "<td>70.00</td>", "<td>2</td>"] {
        assert!(page.contains(want), "{want} missing");
    }
    assert!(!page.contains("test accuracy"), "no classification columns for a segmentation run");
}

#[test]
fn results_written_with_the_shared_types_read_back_into_the_table() {
    use patchtcga_metrics::run::{RunResults, SetReport, Task};
    use patchtcga_metrics::{ClassificationReport, SegmentationCounts};
    let d = tempfile::tempdir().unwrap();
    // A classification run, its report computed as fine-tuning computes it.
    let probs = [0.9f32, 0.1, 0.2, 0.8, 0.6, 0.4, 0.3, 0.7];
    let report = ClassificationReport::new(&probs, &[0, 1, 1, 1], 2);
    let r = RunResults {
        selected_epoch: 4,
        init: "none".into(),
        test: Some(SetReport::Classification(report.clone())),
        val: Some(SetReport::Classification(report.clone())),
        ..Default::default()
    };
    let dir = d.path().join("cls");
    run(&dir, "name = \"cls\"\nmodel_name = \"resnet18\"\n", "", None, "confusion_test.png");
    std::fs::write(dir.join("results.json"), r.to_json()).unwrap();
    assert_eq!(RunResults::read(&dir).unwrap().unwrap(), r, "results.json round-trips through the shared types");
    let run_cls = Run::read(&dir).unwrap();
    let col = |run: &Run, c: &str| run.metrics.iter().find(|(k, _)| k == c).map(|(_, v)| v.clone());
    assert_eq!(col(&run_cls, "test accuracy % (95 % CI)").unwrap().split(' ').next(), Some("75.00"));
    assert_eq!(col(&run_cls, "selected epoch").as_deref(), Some("4"));
    // A segmentation run.
    let mut counts = SegmentationCounts::new(2);
    counts.add(&[0, 1, 1, 0], &[0, 1, 0, 0], None);
    let r = RunResults {
        task: Task::Segmentation,
        test: Some(SetReport::Segmentation(counts.report())),
        ..Default::default()
    };
    let dir = d.path().join("seg");
    run(&dir, "name = \"seg\"\nseg_head = \"fcn\"\n", "", None, "overlay_test.png");
    std::fs::write(dir.join("results.json"), r.to_json()).unwrap();
    assert_eq!(RunResults::read(&dir).unwrap().unwrap(), r);
    let run_seg = Run::read(&dir).unwrap();
    assert_eq!(run_seg.task, "segmentation (fcn)");
    let miou = 100.0 * (2.0 / 3.0 + 1.0 / 2.0) / 2.0;
    assert_eq!(col(&run_seg, "test mIoU %"), Some(format!("{miou:.2}")));
}

#[test]
fn a_slide_level_run_joins_the_table_with_its_fold_means() {
    use patchtcga_metrics::mil::{CrossValidation, FeatureSource, FoldResult, HeldOut, MeanSd, MilArch, Provenance};
    use patchtcga_metrics::slide_probe::{ProbeFold, SlideProbeReport, SLIDE_PROBE_FILE};
    let d = tempfile::tempdir().unwrap();
    let runs = d.path().join("runs");
    let pre = runs.join("simclr_r50");
    let log =
        "{\"update\":1,\"epoch\":1,\"batch\":1,\"lr\":0.1,\"loss\":1.0,\"images_per_s\":100.0,\"data_wait\":0.1}\n";
    run(
        &pre,
        "name = \"simclr_r50\"\nself_supervised = \"simclr\"\nmodel_name = \"resnet50\"\n",
        log,
        None,
        "loss.png",
    );
    let fold = |k: usize| FoldResult {
        fold: k,
        selected_epoch: 4,
        val_loss: 0.3,
        test: patchtcga_metrics::ClassificationReport::new(&[0.9, 0.1, 0.2, 0.8], &[0, 1], 2),
        test_kappa: 1.0,
        test_slides: vec!["a".into(), "b".into()],
        held_out: None,
    };
    let cv = CrossValidation {
        arch: MilArch::ClamSb,
        classes: vec!["normal".into(), "tumor".into()],
        width: 2048,
        features: Some(FeatureSource {
            made_by: Provenance { model: "resnet50".into(), weights_md5: "0f".into(), preprocessing: "p".into() },
            mpp: 0.5,
            patch_size: 224,
        }),
        folds: (0..3).map(fold).collect(),
        accuracy: MeanSd { mean: 0.8333, sd: 0.05 },
        balanced_accuracy: MeanSd { mean: 0.8, sd: 0.1 },
        roc_auc: MeanSd { mean: 0.9125, sd: 0.0312 },
        kappa: MeanSd { mean: 0.6, sd: 0.2 },
        held_out: Some(HeldOut {
            slides: vec!["test_001".into(), "test_002".into()],
            accuracy: MeanSd { mean: 0.5, sd: 0.0 },
            balanced_accuracy: MeanSd { mean: 0.5, sd: 0.0 },
            roc_auc: MeanSd { mean: 1.0, sd: 0.0 },
            kappa: MeanSd { mean: 0.0, sd: 0.0 },
            ensemble: patchtcga_metrics::ClassificationReport::new(&[0.9, 0.1, 0.2, 0.8], &[0, 1], 2),
            ensemble_kappa: 1.0,
        }),
    };
    std::fs::create_dir_all(runs.join("mil")).unwrap();
    std::fs::write(runs.join("mil/mil_results.json"), serde_json::to_vec(&cv).unwrap()).unwrap();
    let probe = SlideProbeReport {
        encoder: "titan".into(),
        patch_encoder: "conch-v15".into(),
        classes: vec!["normal".into(), "tumor".into()],
        slides: 40,
        cost: 1.0,
        folds: (0..5)
            .map(|_| ProbeFold {
                test_slides: vec!["a".into()],
                report: patchtcga_metrics::ClassificationReport::new(&[0.9, 0.1, 0.2, 0.8], &[0, 1], 2),
                kappa: 1.0,
            })
            .collect(),
        balanced_accuracy: MeanSd { mean: 0.875, sd: 0.025 },
        roc_auc: MeanSd { mean: 0.95, sd: 0.01 },
        kappa: MeanSd { mean: 0.75, sd: 0.05 },
    };
    std::fs::create_dir_all(runs.join("titan_probe")).unwrap();
    std::fs::write(runs.join("titan_probe").join(SLIDE_PROBE_FILE), serde_json::to_vec(&probe).unwrap()).unwrap();
    std::fs::create_dir_all(runs.join("not_a_run")).unwrap();

    let dirs = patchtcga_report::run_folders(std::slice::from_ref(&runs)).unwrap();
    assert_eq!(dirs, [runs.join("mil"), pre.clone(), runs.join("titan_probe")]);
    let table: Vec<Run> = dirs.iter().map(|d| Run::read(d).unwrap()).collect();
    let page = html(&table, &[]).unwrap();
    for want in [
        "<td>slide level (clam-sb, 3 folds)</td>",
        "<td>normal / tumor</td>",
        "<th>slide accuracy % (mean ± sd)</th>",
        "<td>83.33 ± 5.00</td>",
        "<td>0.9125 ± 0.0312</td>",
        "<td>0.6000 ± 0.2000</td>",
        "<th>held-out test accuracy % (folds' models together, 95 % CI)</th>",
        "<td>100.00 (100.00–100.00)</td>",
        "<td>slide probe (logistic regression, C = 1, 5 folds)</td>",
        "<td>titan over conch-v15</td>",
        "<td>87.50 ± 2.50</td>",
        "<td>0.9500 ± 0.0100</td>",
    ] {
        assert!(page.contains(want), "{want} missing");
    }
    // The probe's figures sit in the slide-level runs' columns.
    assert_eq!(page.matches("<th>slide balanced accuracy %</th>").count(), 1);
    assert!(page.find("pretraining (simclr)").unwrap() < page.find("slide level").unwrap());
    let e = patchtcga_report::run_folders(&[runs.join("not_a_run")]).unwrap_err().to_string();
    assert!(e.contains("not_a_run") && e.contains("mil_results.json"), "{e}");
}

#[test]
fn the_qc_of_the_datasets_the_runs_trained_on_joins_the_page() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data/PTCGA200");
    let maps = data.join("thumbnail_position_map");
    std::fs::create_dir_all(&maps).unwrap();
    std::fs::write(
        data.join("qc.csv"),
        "slide,tissue_mm2,ink_mm2,candidates,dropped_ink,dropped_border,dropped_quality,kept,stain_unchanged\n\
         TCGA-A,1.5,0.25,40,3,0,1,36,0\nTCGA-B,2.25,0,20,0,0,0,20,0\n",
    )
    .unwrap();
    for i in 0..=MAPS_SHOWN {
        std::fs::write(maps.join(format!("s{i:02}.png")), PNG).unwrap();
    }
    // Two runs on the same dataset, one on a dataset without QC: one section.
    let config = |name: &str, data: &Path| {
        format!("name = \"{name}\"\nmodel_name = \"resnet18\"\ndataset_dir = {:?}\n", data.display().to_string())
    };
    let log =
        "{\"update\":1,\"epoch\":1,\"batch\":1,\"lr\":0.1,\"loss\":1.0,\"images_per_s\":100.0,\"data_wait\":0.1}\n";
    run(&d.path().join("runs/a"), &config("a", &data), log, None, "loss.png");
    run(&d.path().join("runs/b"), &config("b", &data), log, None, "loss.png");
    run(&d.path().join("runs/c"), &config("c", &d.path().join("data/other")), log, None, "loss.png");
    let out = d.path().join("report.html");
    let said = ReportArgs { runs: vec![d.path().join("runs")], out: out.clone() }.run().unwrap();
    assert!(said.starts_with("3 runs, the QC of 1 datasets"), "{said}");
    let page = std::fs::read_to_string(&out).unwrap();
    assert_eq!(page.matches("PTCGA200: quality control").count(), 1, "one section per dataset");
    for want in [
        "<td>TCGA-A</td><td>1.5</td><td>0.25</td><td>40</td><td>3</td>",
        "<th>total</th><th>3.75</th><th>0.25</th><th>60</th><th>3</th>",
    ] {
        assert!(page.contains(want), "{want} missing");
    }
    assert!(page.contains(&format!("the first {MAPS_SHOWN} of {} slide maps", MAPS_SHOWN + 1)));
    assert_eq!(page.matches("src=\"data:image/png;base64,").count(), MAPS_SHOWN + 3, "maps and the runs' plots");
    // Markdown: the same table, the maps linked where they are.
    let md_out = d.path().join("report.md");
    ReportArgs { runs: vec![d.path().join("runs")], out: md_out.clone() }.run().unwrap();
    let md = std::fs::read_to_string(&md_out).unwrap();
    assert!(md.contains("| total | 3.75 | 0.25 | 60 | 3 | 0 | 1 | 56 | 0 |"), "{md}");
    let link = md.lines().find(|l| l.starts_with("![s00](")).unwrap();
    assert!(d.path().join(&link["![s00](".len()..link.len() - 1]).exists(), "{link}");
}
