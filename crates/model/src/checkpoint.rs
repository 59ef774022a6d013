//! Loading PyTorch checkpoints into a model by name, whatever wrapper the training code put around
//! the weights and whichever ViT codebase named them, one tensor at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::{nn, Tensor};

use crate::inception::{TransformChoice, TransformInput};
use crate::naming::{self, Planned, Source};
use crate::source::{bad, Checkpoint};
use crate::{Arch, Backbone, ModelError};

/// How to map a checkpoint onto a model.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Take exactly the tensors under this prefix (e.g. `module.encoder_q.`); found automatically
    /// when `None`.
    pub prefix: Option<String>,
    /// Load what matches and warn about the rest (PyTorch's `strict=False`), instead of failing.
    pub allow_partial: bool,
    /// Also load the classification head (`fc` / `head`); by default only the backbone.
    pub with_head: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// The prefix stripped from checkpoint names.
    pub prefix: String,
    pub loaded: usize,
    /// Position embeddings of another grid than the model's, kept at their own grid (the
    /// forward resamples them to each input's grid by the architecture's rule, as timm and DINOv2 do).
    pub resized: Vec<String>,
    /// Checkpoint heads left out (projection MLPs, classifiers of another task).
    pub skipped_heads: Vec<String>,
    /// Tensors outside the prefix (a momentum encoder, a DINO head, optimizer state).
    pub outside_prefix: usize,
    /// Problems tolerated under `allow_partial`.
    pub warnings: Vec<String>,
    /// Inception's input transform and why (for Inception only).
    pub transform_input: Option<TransformChoice>,
}

/// `weights.pth: 320 tensors loaded (prefix "module.encoder_q."), 4 head tensors left out`, then a
/// line per warning and per resized position embedding.
impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} tensors loaded (prefix {:?})", self.loaded, self.prefix)?;
        if !self.skipped_heads.is_empty() {
            write!(f, ", {} head tensors left out", self.skipped_heads.len())?;
        }
        if self.outside_prefix > 0 {
            write!(f, ", {} tensors outside the prefix ignored", self.outside_prefix)?;
        }
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        for r in &self.resized {
            write!(f, "\n{r}")?;
        }
        if let Some(t) = &self.transform_input {
            write!(f, "\n{t}")?;
        }
        Ok(())
    }
}

/// A backbone and the weights to put in it, as the commands that embed, export or infer take them.
#[derive(Debug, Clone, clap::Args)]
pub struct BackboneWeights {
    /// Backbone: resnet18, resnet50, vit-s16, vit-b16, vit-b32, vit-l16, or a foundation-model
    /// preset: uni, uni2-h, virchow, virchow2, h-optimus-0, gigapath, phikon, dinov2-s14, dinov2-b14,
    /// dinov2-l14, dinov2-g14.
    #[arg(long)]
    pub arch: Arch,
    /// Weights: a .pth/.pt/.bin (torch.save) or .safetensors file in any upstream wrapper and in
    /// timm's, DINOv2's or Hugging Face's names, a sharded `*.safetensors.index.json`, a Hugging Face
    /// snapshot folder, or a run's model.safetensors.
    #[arg(long)]
    pub weights: PathBuf,
    /// Take the tensors under this prefix (default: found automatically).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Load what matches and warn about the rest (PyTorch's strict=False).
    #[arg(long)]
    pub allow_partial: bool,
    /// Inception v3's input transform (torchvision's transform_input): `auto` follows what the
    /// weights file records (patchtcga's runs and exports), else on as torchvision's ImageNet
    /// weights need it; `off` for torchvision's inception_v3(weights=None) models.
    #[arg(long, value_enum, default_value_t = TransformInput::Auto)]
    pub transform_input: TransformInput,
}

impl BackboneWeights {
    /// The backbone for `image_size` inputs on `device` with its weights loaded, and what the
    /// import did. A foundation model's error names where its weights are published.
    pub fn load(
        &self,
        image_size: i64,
        device: tch::Device,
    ) -> Result<(nn::VarStore, Backbone, ImportReport), ModelError> {
        let (spec, transform) = self.arch.spec_for_weights(image_size, &self.weights, self.transform_input)?;
        let vs = nn::VarStore::new(device);
        let backbone = Backbone::new(&vs.root(), spec);
        let opts = ImportOptions { prefix: self.prefix.clone(), allow_partial: self.allow_partial, with_head: false };
        let mut report = load(&vs, &self.weights, spec.head_name(), &opts).map_err(|e| match self.arch {
            Arch::Foundation(f) => ModelError::Arch(format!("{e}\n{f} takes the weights published at {}", f.source())),
            _ => e,
        })?;
        report.transform_input = transform;
        Ok((vs, backbone, report))
    }
}

/// Parts of a training network around the backbone (classifiers, projectors, MAE's decoder,
/// patchtcga's momentum targets).
fn is_training_part(name: &str) -> bool {
    ["head.", "fc.", "decoder", "mask_token", "projector.", "predictor.", "projection_head.", "classifier.", "target.", "pooler.", "AuxLogits."]
        .iter()
        .any(|p| name.starts_with(p))
        // Training state beside a momentum network: DINO's centre, MoCo's queue.
        || ["center", "queue", "queue_ptr"].contains(&name)
}

/// Inception v3's auxiliary classifier: loaded with the backbone where the checkpoint has it in the
/// same shape (its convolutions; its `fc` is of the checkpoint's task), never required.
fn is_auxiliary(name: &str) -> bool {
    name.starts_with("AuxLogits.")
}

/// Scores a candidate prefix for ties: the network people evaluate wins over its twin.
fn preference(prefix: &str) -> i32 {
    let mut s = 0;
    for (word, w) in
        [("teacher", 4), ("encoder_q", 4), ("online", 4), ("target", -4), ("encoder_k", -4), ("student", -2)]
    {
        if prefix.contains(word) {
            s += w;
        }
    }
    s
}

/// The prefix under which most of the model's names appear in the checkpoint.
fn find_prefix(names: &[&str], wanted: &BTreeMap<String, Vec<i64>>) -> Option<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for name in names {
        if wanted.contains_key(*name) {
            *counts.entry("").or_default() += 1;
        }
        for (i, _) in name.match_indices('.') {
            if wanted.contains_key(&name[i + 1..]) {
                *counts.entry(&name[..=i]).or_default() += 1;
            }
        }
    }
    counts.into_iter().max_by_key(|(p, c)| (*c, preference(p), std::cmp::Reverse(p.len()))).map(|(p, _)| p.to_owned())
}

fn list(items: &[String]) -> String {
    let shown: Vec<_> = items.iter().take(12).cloned().collect();
    let more = if items.len() > 12 { format!(" … and {} more", items.len() - 12) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

/// The prefix count (class and register tokens) and grid side of a position embedding of `tokens`
/// entries: the grid is the largest square that fits, the prefix what is left (always fewer than
/// 2·side + 1 tokens).
fn pos_layout(tokens: i64) -> (i64, i64) {
    let g = (tokens.max(0) as f64).sqrt().floor() as i64;
    (tokens - g * g, g)
}

/// What the mapping of checkpoint names onto the model found, before any tensor is read.
struct Matching<'a> {
    /// Tensors to copy in, and whether the variable takes the tensor's shape (a `pos_embed` of another grid).
    take: Vec<(&'a Planned, bool)>,
    /// Names and their description, the model-wide ones (embeddings, norms) first.
    mismatched: Vec<(String, String)>,
    unexpected: Vec<String>,
}

/// Loads a checkpoint into `vs` by name; `head` is the model's classifier name (`fc` / `head`).
///
/// Names are matched after stripping the wrapper's prefix (`module.`, `module.encoder_q.`,
/// `teacher.backbone.`, `model.`, …, or [`ImportOptions::prefix`]) and turning Hugging Face
/// `ViTModel` and DINOv2 names into timm's. `num_batches_tracked` is ignored; a `pos_embed` of
/// another grid is resampled (timm's rule). Unknown, missing and mis-shaped names fail the import
/// with a list, before any weight is read, unless [`ImportOptions::allow_partial`]. Tensors are
/// read and copied one at a time, so memory holds the model plus one tensor.
pub fn load(vs: &nn::VarStore, path: &Path, head: &str, opts: &ImportOptions) -> Result<ImportReport, ModelError> {
    let ckpt = Checkpoint::open(path)?;
    let planned = naming::plan(ckpt.tensors());
    let vars = vs.variables();
    let is_head = |n: &str| n.starts_with(head) && n[head.len()..].starts_with('.');
    let wanted: BTreeMap<String, Vec<i64>> = vars
        .iter()
        .filter(|(n, _)| opts.with_head || !(is_head(n) || is_auxiliary(n)))
        .map(|(n, t)| (n.clone(), t.size()))
        .collect();
    let names: Vec<&str> =
        planned.iter().map(|p| p.name.as_str()).filter(|n| !n.ends_with("num_batches_tracked")).collect();
    let prefix = match &opts.prefix {
        Some(p) => p.clone(),
        None => find_prefix(&names, &wanted).ok_or_else(|| {
            let some = list(&wanted.keys().take(3).cloned().collect::<Vec<_>>());
            bad(path, format!("no tensor name matches the model's ({some})"))
        })?,
    };
    let mut report = ImportReport { prefix: prefix.clone(), ..Default::default() };
    let m = match_names(&planned, &prefix, &vars, &is_head, opts.with_head, &mut report);
    let loaded: std::collections::HashSet<String> = m
        .take
        .iter()
        .filter(|(p, _)| !p.name.ends_with("num_batches_tracked"))
        .map(|(p, _)| p.name[prefix.len()..].to_owned())
        .collect();
    report.loaded = loaded.len();
    let misfit: std::collections::HashSet<&str> = m.mismatched.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<String> =
        wanted.keys().filter(|k| !loaded.contains(*k) && !misfit.contains(k.as_str())).cloned().collect();
    check_fit(path, &prefix, &m, &missing, opts.allow_partial, &mut report)?;
    copy_in(&ckpt, &m.take, &prefix, &vars)?;
    Ok(report)
}

/// Pairs each planned tensor with a model variable by name and shape (a `pos_embed` of another
/// grid is paired to take the checkpoint's shape).
fn match_names<'a>(
    planned: &'a [Planned],
    prefix: &str,
    vars: &HashMap<String, Tensor>,
    is_head: &dyn Fn(&str) -> bool,
    with_head: bool,
    report: &mut ImportReport,
) -> Matching<'a> {
    let mut m = Matching { take: Vec::new(), mismatched: Vec::new(), unexpected: Vec::new() };
    for p in planned {
        let Some(short) = p.name.strip_prefix(prefix) else {
            report.outside_prefix += 1;
            continue;
        };
        if short.ends_with("num_batches_tracked") {
            continue;
        }
        if !with_head && is_head(short) {
            report.skipped_heads.push(short.to_owned());
            continue;
        }
        let Some(var) = vars.get(short) else {
            if is_head(short) || is_training_part(short) {
                report.skipped_heads.push(short.to_owned());
            } else {
                m.unexpected.push(short.to_owned());
            }
            continue;
        };
        let want = var.size();
        if p.shape == want {
            m.take.push((p, false));
            continue;
        }
        if !with_head && is_auxiliary(short) {
            report.skipped_heads.push(short.to_owned());
            continue;
        }
        if short == "pos_embed" && p.shape.len() == 3 && want.len() == 3 && p.shape[2] == want[2] {
            let ((k, g), (sk, sg)) = (pos_layout(want[1]), pos_layout(p.shape[1]));
            if k == sk {
                m.take.push((p, true));
                report.resized.push(format!(
                    "pos_embed kept at its {sg}×{sg} grid (the model's default is {g}×{g}; resampled per input)"
                ));
                continue;
            }
        }
        m.mismatched.push((short.to_owned(), format!("{short} (checkpoint {:?}, model {want:?})", p.shape)));
    }
    m.mismatched.sort_by_key(|(n, _)| n.contains("blocks.") || n.contains("layer"));
    m
}

/// Fails the import on any mismatch, or records them as warnings under `allow_partial`.
fn check_fit(
    path: &Path,
    prefix: &str,
    m: &Matching,
    missing: &[String],
    allow_partial: bool,
    report: &mut ImportReport,
) -> Result<(), ModelError> {
    let mut problems = Vec::new();
    if !m.mismatched.is_empty() {
        let described: Vec<String> = m.mismatched.iter().map(|(_, d)| d.clone()).collect();
        problems.push(format!("{} with other shapes: {}", described.len(), list(&described)));
    }
    if !missing.is_empty() {
        problems.push(format!("{} missing from the checkpoint: {}", missing.len(), list(missing)));
    }
    if !m.unexpected.is_empty() {
        problems.push(format!("{} the model does not have: {}", m.unexpected.len(), list(&m.unexpected)));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let where_ = if prefix.is_empty() { String::new() } else { format!(" under prefix {prefix:?}") };
    if !allow_partial || report.loaded == 0 {
        let hint = if allow_partial { "" } else { " (--allow-partial loads what matches)" };
        return Err(bad(path, format!("tensors{where_} do not fit the model — {}{hint}", problems.join("; "))));
    }
    report.warnings = problems;
    Ok(())
}

/// Reads each matched tensor and copies it into its variable, one at a time (straight from the
/// file's map where the tensor is stored as it is); a variable marked to take the checkpoint's
/// shape (a position embedding of another grid) is given the tensor's shape and values.
fn copy_in(
    ckpt: &Checkpoint,
    take: &[(&Planned, bool)],
    prefix: &str,
    vars: &HashMap<String, Tensor>,
) -> Result<(), ModelError> {
    let path = ckpt.path();
    let into = |var: &Tensor, src: &Tensor| {
        var.shallow_clone()
            .f_copy_(&src.to_kind(var.kind()).to_device(var.device()))
            .map_err(|e| bad(path, e.to_string()))
    };
    tch::no_grad(|| {
        for (p, reshape) in take {
            let var = &vars[&p.name[prefix.len()..]];
            match (&p.source, reshape) {
                (Source::One(i), false) => ckpt.with_view(&ckpt.tensors()[*i], |src| into(var, src))??,
                (_, false) => into(var, &naming::read(ckpt, p)?)?,
                (_, true) => {
                    let src = naming::read(ckpt, p)?.to_kind(var.kind()).to_device(var.device());
                    // Every holder of the variable (the model's field) shares its storage.
                    var.shallow_clone().f_set_data(&src).map_err(|e| bad(path, e.to_string()))?
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_evaluated_twin_wins_a_tie_of_prefixes() {
        let wanted: BTreeMap<String, Vec<i64>> =
            [("conv1.weight", vec![1]), ("fc.weight", vec![1])].into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let byol = [
            "target_network.encoder.conv1.weight",
            "online_network.encoder.conv1.weight",
            "online_network.encoder.fc.weight",
            "target_network.encoder.fc.weight",
        ];
        assert_eq!(find_prefix(&byol, &wanted).as_deref(), Some("online_network.encoder."));
        let more = ["a.conv1.weight", "a.fc.weight", "teacher.conv1.weight"];
        assert_eq!(find_prefix(&more, &wanted).as_deref(), Some("a."), "the count decides before the names");
        assert_eq!(find_prefix(&["x.y"], &wanted), None);
    }
}
