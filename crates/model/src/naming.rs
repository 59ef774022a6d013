//! Checkpoint names of other ViT codebases turned into timm's, as timm's own checkpoint filters do:
//! Hugging Face `ViTModel` (Phikon: separate query/key/value, `encoder.layer.N.…` in transformers 4,
//! `layers.N.…` in 5) and DINOv2's
//! repository (`mlp.w12`/`mlp.w3`, `register_tokens`, chunked `blocks.C.N.`). Names are planned from
//! the listing alone, so a mismatch is found before any weight is read.

use std::collections::HashMap;

use tch::Tensor;

use crate::source::{Checkpoint, Listed};
use crate::ModelError;

/// How a timm-named tensor is made from the checkpoint's.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    One(usize),
    /// Concatenated along the first axis (query, key, value → `qkv`).
    Cat(Vec<usize>),
    /// DINOv2 with registers: the class token plus the first position embedding entry.
    ClsPlusPos {
        cls: usize,
        pos: usize,
    },
    /// DINOv2 with registers: the position embedding without the class token's entry.
    DropFirst(usize),
}

/// A tensor under its timm name, with its shape and where it comes from.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub name: String,
    pub shape: Vec<i64>,
    pub source: Source,
}

/// Every tensor of the checkpoint under timm's names (names timm already uses pass unchanged).
pub(crate) fn plan(tensors: &[Listed]) -> Vec<Planned> {
    let hf = tensors.iter().find_map(|t| t.name.strip_suffix("embeddings.patch_embeddings.projection.weight"));
    match hf {
        Some(prefix) => plan_hf(tensors, prefix),
        None => plan_dinov2(tensors),
    }
}

/// Reads a planned tensor.
pub(crate) fn read(ckpt: &Checkpoint, p: &Planned) -> Result<Tensor, ModelError> {
    let t = |i: usize| ckpt.read(&ckpt.tensors()[i]);
    Ok(match &p.source {
        Source::One(i) => t(*i)?,
        Source::Cat(parts) => Tensor::cat(&parts.iter().map(|&i| t(i)).collect::<Result<Vec<_>, _>>()?, 0),
        Source::ClsPlusPos { cls, pos } => t(*cls)? + t(*pos)?.narrow(1, 0, 1),
        Source::DropFirst(pos) => {
            let pos = t(*pos)?;
            let n = pos.size()[1];
            pos.narrow(1, 1, n - 1).contiguous()
        }
    })
}

fn one(t: &Listed, i: usize, name: String) -> Planned {
    Planned { name, shape: t.shape.clone(), source: Source::One(i) }
}

/// Query, key and value of a Hugging Face layer: transformers 4 (the files on the Hub) and 5.
const HF_QKV: [[&str; 3]; 2] = [
    ["attention.attention.query.", "attention.attention.key.", "attention.attention.value."],
    ["attention.q_proj.", "attention.k_proj.", "attention.v_proj."],
];

/// The rest of a Hugging Face layer, transformers 4 and 5, to timm.
const HF_LAYER: [(&str, &str); 8] = [
    ("layernorm_before.", "norm1."),
    ("attention.output.dense.", "attn.proj."),
    ("attention.o_proj.", "attn.proj."),
    ("layernorm_after.", "norm2."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
    ("mlp.fc1.", "mlp.fc1."),
    ("mlp.fc2.", "mlp.fc2."),
];

/// Hugging Face `ViTModel` names under `prefix` (e.g. `vit.`) to timm's.
fn plan_hf(tensors: &[Listed], prefix: &str) -> Vec<Planned> {
    let index: HashMap<&str, usize> = tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    let mut out = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let rest = t.name.strip_prefix(prefix).unwrap_or(&t.name);
        let layer = rest.strip_prefix("encoder.layer.").or_else(|| rest.strip_prefix("layers."));
        let planned = match layer.and_then(|r| r.split_once('.')) {
            Some((n, part)) => hf_layer(t, i, &format!("{prefix}blocks.{n}."), part, &index),
            None if t.name.starts_with(prefix) => Some(one(t, i, format!("{prefix}{}", hf_top(rest)))),
            None => Some(one(t, i, t.name.clone())),
        };
        out.extend(planned);
    }
    out
}

/// A tensor of a Hugging Face layer under timm's block name `block`; the key and value are taken
/// with the query (none for them alone).
fn hf_layer(t: &Listed, i: usize, block: &str, part: &str, index: &HashMap<&str, usize>) -> Option<Planned> {
    for names in HF_QKV {
        let sibling = |k: usize| index.get(t.name.replacen(names[0], names[k], 1).as_str()).copied();
        if let Some(leaf) = part.strip_prefix(names[0]) {
            if let (Some(k), Some(v)) = (sibling(1), sibling(2)) {
                let mut shape = t.shape.clone();
                shape[0] *= 3;
                let name = format!("{block}attn.qkv.{leaf}");
                return Some(Planned { name, shape, source: Source::Cat(vec![i, k, v]) });
            }
        }
        let query = |k: usize| index.contains_key(t.name.replacen(names[k], names[0], 1).as_str());
        if (part.starts_with(names[1]) && query(1)) || (part.starts_with(names[2]) && query(2)) {
            return None;
        }
    }
    let renamed =
        HF_LAYER.iter().find_map(|(from, to)| part.strip_prefix(from).map(|leaf| format!("{block}{to}{leaf}")));
    Some(one(t, i, renamed.unwrap_or_else(|| t.name.clone())))
}

/// A Hugging Face name outside the layers to timm's.
fn hf_top(rest: &str) -> String {
    match rest {
        "embeddings.cls_token" => "cls_token".to_owned(),
        "embeddings.position_embeddings" => "pos_embed".to_owned(),
        "embeddings.mask_token" => "mask_token".to_owned(),
        r => match r.strip_prefix("embeddings.patch_embeddings.projection.") {
            Some(leaf) => format!("patch_embed.proj.{leaf}"),
            None => r.strip_prefix("layernorm.").map(|leaf| format!("norm.{leaf}")).unwrap_or_else(|| r.to_owned()),
        },
    }
}

/// DINOv2's repository names to timm's (a no-op on timm names).
fn plan_dinov2(tensors: &[Listed]) -> Vec<Planned> {
    let index: HashMap<&str, usize> = tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    let registers: Vec<&str> = tensors.iter().filter_map(|t| t.name.strip_suffix("register_tokens")).collect();
    let mut out = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let name = unchunk(&t.name).replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.");
        let owner = registers.iter().find(|p| t.name.strip_prefix(**p).is_some_and(|r| !r.contains('.')));
        let planned = match (owner, t.name.rsplit('.').next()) {
            (Some(p), Some("register_tokens")) => one(t, i, format!("{p}reg_token")),
            (Some(p), Some("cls_token")) => match index.get(format!("{p}pos_embed").as_str()) {
                Some(&pos) => Planned { name, shape: t.shape.clone(), source: Source::ClsPlusPos { cls: i, pos } },
                None => one(t, i, name),
            },
            (Some(_), Some("pos_embed")) if t.shape.len() == 3 => {
                let shape = vec![t.shape[0], t.shape[1] - 1, t.shape[2]];
                Planned { name, shape, source: Source::DropFirst(i) }
            }
            _ => one(t, i, name),
        };
        out.push(planned);
    }
    out
}

/// DINOv2's chunked blocks (`blocks.C.N.…`, N counting over all chunks) to `blocks.N.…`.
fn unchunk(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match parts.iter().position(|p| *p == "blocks") {
        Some(b) if b + 2 < parts.len() && numeric(parts[b + 1]) && numeric(parts[b + 2]) => {
            let mut kept = parts.clone();
            kept.remove(b + 1);
            kept.join(".")
        }
        _ => name.to_owned(),
    }
}

/// The codebase whose parameter names a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// timm's (and torchvision's): patchtcga's own.
    Timm,
    /// Hugging Face `ViTModel`, as transformers 4 writes it (the files on the Hub).
    HuggingFace,
    /// DINOv2's repository.
    Dinov2,
}

/// timm-named backbone tensors renamed (and split) for `naming`, the inverse of the import; `swiglu`
/// says whether the MLPs are DINOv2's `w12`/`w3`.
pub(crate) fn to_reference(naming: Naming, swiglu: bool, tensors: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    match naming {
        Naming::Timm => tensors,
        Naming::HuggingFace => tensors.into_iter().flat_map(|(n, t)| to_hf(&n, t)).collect(),
        Naming::Dinov2 => {
            let width = tensors.iter().find(|(n, _)| n == "cls_token").map(|(_, t)| t.size()[2]);
            let rename = |n: String| match swiglu {
                true => n.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3."),
                false => n,
            };
            let mut out: Vec<_> = tensors.into_iter().map(|(n, t)| (rename(n), t)).collect();
            // DINOv2's ViT has a mask token (used only in training); zeros keep its loader strict.
            if let Some(d) = width {
                out.push(("mask_token".to_owned(), Tensor::zeros([1, d], (tch::Kind::Float, tch::Device::Cpu))));
            }
            out
        }
    }
}

/// One timm tensor under transformers 4's `ViTModel` names (`qkv` split in three).
fn to_hf(name: &str, t: Tensor) -> Vec<(String, Tensor)> {
    let top = match name {
        "cls_token" => Some("embeddings.cls_token".to_owned()),
        "pos_embed" => Some("embeddings.position_embeddings".to_owned()),
        n => n
            .strip_prefix("patch_embed.proj.")
            .map(|leaf| format!("embeddings.patch_embeddings.projection.{leaf}"))
            .or_else(|| n.strip_prefix("norm.").map(|leaf| format!("layernorm.{leaf}"))),
    };
    if let Some(n) = top {
        return vec![(n, t)];
    }
    let Some((block, part)) = name.strip_prefix("blocks.").and_then(|r| r.split_once('.')) else {
        return vec![(name.to_owned(), t)];
    };
    let layer = format!("encoder.layer.{block}.");
    if let Some(leaf) = part.strip_prefix("attn.qkv.") {
        let third = t.size()[0] / 3;
        return HF_QKV[0]
            .iter()
            .enumerate()
            .map(|(k, hf)| (format!("{layer}{hf}{leaf}"), t.narrow(0, k as i64 * third, third).contiguous()))
            .collect();
    }
    let hf = [
        ("norm1.", "layernorm_before."),
        ("attn.proj.", "attention.output.dense."),
        ("norm2.", "layernorm_after."),
        ("mlp.fc1.", "intermediate.dense."),
        ("mlp.fc2.", "output.dense."),
    ]
    .iter()
    .find_map(|(from, to)| part.strip_prefix(from).map(|leaf| format!("{layer}{to}{leaf}")));
    vec![(hf.unwrap_or_else(|| name.to_owned()), t)]
}

#[cfg(test)]
mod tests {
    use super::unchunk;

    #[test]
    fn chunked_blocks_lose_their_chunk() {
        assert_eq!(unchunk("teacher.backbone.blocks.1.7.norm1.weight"), "teacher.backbone.blocks.7.norm1.weight");
        assert_eq!(unchunk("blocks.7.norm1.weight"), "blocks.7.norm1.weight");
        assert_eq!(unchunk("blocks.7.mlp.fc1.weight"), "blocks.7.mlp.fc1.weight");
    }
}
