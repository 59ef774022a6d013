//! The report of a set of runs: one table of every run — pretraining (method, backbone, data,
//! last loss, k-NN organ accuracy) and benchmarks (initialisation, accuracy with its interval,
//! balanced accuracy, ROC-AUC, F1) — then each run's curves, confusion matrices and other
//! pictures; and the quality control of the datasets they trained on (`qc.rs`). HTML with the
//! PNGs embedded (one file that opens in any browser) or markdown that links them.

mod qc;

use std::fmt::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use patchtcga_metrics::mil::{CrossValidation, MeanSd, MIL_RESULTS_FILE};
use patchtcga_metrics::run::{read_log, LogEntry, RunResults, SetReport, Task};
use patchtcga_metrics::slide_probe::{SlideProbeReport, SLIDE_PROBE_FILE};

pub use qc::{datasets, DatasetQc, MAPS_SHOWN};

/// Errors naming the run folder or file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {cause}")]
    Run { path: PathBuf, cause: String },
}

/// Options of `patchtcga report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Run folders, or folders of run folders (e.g. `runs`).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// `.html` (self-contained) or `.md`.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
}

impl ReportArgs {
    /// Writes the report of the runs, and the QC of the datasets they trained on, to `--out`
    /// (atomically); says how many runs and datasets went in.
    pub fn run(&self) -> Result<String, ReportError> {
        let dirs = run_folders(&self.runs)?;
        let runs = dirs.iter().map(|d| Run::read(d)).collect::<Result<Vec<_>, _>>()?;
        let qc = datasets(runs.iter().filter_map(|r| r.dataset.clone()))?;
        let out = self.out.as_path();
        let text = match out.extension().and_then(|e| e.to_str()) {
            Some("md") => {
                markdown(&runs, &qc, out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
            }
            Some("html" | "htm") => html(&runs, &qc)?,
            _ => return Err(ReportError::Run { path: out.to_path_buf(), cause: "--out: .html or .md".into() }),
        };
        patchtcga_atomic::write(out, text.as_bytes())
            .map_err(|e| ReportError::Run { path: out.to_path_buf(), cause: format!("cannot write: {e}") })?;
        Ok(format!("{} runs, the QC of {} datasets → {}", runs.len(), qc.len(), out.display()))
    }
}

/// What the report knows about one run folder.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub name: String,
    /// `pretraining (simclr)`, `fine-tuning`, `linear probe`.
    pub task: String,
    pub backbone: String,
    /// Dataset folder name.
    pub data: String,
    /// The dataset folder (`dataset_dir`; none for a slide-level run).
    pub dataset: Option<PathBuf>,
    /// Initial weights (fine-tuning), `none`, or "".
    pub init: String,
    /// (column, value) in display order.
    pub metrics: Vec<(String, String)>,
    /// PNGs of the run, in display order.
    pub pictures: Vec<PathBuf>,
}

fn file_name(p: &str) -> String {
    Path::new(p).file_name().and_then(|n| n.to_str()).unwrap_or(p).to_owned()
}

/// The last value of `key` in a metrics log.
fn last(log: &[LogEntry], key: &str) -> Option<f64> {
    log.iter().rev().find_map(|e| e.get(key))
}

fn percent(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

impl Run {
    /// Reads a run folder: `config.toml`, `metrics.jsonl`, `results.json` (fine-tuning) and the
    /// PNGs under `plots/`.
    pub fn read(dir: &Path) -> Result<Self, ReportError> {
        if dir.join(MIL_RESULTS_FILE).is_file() {
            return Self::read_mil(dir);
        }
        if dir.join(SLIDE_PROBE_FILE).is_file() {
            return Self::read_slide_probe(dir);
        }
        let bad = |cause: String| ReportError::Run { path: dir.to_path_buf(), cause };
        let text = std::fs::read_to_string(dir.join("config.toml"))
            .map_err(|e| bad(format!("no config.toml ({e}): not a patchtcga run folder")))?;
        let config: toml::Table = text.parse().map_err(|e| bad(format!("config.toml: {e}")))?;
        let get = |k: &str| config.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let log = read_log(dir).map_err(bad)?;
        let results = RunResults::read(dir).map_err(|e| ReportError::Run { path: dir.to_path_buf(), cause: e })?;
        let method = get("self_supervised");
        let fine_tune = config.get("fine_tune").and_then(|v| v.as_bool()).unwrap_or(false);
        let (task, init, metrics) = match &results {
            Some(r) => {
                let task = match r.task {
                    Task::Segmentation => format!("segmentation ({})", get("seg_head")),
                    Task::Classification if fine_tune => "linear probe".to_owned(),
                    Task::Classification => "fine-tuning".to_owned(),
                };
                (task, file_name_of_run(&r.init), benchmark_metrics(r))
            }
            None => {
                let task = if method.is_empty() || method == "none" {
                    "pretraining (supervised)".to_owned()
                } else {
                    format!("pretraining ({method})")
                };
                (task, get("pretrained"), pretraining_metrics(&log))
            }
        };
        let mut pictures: Vec<PathBuf> = std::fs::read_dir(dir.join("plots"))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "png"))
                    .collect()
            })
            .unwrap_or_default();
        pictures.sort();
        Ok(Self {
            dir: dir.to_path_buf(),
            name: get("name"),
            task,
            backbone: get("model_name"),
            data: file_name(&get("dataset_dir")),
            dataset: Some(PathBuf::from(get("dataset_dir"))).filter(|d| !d.as_os_str().is_empty()),
            init: if init.is_empty() { "none".into() } else { init },
            metrics,
            pictures,
        })
    }
}

impl Run {
    /// Reads a slide-level run folder (`mil train`'s `mil_results.json`): the network, the
    /// features' model, the classes, and the folds' mean ± sd slide-level metrics.
    fn read_mil(dir: &Path) -> Result<Self, ReportError> {
        let cv: CrossValidation = read_json(&dir.join(MIL_RESULTS_FILE))?;
        let pm = |m: MeanSd| format!("{} ± {}", percent(m.mean), percent(m.sd));
        let mut metrics = vec![("slide accuracy % (mean ± sd)".to_owned(), pm(cv.accuracy))];
        metrics.extend(slide_metrics(cv.balanced_accuracy, cv.roc_auc, cv.kappa));
        if let Some(h) = &cv.held_out {
            let [lo, hi] = h.ensemble.accuracy_ci;
            let e = &h.ensemble;
            metrics.push((
                "held-out test accuracy % (folds' models together, 95 % CI)".to_owned(),
                format!("{} ({}–{})", percent(e.accuracy), percent(lo), percent(hi)),
            ));
            if let Some(auc) = e.roc_auc {
                metrics.push(("held-out test ROC-AUC".to_owned(), format!("{auc:.4}")));
            }
            metrics.push(("held-out test slides".to_owned(), h.slides.len().to_string()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            name: dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            task: format!("slide level ({}, {} folds)", cv.arch, cv.folds.len()),
            backbone: cv
                .features
                .as_ref()
                .map_or_else(|| format!("{}-wide features", cv.width), |f| f.made_by.model.clone()),
            data: cv.classes.join(" / "),
            dataset: None,
            init: "none".into(),
            metrics,
            pictures: Vec::new(),
        })
    }
}

impl Run {
    /// Reads a slide probe's folder (`probe --slides`'s `slide_probe.json`): the slide and patch
    /// encoders, the classes, and the folds' mean ± sd in the slide-level runs' columns.
    fn read_slide_probe(dir: &Path) -> Result<Self, ReportError> {
        let p: SlideProbeReport = read_json(&dir.join(SLIDE_PROBE_FILE))?;
        let metrics = slide_metrics(p.balanced_accuracy, p.roc_auc, p.kappa);
        let backbone = match p.patch_encoder.as_str() {
            "" => p.encoder.clone(),
            patches => format!("{} over {patches}", p.encoder),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            name: dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            task: format!("slide probe (logistic regression, C = {}, {} folds)", p.cost, p.folds.len()),
            backbone,
            data: p.classes.join(" / "),
            dataset: None,
            init: "none".into(),
            metrics,
            pictures: Vec::new(),
        })
    }
}

/// A results file's contents; an unreadable or malformed one is named.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ReportError> {
    let bad = |cause: String| ReportError::Run { path: path.to_path_buf(), cause };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))
}

/// The slide-level columns MIL runs and slide probes share: balanced accuracy, ROC-AUC and
/// quadratic kappa as mean ± sd over folds.
fn slide_metrics(balanced: MeanSd, auc: MeanSd, kappa: MeanSd) -> Vec<(String, String)> {
    vec![
        ("slide balanced accuracy %".to_owned(), format!("{} ± {}", percent(balanced.mean), percent(balanced.sd))),
        ("slide ROC-AUC".to_owned(), format!("{:.4} ± {:.4}", auc.mean, auc.sd)),
        ("slide kappa (quadratic)".to_owned(), format!("{:.4} ± {:.4}", kappa.mean, kappa.sd)),
    ]
}

/// The run folders `paths` name: each a run folder itself (`config.toml`, or a slide-level run's
/// `mil_results.json` or `slide_probe.json`) or a folder of them (sorted).
pub fn run_folders(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReportError> {
    let is_run = |d: &Path| ["config.toml", MIL_RESULTS_FILE, SLIDE_PROBE_FILE].iter().any(|f| d.join(f).is_file());
    let mut dirs = Vec::new();
    for p in paths {
        if is_run(p) {
            dirs.push(p.clone());
            continue;
        }
        let bad = |cause: String| ReportError::Run { path: p.clone(), cause };
        let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| bad(format!("cannot read ({e})")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|d| is_run(d))
            .collect();
        if inside.is_empty() {
            return Err(bad(
                "neither a run folder (config.toml, mil_results.json, slide_probe.json) nor a folder of runs".into(),
            ));
        }
        inside.sort();
        dirs.extend(inside);
    }
    Ok(dirs)
}

/// The table columns of a benchmark run, from its `results.json`.
fn benchmark_metrics(r: &RunResults) -> Vec<(String, String)> {
    let mut metrics = Vec::new();
    let mut push = |col: &str, v: String| metrics.push((col.to_owned(), v));
    match (&r.test, &r.val) {
        (Some(SetReport::Segmentation(t)), val) => {
            push("test mIoU %", percent(t.mean_iou));
            push("test micro IoU %", percent(t.micro_iou));
            push("test mean Dice %", percent(t.mean_dice));
            push("test mean pixel accuracy %", percent(t.mean_pixel_accuracy));
            if let Some(SetReport::Segmentation(v)) = val {
                push("val mIoU %", percent(v.mean_iou));
            }
        }
        (Some(SetReport::Classification(t)), val) => {
            let [lo, hi] = t.accuracy_ci;
            push("test accuracy % (95 % CI)", format!("{} ({}–{})", percent(t.accuracy), percent(lo), percent(hi)));
            push("balanced accuracy %", percent(t.balanced_accuracy));
            push("F1", format!("{:.4}", t.f1));
            if let Some(auc) = t.roc_auc {
                push("ROC-AUC", format!("{auc:.4}"));
            }
            if let Some(SetReport::Classification(v)) = val {
                push("val accuracy %", percent(v.accuracy));
            }
        }
        (None, _) => {}
    }
    push("selected epoch", r.selected_epoch.to_string());
    metrics
}

/// The table columns of a pretraining run, from its metrics log.
fn pretraining_metrics(log: &[LogEntry]) -> Vec<(String, String)> {
    let mut metrics = Vec::new();
    for (key, col) in
        [("loss", "last loss"), ("val_knn_accuracy", "k-NN accuracy %"), ("val_accuracy", "val accuracy %")]
    {
        if let Some(v) = last(log, key) {
            metrics.push((col.into(), if key == "loss" { format!("{v:.4}") } else { percent(v) }));
        }
    }
    if let Some(u) = last(log, "update") {
        metrics.push(("updates".into(), format!("{u:.0}")));
    }
    metrics
}

/// A short name for weights: the run folder for a run's `model.safetensors`, else the file name.
fn file_name_of_run(path: &str) -> String {
    let p = Path::new(path);
    match (p.file_name().and_then(|n| n.to_str()), p.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str())) {
        (Some("model.safetensors"), Some(run)) => format!("{run} (run)"),
        _ => file_name(path),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Every metric column of `runs`, in first-seen order.
fn columns(runs: &[Run]) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    for r in runs {
        for (c, _) in &r.metrics {
            if !cols.contains(c) {
                cols.push(c.clone());
            }
        }
    }
    cols
}

fn cell(r: &Run, col: &str) -> String {
    r.metrics.iter().find(|(c, _)| c == col).map(|(_, v)| v.clone()).unwrap_or_else(|| "–".into())
}

/// Runs ordered as the paper's tables: pretraining first, then each benchmark by its data.
fn ordered(runs: &[Run]) -> Vec<&Run> {
    let mut v: Vec<&Run> = runs.iter().collect();
    v.sort_by_key(|r| (!r.task.starts_with("pretraining"), r.data.clone(), r.task.clone(), r.name.clone()));
    v
}

/// The HTML page: a self-contained file (pictures embedded as base64 PNG).
pub fn html(runs: &[Run], datasets: &[DatasetQc]) -> Result<String, ReportError> {
    let cols = columns(runs);
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>patchtcga report</title>\n<style>\
         body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}\
         th,td{border:1px solid #bbb;padding:4px 8px;text-align:left}th{background:#eef}\
         img{max-width:48%;margin:4px;border:1px solid #ddd}.qc img{max-width:23%}section{margin-top:2em}</style></head><body>\n\
         <h1>patchtcga report</h1>\n<table id=\"runs\">\n<tr><th>run</th><th>task</th><th>data</th><th>backbone</th><th>initialisation</th>",
    );
    for c in &cols {
        let _ = write!(s, "<th>{}</th>", escape(c));
    }
    s.push_str("</tr>\n");
    for r in ordered(runs) {
        let _ = write!(
            s,
            "<tr><td><a href=\"#{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td>",
            escape(&r.name),
            escape(&r.task),
            escape(&r.data),
            escape(&r.backbone),
            escape(&r.init)
        );
        for c in &cols {
            let _ = write!(s, "<td>{}</td>", escape(&cell(r, c)));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    for d in datasets {
        html_qc(&mut s, d)?;
    }
    for r in ordered(runs) {
        let _ = writeln!(
            s,
            "<section id=\"{0}\"><h2>{0}</h2><p>{1}, {2}, {3}</p>",
            escape(&r.name),
            escape(&r.task),
            escape(&r.backbone),
            escape(&r.dir.display().to_string())
        );
        for p in &r.pictures {
            embed_png(&mut s, p)?;
        }
        s.push_str("</section>\n");
    }
    // Marks pictures the browser could not decode (seen by the headless-browser test, and by
    // anyone whose copy of the page is damaged).
    s.push_str(
        "<script>addEventListener('load',()=>{const bad=[...document.images].filter(i=>!i.naturalWidth);\
         document.body.dataset.brokenImages=bad.length;bad.forEach(i=>i.replaceWith('[picture ' + i.alt + ' did not decode]'));});</script>\n",
    );
    s.push_str("</body></html>\n");
    Ok(s)
}

/// `<img>` of the PNG at `p`, embedded.
fn embed_png(s: &mut String, p: &Path) -> Result<(), ReportError> {
    let bytes = std::fs::read(p).map_err(|e| ReportError::Run { path: p.to_path_buf(), cause: e.to_string() })?;
    let alt = p.file_stem().and_then(|n| n.to_str()).unwrap_or("picture");
    let _ = writeln!(
        s,
        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
        escape(alt),
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    Ok(())
}

/// A dataset's QC section: its `qc.csv` with totals, then its first slide maps.
fn html_qc(s: &mut String, d: &DatasetQc) -> Result<(), ReportError> {
    let _ = write!(
        s,
        "<section class=\"qc\" id=\"qc-{0}\"><h2>{0}: quality control</h2><p>{1}, {2} slide(s)</p>\n<table><tr>",
        escape(&d.name),
        escape(&d.dir.display().to_string()),
        d.rows.len()
    );
    for h in &d.header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr>\n");
    for (row, tag) in d.rows.iter().map(|r| (r, "td")).chain([(&d.totals, "th")]) {
        s.push_str("<tr>");
        for v in row {
            let _ = write!(s, "<{tag}>{}</{tag}>", escape(v));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    for p in &d.maps {
        embed_png(s, p)?;
    }
    if d.map_count > d.maps.len() {
        let _ = writeln!(s, "<p>the first {} of {} slide maps</p>", d.maps.len(), d.map_count);
    }
    s.push_str("</section>\n");
    Ok(())
}

/// The markdown page: the table, the datasets' QC, then each run's pictures linked relative to
/// `out_dir`.
pub fn markdown(runs: &[Run], datasets: &[DatasetQc], out_dir: &Path) -> String {
    let cols = columns(runs);
    let mut s = String::from("# patchtcga report\n\n| run | task | data | backbone | initialisation |");
    for c in &cols {
        let _ = write!(s, " {c} |");
    }
    s.push_str("\n|---|---|---|---|---|");
    s.push_str(&"---|".repeat(cols.len()));
    s.push('\n');
    for r in ordered(runs) {
        let _ = write!(s, "| {} | {} | {} | {} | {} |", r.name, r.task, r.data, r.backbone, r.init);
        for c in &cols {
            let _ = write!(s, " {} |", cell(r, c));
        }
        s.push('\n');
    }
    for d in datasets {
        let _ = write!(s, "\n## {}: quality control\n\n{}, {} slide(s)\n\n|", d.name, d.dir.display(), d.rows.len());
        for h in &d.header {
            let _ = write!(s, " {h} |");
        }
        let _ = write!(s, "\n|{}\n", "---|".repeat(d.header.len()));
        for row in d.rows.iter().chain([&d.totals]) {
            s.push('|');
            for v in row {
                let _ = write!(s, " {v} |");
            }
            s.push('\n');
        }
        for p in &d.maps {
            let _ =
                writeln!(s, "![{}]({})", p.file_stem().and_then(|n| n.to_str()).unwrap_or("map"), relative(p, out_dir));
        }
    }
    for r in ordered(runs) {
        let _ = write!(s, "\n## {}\n\n", r.name);
        for p in &r.pictures {
            let rel = relative(p, out_dir);
            let _ = writeln!(s, "![{}]({})", p.file_stem().and_then(|n| n.to_str()).unwrap_or("picture"), rel);
        }
    }
    s
}

/// `path` as seen from `from` (both made absolute when they can be).
fn relative(path: &Path, from: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (p, f) = (abs(path), abs(from));
    let common = p.components().zip(f.components()).take_while(|(a, b)| a == b).count();
    let ups = f.components().count() - common;
    let mut out = PathBuf::new();
    for _ in 0..ups {
        out.push("..");
    }
    for c in p.components().skip(common) {
        out.push(c);
    }
    out.display().to_string()
}
