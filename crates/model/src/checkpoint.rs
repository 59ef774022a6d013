//! Reading PyTorch checkpoints (`torch.save` zip archives and safetensors) and loading them into
//! a model by name, whatever wrapper the training code put around the weights.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::Path;

use tch::{nn, Kind, Tensor};

use crate::pickle::{self, TensorRef, Value};
use crate::vit::{resample_pos_embed, PosResample};
use crate::ModelError;

fn bad(path: &Path, cause: impl Into<String>) -> ModelError {
    ModelError::Checkpoint { path: path.to_path_buf(), cause: cause.into() }
}

/// Every tensor in a checkpoint, named by its path through the nested dicts
/// (`state_dict.module.encoder_q.conv1.weight`), in file order.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    let mut head = [0u8; 16];
    let n = File::open(path).and_then(|mut f| f.read(&mut head)).map_err(|e| bad(path, e.to_string()))?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        read_pth(path)
    } else if head.len() >= 9 && head[8] == b'{' {
        Tensor::read_safetensors(path).map_err(|e| bad(path, format!("not a readable safetensors file: {e}")))
    } else if head.starts_with(&[0x80, 0x02, 0x8a]) {
        Err(bad(
            path,
            "a legacy (PyTorch < 1.6) torch.save file; re-save it with torch.save(obj, path) in a recent PyTorch",
        ))
    } else {
        Err(bad(path, "neither a PyTorch zip checkpoint (.pth/.pt) nor safetensors"))
    }
}

fn kind_of(storage: &str) -> Option<Kind> {
    Some(match storage {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    let file = File::open(path).map_err(|e| bad(path, e.to_string()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(path, format!("broken zip archive: {e}")))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .map(str::to_owned)
        .ok_or_else(|| {
            bad(path, "no data.pkl in the archive (a TorchScript file? use torch.save(model.state_dict()))")
        })?;
    let root = pkl_name.trim_end_matches("data.pkl").to_owned();
    let mut entry = |name: &str| -> Result<Vec<u8>, ModelError> {
        let mut f = zip.by_name(name).map_err(|e| bad(path, format!("{name}: {e}")))?;
        let mut buf = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut buf).map_err(|e| bad(path, format!("{name}: {e} (truncated download?)")))?;
        Ok(buf)
    };
    if let Ok(order) = entry(&format!("{root}byteorder")) {
        if order != b"little" {
            return Err(bad(path, "written on a big-endian machine; not supported"));
        }
    }
    let value = pickle::parse(&entry(&pkl_name)?).map_err(|e| bad(path, format!("data.pkl: {}", e.0)))?;
    let mut refs = Vec::new();
    flatten(&value, String::new(), &mut refs);
    if refs.is_empty() {
        return Err(bad(path, "holds no tensors"));
    }
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = Vec::with_capacity(refs.len());
    for (name, t) in refs {
        let s = &t.storage;
        let kind =
            kind_of(&s.dtype).ok_or_else(|| bad(path, format!("{name}: unsupported storage type {}", s.dtype)))?;
        if !storages.contains_key(&s.key) {
            let bytes = entry(&format!("{root}data/{}", s.key))?;
            if bytes.len() as i64 != s.numel * kind.elt_size_in_bytes() as i64 {
                return Err(bad(
                    path,
                    format!(
                        "storage {} of {name} has {} bytes, expected {}",
                        s.key,
                        bytes.len(),
                        s.numel * kind.elt_size_in_bytes() as i64
                    ),
                ));
            }
            let base = Tensor::f_from_data_size(&bytes, &[s.numel], kind).map_err(|e| bad(path, e.to_string()))?;
            storages.insert(s.key.clone(), base);
        }
        let base = &storages[&s.key];
        let last = t.offset + t.size.iter().zip(&t.stride).map(|(n, st)| (n - 1).max(0) * st).sum::<i64>();
        if t.size.iter().all(|&n| n > 0) && (t.offset < 0 || last >= s.numel) {
            return Err(bad(path, format!("{name} reaches past its storage")));
        }
        let view = base
            .f_as_strided(t.size.as_slice(), t.stride.as_slice(), t.offset)
            .map_err(|e| bad(path, e.to_string()))?;
        out.push((name, view.contiguous()));
    }
    Ok(out)
}

fn key_name(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn flatten(v: &Value, prefix: String, out: &mut Vec<(String, TensorRef)>) {
    let join = |k: &str| if prefix.is_empty() { k.to_owned() } else { format!("{prefix}.{k}") };
    match v {
        Value::Tensor(t) => out.push((prefix, t.clone())),
        Value::Dict(items) => {
            for (k, v) in items {
                if let Some(k) = key_name(k) {
                    flatten(v, join(&k), out);
                }
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(v, join(&i.to_string()), out);
            }
        }
        Value::Object { state: Some(state), .. } => flatten(state, prefix, out),
        _ => {}
    }
}

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
    /// Position embeddings resampled to the model's grid.
    pub resized: Vec<String>,
    /// Checkpoint heads left out (projection MLPs, classifiers of another task).
    pub skipped_heads: Vec<String>,
    /// Tensors outside the prefix (a momentum encoder, a DINO head, optimizer state).
    pub outside_prefix: usize,
    /// Problems tolerated under `allow_partial`.
    pub warnings: Vec<String>,
}

/// Parts of a training network around the backbone (classifiers, projectors, MAE's decoder,
/// patchtcga's momentum targets).
fn is_training_part(name: &str) -> bool {
    ["head.", "fc.", "decoder", "mask_token", "projector.", "predictor.", "projection_head.", "classifier.", "target."]
        .iter()
        .any(|p| name.starts_with(p))
        // Training state beside a momentum network: DINO's centre, MoCo's queue.
        || ["center", "queue", "queue_ptr"].contains(&name)
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

/// Loads a checkpoint into `vs` by name; `head` is the model's classifier name (`fc` / `head`).
///
/// Names are matched after stripping the wrapper's prefix (`module.`, `module.encoder_q.`,
/// `teacher.backbone.`, `model.`, …, or [`ImportOptions::prefix`]). `num_batches_tracked` is
/// ignored; a `pos_embed` of another grid is resampled. Unknown, missing and mis-shaped names
/// fail the import with a list, unless [`ImportOptions::allow_partial`].
// Matching, resampling and the mismatch report share the name maps built at the top; kept as one
// pass so the report lists every mismatch of the file at once.
pub fn load(vs: &nn::VarStore, path: &Path, head: &str, opts: &ImportOptions) -> Result<ImportReport, ModelError> {
    let tensors = read_tensors(path)?;
    let vars = vs.variables();
    let is_head = |n: &str| n.starts_with(head) && n[head.len()..].starts_with('.');
    let wanted: BTreeMap<String, Vec<i64>> =
        vars.iter().filter(|(n, _)| opts.with_head || !is_head(n)).map(|(n, t)| (n.clone(), t.size())).collect();
    let names: Vec<&str> =
        tensors.iter().map(|(n, _)| n.as_str()).filter(|n| !n.ends_with("num_batches_tracked")).collect();
    let prefix = match &opts.prefix {
        Some(p) => p.clone(),
        None => find_prefix(&names, &wanted).ok_or_else(|| {
            bad(
                path,
                format!(
                    "no tensor name matches the model's ({})",
                    list(&wanted.keys().take(3).cloned().collect::<Vec<_>>())
                ),
            )
        })?,
    };
    let mut report = ImportReport { prefix: prefix.clone(), ..Default::default() };
    let (mut unexpected, mut mismatched) = (Vec::new(), Vec::new());
    let mut loaded = std::collections::HashSet::new();
    tch::no_grad(|| -> Result<(), ModelError> {
        for (name, t) in &tensors {
            let Some(short) = name.strip_prefix(prefix.as_str()) else {
                report.outside_prefix += 1;
                continue;
            };
            if short.ends_with("num_batches_tracked") {
                continue;
            }
            if !opts.with_head && is_head(short) {
                report.skipped_heads.push(short.to_owned());
                continue;
            }
            let Some(mut var) = vars.get(short).map(Tensor::shallow_clone) else {
                if is_head(short) || is_training_part(short) {
                    report.skipped_heads.push(short.to_owned());
                } else {
                    unexpected.push(short.to_owned());
                }
                continue;
            };
            let mut src = t.shallow_clone();
            if src.size() != var.size() && short == "pos_embed" && src.dim() == 3 && var.dim() == 3 {
                let g = (((var.size()[1] - 1) as f64).sqrt()).round() as i64;
                let sg = (((src.size()[1] - 1) as f64).sqrt()).round() as i64;
                if sg * sg + 1 == src.size()[1] && src.size()[2] == var.size()[2] {
                    src = resample_pos_embed(&src, g, g, PosResample::Timm);
                    report.resized.push(format!("pos_embed {sg}×{sg} → {g}×{g}"));
                }
            }
            if src.size() != var.size() {
                mismatched.push(format!("{short} (checkpoint {:?}, model {:?})", src.size(), var.size()));
                continue;
            }
            var.f_copy_(&src.to_kind(var.kind()).to_device(var.device())).map_err(|e| bad(path, e.to_string()))?;
            loaded.insert(short.to_owned());
        }
        Ok(())
    })?;
    report.loaded = loaded.len();
    let missing: Vec<String> = wanted.keys().filter(|k| !loaded.contains(*k)).cloned().collect();
    let mut problems = Vec::new();
    if !mismatched.is_empty() {
        problems.push(format!("{} with other shapes: {}", mismatched.len(), list(&mismatched)));
    }
    if !missing.is_empty() {
        problems.push(format!("{} missing from the checkpoint: {}", missing.len(), list(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!("{} the model does not have: {}", unexpected.len(), list(&unexpected)));
    }
    if !problems.is_empty() {
        let where_ = if prefix.is_empty() { String::new() } else { format!(" under prefix {prefix:?}") };
        if !opts.allow_partial || report.loaded == 0 {
            let hint = if opts.allow_partial { "" } else { " (--allow-partial loads what matches)" };
            return Err(bad(path, format!("tensors{where_} do not fit the model — {}{hint}", problems.join("; "))));
        }
        report.warnings = problems;
    }
    Ok(report)
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
