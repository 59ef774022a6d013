//! Inception v3 and EfficientNet-B3 against torchvision (goldens from
//! `tools/make_model_goldens.py cnn`): evaluation-mode features and logits at the native side and
//! another, training-mode logits with batch statistics (in float64), and Inception's auxiliary
//! logits.

use patchtcga_model::efficientnet::EfficientNetConfig;
use patchtcga_model::inception::{recorded_transform_input, InceptionConfig, TransformInput};
use patchtcga_model::{write_safetensors, Arch, BackboneWeights, Classifier, Spec};
use serde_json::Value;
use tch::nn::{self, ModuleT};
use tch::Device;

mod common;
use common::{det, det_input, floats, json, rel_err};

/// A 5-class classifier of `spec` (no dropout) filled with the goldens' deterministic weights.
fn filled(spec: Spec) -> (nn::VarStore, Classifier) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Classifier::new(&vs.root(), spec, 5, 0.0);
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            t.copy_(&det(&name, &t.size()));
        }
    });
    (vs, model)
}

fn input(g: &Value) -> tch::Tensor {
    let shape: Vec<i64> = g["input"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    det_input(&shape)
}

fn check_eval(key: &str, spec: Spec) {
    let g = &json("cnn.json")[key];
    let (_vs, model) = filled(spec);
    let x = input(g);
    let (feats, logits) = tch::no_grad(|| (model.backbone.forward_t(&x, false), model.forward_t(&x, false)));
    let (fe, le) = (rel_err(&feats, &floats(&g["features"])), rel_err(&logits, &floats(&g["logits"])));
    assert!(fe <= 1e-4 && le <= 1e-4, "{key}: features rel. error {fe:.2e}, logits {le:.2e}");
}

/// In float64: training mode's batch statistics amplify float32 rounding layer after layer.
fn check_train(key: &str, spec: Spec) {
    let g = &json("cnn.json")[key];
    let (mut vs, model) = filled(spec);
    vs.double();
    let x = input(g).to_kind(tch::Kind::Double);
    let (logits, aux) = tch::no_grad(|| model.forward_with_aux(&x, true, true));
    let le = rel_err(&logits, &floats(&g["logits"]));
    assert!(le <= 1e-4, "{key}: logits rel. error {le:.2e}");
    match (aux, g.get("aux_logits")) {
        (Some(aux), Some(reference)) => {
            let ae = rel_err(&aux, &floats(reference));
            assert!(ae <= 1e-4, "{key}: aux logits rel. error {ae:.2e}");
        }
        (None, None) => {}
        (ours, theirs) => panic!("{key}: aux logits ours {:?}, torchvision {}", ours.is_some(), theirs.is_some()),
    }
}

#[test]
fn inception_v3_matches_torchvision_in_eval_and_training() {
    tch::set_num_threads(2);
    let spec = Arch::IncV3.spec(299);
    check_eval("incv3@299", spec);
    check_eval("incv3@160", spec);
    check_train("incv3@299/train", spec);
}

/// torchvision's `inception_v3(weights=None)` (what the release trains from scratch) runs without
/// the input transform; with it, features are half off.
#[test]
fn inception_v3_from_scratch_matches_torchvision_without_the_input_transform() {
    tch::set_num_threads(2);
    let scratch = Spec::Inception(InceptionConfig { transform_input: false });
    check_eval("incv3-scratch@299", scratch);
    check_train("incv3-scratch@299/train", scratch);
    // The deterministic weights leave evaluation-mode features almost blind to the input; with
    // batch statistics they are not, and there the transform would be far off.
    let g = &json("cnn.json")["incv3-scratch@299/train"];
    let (mut vs, imagenet) = filled(Arch::IncV3.spec(299));
    vs.double();
    let x = input(g).to_kind(tch::Kind::Double);
    let (logits, _) = tch::no_grad(|| imagenet.forward_with_aux(&x, true, true));
    let e = rel_err(&logits, &floats(&g["logits"]));
    assert!(e > 1e-2, "the transform matters to this check: {e:.2e}");
}

/// The transform travels with the weights: a patchtcga safetensors records it, `auto` follows the
/// record, a file without one (a torchvision `.pth`) takes torchvision's ImageNet default, and the
/// flag overrides both.
#[test]
fn the_input_transform_is_recorded_with_the_weights_and_followed_on_load() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let scratch = Spec::Inception(InceptionConfig { transform_input: false });
    let (vs, _) = filled(scratch);
    let mut tensors: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let recorded = dir.path().join("model.safetensors");
    write_safetensors(&recorded, &tensors, &scratch.attributes()).unwrap();
    let bare = dir.path().join("bare.safetensors");
    write_safetensors(&bare, &tensors, &[]).unwrap();
    assert_eq!(recorded_transform_input(&recorded).unwrap(), Some(false));
    assert_eq!(recorded_transform_input(&bare).unwrap(), None);
    assert!(TransformInput::Auto.resolve(&bare).unwrap().on);
    assert!(!TransformInput::Off.resolve(&bare).unwrap().on);
    assert!(TransformInput::On.resolve(&recorded).unwrap().on);

    let g = &json("cnn.json")["incv3-scratch@299"];
    let weights = |path: &std::path::Path, transform_input| BackboneWeights {
        arch: Arch::IncV3,
        weights: path.to_path_buf(),
        prefix: None,
        allow_partial: false,
        transform_input,
    };
    for (path, choice) in [(&recorded, TransformInput::Auto), (&bare, TransformInput::Off)] {
        let (_vs, backbone, report) = weights(path, choice).load(299, Device::Cpu).unwrap();
        assert!(report.to_string().contains("transform_input) off"), "{report}");
        assert_eq!(backbone.spec(), scratch);
        let feats = tch::no_grad(|| backbone.forward_t(&input(g), false));
        let e = rel_err(&feats, &floats(&g["features"]));
        assert!(e <= 1e-4, "{}: features rel. error {e:.2e}", path.display());
    }
    let (_vs, backbone, report) = weights(&bare, TransformInput::Auto).load(299, Device::Cpu).unwrap();
    assert!(report.to_string().contains("transform_input) on: the file records nothing"), "{report}");
    assert_eq!(backbone.spec(), Arch::IncV3.spec(299));
}

#[test]
fn efficientnet_b3_matches_torchvision_in_eval_and_training() {
    tch::set_num_threads(2);
    let spec = Arch::EffB3.spec(300);
    check_eval("eff-b3@300", spec);
    check_eval("eff-b3@224", spec);
    check_train(
        "eff-b3@300/train",
        Spec::EfficientNet(EfficientNetConfig { stochastic_depth: 0.0, ..EfficientNetConfig::B3 }),
    );
}

#[test]
fn the_release_names_parse_and_report_their_widths() {
    for (name, arch, width, head) in [("incv3", Arch::IncV3, 2048, "fc"), ("eff-b3", Arch::EffB3, 1536, "classifier.1")]
    {
        let parsed: Arch = name.parse().unwrap();
        assert_eq!(parsed, arch);
        assert_eq!(parsed.to_string(), name);
        assert_eq!(arch.spec(224).feature_dim(), width);
        assert_eq!(arch.spec(224).head_name(), head);
    }
}
