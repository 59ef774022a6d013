//! Forward parity with torchvision / timm (goldens from tools/make_model_goldens.py).

use patchtcga_model::resnet::{Block, ResNetConfig};
use patchtcga_model::vit::{resample_pos_embed, PosResample, VitConfig};
use patchtcga_model::{load, Arch, Classifier, ImportOptions, SegHead, SegNet, Spec};
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

mod common;
use common::{det, det_input, fixture, floats, json, rel_err};

fn check_reference(key: &str, spec: Spec) {
    tch::set_num_threads(2);
    let g = &json("reference.json")[key];
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Classifier::new(&vs.root(), spec, 5, 0.4);
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            t.copy_(&det(&name, &t.size()));
        }
    });
    let shape: Vec<i64> = g["input"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let x = det_input(&shape);
    let (feats, logits) = tch::no_grad(|| (model.backbone.forward_t(&x, false), model.forward_t(&x, false)));
    let fe = rel_err(&feats, &floats(&g["features"]));
    let le = rel_err(&logits, &floats(&g["logits"]));
    assert!(fe <= 1e-4 && le <= 1e-4, "{key}: features rel. error {fe:.2e}, logits {le:.2e}");
}

#[test]
fn resnet18_matches_torchvision() {
    check_reference("resnet18@64", Arch::ResNet18.spec(224));
}

#[test]
fn resnet50_matches_torchvision() {
    check_reference("resnet50@64", Arch::ResNet50.spec(224));
}

#[test]
fn vit_s16_matches_timm_at_224_and_interpolated_at_64() {
    check_reference("vit-s16@224", Arch::VitS16.spec(224));
    check_reference("vit-s16@64", Arch::VitS16.spec(224));
}

#[test]
fn vit_b16_matches_timm() {
    check_reference("vit-b16@64", Arch::VitB16.spec(224));
}

#[test]
fn vit_b32_matches_timm() {
    check_reference("vit-b32@96", Arch::VitB32.spec(224));
}

#[test]
fn vit_l16_matches_timm() {
    let Spec::Vit(c) = Arch::VitL16.spec(224) else { unreachable!() };
    check_reference("vit-l16-depth4@64", Spec::Vit(VitConfig { depth: 4, ..c }));
}

fn tiny_spec(name: &str) -> Spec {
    let resnet =
        |block| Spec::ResNet(ResNetConfig { block, layers: [1, 1, 1, 1], stem: 64, width: 8, dilate: [false; 3] });
    match name {
        "resnet_basic" => resnet(Block::Basic),
        "resnet_bottleneck" => resnet(Block::Bottleneck),
        _ => Spec::Vit(VitConfig { patch: 8, dim: 24, depth: 2, heads: 3, img_size: 32, ..VitConfig::S16 }),
    }
}

/// Loads `file` into the tiny model `name` and compares with torch's outputs for `key`.
fn check_tiny(file: &str, name: &str, key: &str, opts: &ImportOptions) -> patchtcga_model::ImportReport {
    let g = &json("tiny.json")[key];
    let spec = tiny_spec(name);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Classifier::new(&vs.root(), spec, 3, 0.4);
    let report = load(&vs, &fixture(file), spec.head_name(), opts).unwrap_or_else(|e| panic!("{e}"));
    let shape: Vec<i64> = g["input_shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let x = Tensor::from_slice(&floats(&g["input"])).reshape(shape.as_slice());
    let feats = tch::no_grad(|| model.backbone.forward_t(&x, false));
    let fe = rel_err(&feats, &floats(&g["features"]));
    assert!(fe <= 1e-4, "{file} → {key}: features rel. error {fe:.2e}");
    if opts.with_head {
        let le = rel_err(&tch::no_grad(|| model.forward_t(&x, false)), &floats(&g["logits"]));
        assert!(le <= 1e-4, "{file} → {key}: logits rel. error {le:.2e}");
    }
    report
}

#[test]
fn tiny_checkpoints_from_timm_give_torch_outputs() {
    let full = ImportOptions { with_head: true, ..Default::default() };
    for name in ["resnet_basic", "resnet_bottleneck", "vit"] {
        for side in [32, 48] {
            let r = check_tiny(&format!("tiny_{name}.pth"), name, &format!("{name}@{side}"), &full);
            assert_eq!(r.prefix, "");
        }
    }
    check_tiny("tiny_vit.safetensors", "vit", "vit@48", &full);
}

#[test]
fn wrappers_of_upstream_repos_are_unwrapped() {
    let backbone = ImportOptions::default();
    let r = check_tiny("wrap_dataparallel.pth", "resnet_basic", "resnet_basic@32", &backbone);
    assert_eq!(r.prefix, "state_dict.module.");
    assert_eq!(r.skipped_heads, ["fc.weight", "fc.bias"]);
    let r = check_tiny("wrap_moco.pth", "resnet_basic", "resnet_basic@32", &backbone);
    assert_eq!(r.prefix, "state_dict.module.encoder_q.", "the query encoder, not the momentum copy");
    assert_eq!(r.skipped_heads.len(), 3, "the MoCo MLP head is left out: {:?}", r.skipped_heads);
    let r = check_tiny("wrap_dino.pth", "vit", "vit@32", &backbone);
    assert_eq!(r.prefix, "teacher.backbone.", "the teacher, as DINO evaluates");
    let r = check_tiny("wrap_mae.pth", "vit", "vit@48", &backbone);
    assert_eq!(r.prefix, "model.");
    assert!(r.skipped_heads.iter().any(|k| k.starts_with("decoder")), "{:?}", r.skipped_heads);
    // An explicit prefix picks the other network.
    let student = ImportOptions { prefix: Some("student.module.backbone.".into()), ..Default::default() };
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Classifier::new(&vs.root(), tiny_spec("vit"), 3, 0.0);
    let r = load(&vs, &fixture("wrap_dino.pth"), "head", &student).unwrap();
    assert_eq!(r.loaded, vs.variables().len() - 2);
}

#[test]
fn a_checkpoint_of_another_grid_has_its_pos_embed_resampled() {
    let r = check_tiny("tiny_vit_grid2.pth", "vit", "vit_grid2@32", &ImportOptions::default());
    assert_eq!(r.resized, ["pos_embed kept at its 2×2 grid (the model's default is 4×4; resampled per input)"]);
}

#[test]
fn mismatches_are_listed_and_allow_partial_tolerates_them() {
    // A ResNet checkpoint into a ViT: nothing fits.
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Classifier::new(&vs.root(), tiny_spec("vit"), 3, 0.0);
    let e = load(&vs, &fixture("tiny_resnet_basic.pth"), "head", &ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("tiny_resnet_basic.pth") && e.contains("no tensor name matches"), "{e}");
    // A Bottleneck ResNet into a Basic one: same prefix, other names and shapes.
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Classifier::new(&vs.root(), tiny_spec("resnet_basic"), 3, 0.0);
    let e = load(&vs, &fixture("tiny_resnet_bottleneck.pth"), "fc", &ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("with other shapes") && e.contains("the model does not have") && e.contains("conv3"), "{e}");
    assert!(e.contains("--allow-partial"), "{e}");
    let r = load(
        &vs,
        &fixture("tiny_resnet_bottleneck.pth"),
        "fc",
        &ImportOptions { allow_partial: true, ..Default::default() },
    )
    .unwrap();
    assert!(r.loaded > 0 && !r.warnings.is_empty());
}

#[test]
fn deeplabv3_resnet50_matches_torchvision() {
    tch::set_num_threads(2);
    let g = &json("segmentation.json")["deeplabv3_resnet50@48"];
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SegNet::new(&vs.root(), Arch::ResNet50.spec(224), SegHead::DeepLabV3, 6).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            // torchvision's names put the backbone under `backbone.`.
            let theirs = if name.starts_with("classifier.") { name.clone() } else { format!("backbone.{name}") };
            t.copy_(&det(&theirs, &t.size()));
        }
    });
    let shape: Vec<i64> = g["input"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let y = tch::no_grad(|| model.forward_t(&det_input(&shape), false));
    assert_eq!(y.size(), [1, 6, 48, 48]);
    let e = rel_err(&y, &floats(&g["output"]));
    assert!(e <= 1e-4, "DeepLabv3 output rel. error {e:.2e}");
    // The dilated stages keep 1/8 of the input.
    assert_eq!(tch::no_grad(|| model.feature_map(&det_input(&shape), false)).size(), [1, 2048, 6, 6]);
}

#[test]
fn dino_resamples_position_embeddings_as_dino_does() {
    let g = json("dino_pos_embed.json");
    let pos = det("pos_embed", &[1, 1 + 14 * 14, 8]);
    for (key, h, w) in [("6x6", 6, 6), ("5x7", 5, 7)] {
        let dino = resample_pos_embed(&pos, 1, h, w, PosResample::Dino);
        let e = rel_err(&dino, &floats(&g[key]));
        assert!(e <= 1e-5, "{key}: rel. error {e:.2e}");
        // timm's antialiased resampling is another rule: the check can tell them apart.
        let timm = rel_err(&resample_pos_embed(&pos, 1, h, w, PosResample::Timm), &floats(&g[key]));
        assert!(timm > 1e-2, "{key}: timm's differs by {timm:.2e}");
    }
}
