//! The foundation-model presets against timm, transformers and DINOv2's naming (goldens from
//! tools/make_foundation_goldens.py: 2 blocks at full width, 224 and 112 px).

use patchtcga_model::naming::Naming;
use patchtcga_model::vit::{Pool, VitConfig};
use patchtcga_model::{load, reference_names, Arch, Backbone, Foundation, ImportOptions, Spec};
use serde_json::Value;
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

mod common;
use common::{det, det_input, floats, json, rel_err};

/// The preset at the goldens' depth.
fn reduced(f: Foundation, depth: i64) -> VitConfig {
    VitConfig { depth, ..f.config() }
}

fn golden() -> Value {
    json("foundation.json")
}

fn check(f: Foundation, model: &Backbone, g: &Value) {
    for side in [224, 112] {
        let key = format!("{f}@{side}");
        let x = det_input(&[1, 3, side, side]);
        let y = tch::no_grad(|| model.forward_t(&x, false));
        let shape: Vec<i64> =
            g[&key]["features_shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(y.size(), shape, "{key}");
        let e = rel_err(&y, &floats(&g[&key]["features"]));
        assert!(e <= 1e-4, "{key}: features rel. error {e:.2e}");
    }
}

/// Fills the model with the goldens' deterministic weights under timm's names.
fn timm_filled(f: Foundation, depth: i64) -> (nn::VarStore, Backbone) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Backbone::new(&vs.root(), Spec::Vit(reduced(f, depth)));
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            t.copy_(&det(&name, &t.size()));
        }
    });
    (vs, model)
}

#[test]
fn timm_presets_match_timm_at_the_native_size_and_another() {
    tch::set_num_threads(2);
    let g = golden();
    let depth = g["depth"].as_i64().unwrap();
    let timm_named = Foundation::ALL.into_iter().filter(|f| f.naming() == Naming::Timm).collect::<Vec<_>>();
    assert_eq!(timm_named.len(), 9, "uni, uni2-h, virchow, virchow2(-cls), h-optimus-0/1, gigapath, conch-v15");
    for f in timm_named {
        let (_vs, model) = timm_filled(f, depth);
        check(f, &model, &g);
    }
}

/// Writes the golden's checkpoint with `det` values under the names of `field` (aligned with
/// `checkpoint`, whose names the values are made from) with `prefix` before them, as safetensors.
fn checkpoint_file(g: &Value, key: &str, field: &str, prefix: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let entries = |f: &str| g[key][f].as_array().unwrap().clone();
    let tensors: Vec<(String, Tensor)> = entries("checkpoint")
        .iter()
        .zip(entries(field))
        .map(|(made, named)| {
            let shape: Vec<i64> = made[1].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            (format!("{prefix}{}", named[0].as_str().unwrap()), det(made[0].as_str().unwrap(), &shape))
        })
        .collect();
    let path = dir.join(format!("{key}-{field}.safetensors"));
    Tensor::write_safetensors(&tensors, &path).unwrap();
    path
}

/// Phikon's Hugging Face names (transformers 5, and 4 as on the Hub, under a `vit.` wrapper too) and
/// DINOv2's own load without options and match the reference.
#[test]
fn hugging_face_and_dinov2_names_load_and_match() {
    tch::set_num_threads(2);
    let g = golden();
    let depth = g["depth"].as_i64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (Foundation::Phikon, "checkpoint", ""),
        (Foundation::Phikon, "checkpoint_transformers4", ""),
        (Foundation::Phikon, "checkpoint_transformers4", "vit."),
        (Foundation::Dinov2S14, "checkpoint", ""),
        (Foundation::Dinov2G14, "checkpoint", "teacher.backbone."),
    ];
    for (f, field, prefix) in cases {
        let file = checkpoint_file(&g, &format!("{f}@224"), field, prefix, dir.path());
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = Spec::Vit(reduced(f, depth));
        let model = Backbone::new(&vs.root(), spec);
        let r = load(&vs, &file, spec.head_name(), &ImportOptions::default()).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(r.loaded, vs.variables().len(), "{f}: every variable loaded");
        assert!(r.resized.is_empty(), "{f}: the preset keeps the checkpoint's grid");
        check(f, &model, &g);
    }
}

/// timm's DINOv2 made at 224 px (a 16 × 16 position grid, as users fine-tune it) embeds as timm
/// does under `dinov2-s14` (whose default grid is 37 × 37): the checkpoint's grid is kept, not
/// resampled to 37 × 37 on load and back to 16 × 16 in the forward (which cost 4.3e-4).
#[test]
fn a_dinov2_made_at_224_px_keeps_its_grid_and_matches_timm() {
    tch::set_num_threads(2);
    let g = golden();
    let key = "dinov2-s14-timm224@224";
    let dir = tempfile::tempdir().unwrap();
    let file = checkpoint_file(&g, key, "checkpoint", "", dir.path());
    let vs = nn::VarStore::new(Device::Cpu);
    let spec = Spec::Vit(reduced(Foundation::Dinov2S14, g["depth"].as_i64().unwrap()));
    let model = Backbone::new(&vs.root(), spec);
    let r = load(&vs, &file, spec.head_name(), &ImportOptions::default()).unwrap();
    assert_eq!(r.loaded, vs.variables().len());
    assert_eq!(r.resized.len(), 1, "{r}");
    assert_eq!(vs.variables()["pos_embed"].size(), [1, 1 + 16 * 16, 384], "the checkpoint's grid is kept");
    let y = tch::no_grad(|| model.forward_t(&det_input(&[1, 3, 224, 224]), false));
    let e = rel_err(&y, &floats(&g[key]["features"]));
    assert!(e <= 1e-5, "rel. error {e:.2e}");
}

/// CONCH v1.5 at its native 448 px (DINO's resampling of the 14 × 14 grid), loaded from a
/// `torch.save` file in the published layout (`trunk.*`, `attn_pool_contrast.*`, `ln_contrast`).
#[test]
fn conch_v15_matches_its_vision_tower_at_448_px_from_the_published_names() {
    let g = golden();
    let depth = g["depth"].as_i64().unwrap();
    let (vs, _) = timm_filled(Foundation::ConchV15, depth);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pytorch_model_vision.bin");
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    assert!(named.iter().any(|(n, _)| n == "attn_pool_contrast.to_kv.weight"));
    assert!(named.iter().all(|(n, _)| n.starts_with("trunk.")
        || n.starts_with("attn_pool_contrast.")
        || n.starts_with("ln_contrast.")));
    patchtcga_model::write_pth(&file, &named).unwrap();
    let fresh = nn::VarStore::new(Device::Cpu);
    let model = Backbone::new(&fresh.root(), Spec::Vit(reduced(Foundation::ConchV15, depth)));
    let report = load(&fresh, &file, "head", &ImportOptions::default()).unwrap();
    assert_eq!((report.prefix.as_str(), report.loaded), ("", named.len()));
    let x = det_input(&[1, 3, 448, 448]);
    let y = tch::no_grad(|| model.forward_t(&x, false));
    assert_eq!(y.size(), [1, 768]);
    let e = rel_err(&y, &floats(&g["conch-v15@448"]["features"]));
    assert!(e <= 1e-4, "conch-v15@448: features rel. error {e:.2e}");
}

#[test]
fn presets_parse_by_name_and_report_their_widths() {
    for f in Foundation::ALL {
        let arch: Arch = f.name().to_uppercase().replace('-', "_").parse().unwrap();
        assert_eq!(arch, Arch::Foundation(f));
        assert_eq!(arch.to_string(), f.name());
    }
    let width = |f: Foundation| Arch::Foundation(f).spec(224).feature_dim();
    assert_eq!(width(Foundation::Virchow2), 2560, "class token ⊕ patch mean");
    assert_eq!(width(Foundation::Uni), 1024);
    assert_eq!(width(Foundation::HOptimus0), 1536);
    assert_eq!(width(Foundation::Virchow2Cls), 1280, "the class token alone");
    assert_eq!(Foundation::HOptimus1.stats(), Foundation::HOptimus0.stats());
    assert_eq!(width(Foundation::ConchV15), 768, "the contrastive pooler's width");
    assert_eq!(Foundation::Virchow2.config().pool, Pool::ClsAndPatchMean);
    assert_ne!(Foundation::HOptimus0.stats(), Foundation::Uni.stats());
}

/// A checkpoint of another preset is refused with one message naming the mismatched tensors.
#[test]
fn another_presets_checkpoint_is_refused_naming_the_mismatches() {
    let g = golden();
    let dir = tempfile::tempdir().unwrap();
    let file = checkpoint_file(&g, "dinov2-s14@224", "checkpoint", "", dir.path());
    let vs = nn::VarStore::new(Device::Cpu);
    let spec = Spec::Vit(reduced(Foundation::Dinov2B14, 2));
    let _model = Backbone::new(&vs.root(), spec);
    let e = load(&vs, &file, "head", &ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("dinov2-s14@224-checkpoint.safetensors"), "names the file: {e}");
    assert!(
        e.contains("with other shapes") && e.contains("cls_token (checkpoint [1, 1, 384], model [1, 1, 768])"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "one message: {e}");
}

/// `export`'s names are the published ones (Hugging Face's Hub names for Phikon, DINOv2's with its
/// mask token), and the exported file loads back to the same features.
#[test]
fn export_writes_the_published_names_and_loads_back() {
    tch::set_num_threads(2);
    let g = golden();
    let depth = g["depth"].as_i64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (f, field) in [(Foundation::Phikon, "checkpoint_transformers4"), (Foundation::Dinov2G14, "checkpoint")] {
        let (vs, model) = timm_filled(f, depth);
        let tensors = reference_names(Arch::Foundation(f), vs.variables().into_iter().collect());
        let mut ours: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        let mut published: Vec<&str> = g[format!("{f}@224")][field]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[0].as_str().unwrap())
            .filter(|n| !n.starts_with("pooler."))
            .collect();
        ours.sort_unstable();
        published.sort_unstable();
        assert_eq!(ours, published, "{f}");
        let path = dir.path().join(format!("{f}.safetensors"));
        Tensor::write_safetensors(&tensors, &path).unwrap();
        let vs2 = nn::VarStore::new(Device::Cpu);
        let back = Backbone::new(&vs2.root(), Spec::Vit(reduced(f, depth)));
        load(&vs2, &path, "head", &ImportOptions::default()).unwrap();
        let x = det_input(&[1, 3, 112, 112]);
        let (a, b) = tch::no_grad(|| (model.forward_t(&x, false), back.forward_t(&x, false)));
        assert!(a.equal(&b), "{f}: exported weights load back");
    }
}

/// The files weights come in: a sharded safetensors index, a Hugging Face snapshot folder (found
/// by its file names), and `pytorch_model.bin` (a `torch.save` archive) load to the same model.
#[test]
fn sharded_safetensors_folders_and_torch_save_files_load_alike() {
    use patchtcga_model::write_pth;
    let dir = tempfile::tempdir().unwrap();
    let f = Foundation::Dinov2S14;
    let (vs, model) = timm_filled(f, 1);
    let tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let sharded = dir.path().join("sharded");
    std::fs::create_dir(&sharded).unwrap();
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        Tensor::write_safetensors(part, sharded.join(file)).unwrap();
        for (name, _) in part {
            map.insert(name.clone(), Value::String(file.into()));
        }
    }
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map });
    std::fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    write_pth(&bin.join("pytorch_model.bin"), &tensors).unwrap();
    let x = det_input(&[1, 3, 56, 56]);
    let want = tch::no_grad(|| model.forward_t(&x, false));
    for source in [sharded.join("model.safetensors.index.json"), sharded.clone(), bin.clone()] {
        let vs2 = nn::VarStore::new(Device::Cpu);
        let back = Backbone::new(&vs2.root(), Spec::Vit(reduced(f, 1)));
        let r = load(&vs2, &source, "head", &ImportOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.loaded, tensors.len(), "{}", source.display());
        assert!(tch::no_grad(|| back.forward_t(&x, false)).equal(&want), "{}", source.display());
    }
    // A shard the index names but the folder lacks: one message naming both.
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let vs3 = nn::VarStore::new(Device::Cpu);
    let _m = Backbone::new(&vs3.root(), Spec::Vit(reduced(f, 1)));
    let e = load(&vs3, &sharded, "head", &ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("model.safetensors.index.json") && e.contains("model-00002-of-00002.safetensors"), "{e}");
}
