//! `patchtcga probe`: linear and k-NN probes on embedded splits.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

/// Options of `patchtcga probe`.
#[derive(Args)]
pub struct ProbeArgs {
    /// The dataset the features were computed on (`patchtcga embed --images DIR`).
    #[arg(long)]
    dataset: PathBuf,
    /// Features from `patchtcga embed` (`.npy`, rows named in the `.csv` beside it).
    #[arg(long)]
    features: PathBuf,
    /// Split file relative to the dataset (default: the split folders of PCam200/segPANDA200).
    #[arg(long, default_value = "")]
    split: String,
    #[arg(long, default_value_t = 0)]
    trial: usize,
    /// Neighbours and temperature of the k-NN classifier.
    #[arg(long, default_value_t = 20)]
    k: i64,
    #[arg(long, default_value_t = 0.07)]
    temperature: f64,
    /// Where to write the reports (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A logistic-regression probe and a k-NN classifier on embedded splits.
pub fn probe(a: ProbeArgs) -> Result<()> {
    use patchtcga_learn::probe::{embedded_sets, knn_probs, LinearProbe};
    use patchtcga_metrics::ClassificationReport;

    let index = patchtcga_dataset::Index::scan(&a.dataset, None)?;
    let classes = index.entries.iter().map(|e| e.label as usize).max().unwrap_or(0) + 1;
    let [train, val, test] = embedded_sets(&index, &a.features, &a.split, a.trial)?;
    let train = train.context("the split's train set is empty")?;

    let linear = LinearProbe::select(&train, val.as_ref(), classes);
    let mut json = serde_json::json!({"features": a.features, "classes": classes, "train": train.labels.len(),
        "linear": {"weight_decay": linear.weight_decay}, "knn": {"k": a.k, "temperature": a.temperature}});
    println!("| classifier | set | images | accuracy (95 % CI) | balanced accuracy | ROC-AUC | F1 |");
    println!("|---|---|---|---|---|---|---|");
    for (set, f) in [("val", &val), ("test", &test)] {
        let Some(f) = f else { continue };
        let reports = [
            ("linear", ClassificationReport::new(&linear.probs(&f.x), &f.labels, classes)),
            (
                "knn",
                ClassificationReport::new(&knn_probs(&train, &f.x, classes, a.k, a.temperature), &f.labels, classes),
            ),
        ];
        for (name, r) in reports {
            let auc = r.roc_auc.map_or("n/a".to_owned(), |v| format!("{v:.4}"));
            println!(
                "| {name} | {set} | {} | {:.2} % ({:.2}–{:.2}) | {:.2} % | {auc} | {:.4} |",
                r.samples,
                100.0 * r.accuracy,
                100.0 * r.accuracy_ci[0],
                100.0 * r.accuracy_ci[1],
                100.0 * r.balanced_accuracy,
                r.f1
            );
            json[name][set] = serde_json::to_value(&r)?;
        }
    }
    if let Some(out) = &a.out {
        patchtcga_learn::engine::write_atomic(out, &serde_json::to_vec_pretty(&json)?)?;
        println!("reports → {}", out.display());
    }
    Ok(())
}
