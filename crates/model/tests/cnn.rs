//! Inception v3 and EfficientNet-B3 against torchvision (goldens from
//! `tools/make_model_goldens.py cnn`): evaluation-mode features and logits at the native side and
//! another, training-mode logits with batch statistics (in float64), and Inception's auxiliary
//! logits.

use patchtcga_model::efficientnet::EfficientNetConfig;
use patchtcga_model::{Arch, Classifier, Spec};
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
