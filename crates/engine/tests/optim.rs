//! One-to-four steps of each optimizer against PyTorch (SGD, Adam, AdamW) and lightly (LARS);
//! goldens from tools/make_model_goldens.py.

use patchtcga_engine::optim::{decays, Optimizer, Rule};
use serde_json::Value;
use tch::{Kind, Tensor};

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn each_optimizer_follows_the_reference_trajectory() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim.json");
    let g: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let x = Tensor::from_slice(&floats(&g["x"])).reshape([8, 4]);
    let y = Tensor::from_slice(&floats(&g["y"])).reshape([8, 3]);
    let rules = [
        ("sgd", Rule::Sgd { momentum: 0.9, nesterov: false }),
        ("sgd_nesterov", Rule::Sgd { momentum: 0.9, nesterov: true }),
        ("adam", Rule::Adam { betas: [0.9, 0.999], eps: 1e-8 }),
        ("adamw", Rule::AdamW { betas: [0.9, 0.95], eps: 1e-8 }),
        ("lars", Rule::Lars { momentum: 0.9, trust: 0.001, eps: 1e-8 }),
    ];
    for (name, rule) in rules {
        let w = Tensor::from_slice(&floats(&g["w0"])).reshape([3, 4]).set_requires_grad(true);
        let b = Tensor::from_slice(&floats(&g["b0"])).set_requires_grad(true);
        let mut opt = Optimizer::with_groups(
            rule,
            0.05,
            vec![("w".into(), w.shallow_clone(), true), ("b".into(), b.shallow_clone(), false)],
        );
        for (step, want) in g["cases"][name].as_array().unwrap().iter().enumerate() {
            opt.zero_grad();
            let loss = (x.matmul(&w.tr()) + &b - &y).square().mean(Kind::Float);
            loss.backward();
            opt.step(if name.starts_with("adam") { 0.01 } else { 0.1 });
            for (t, key) in [(&w, "w"), (&b, "b")] {
                let r = Tensor::from_slice(&floats(&want[key])).reshape(t.size());
                let err = (t - &r).abs().max().double_value(&[]) / r.abs().max().double_value(&[]);
                assert!(err < 1e-6, "{name} step {}: {key} off by {err:.2e}", step + 1);
            }
        }
    }
}

#[test]
fn the_same_trajectory_continues_after_a_state_round_trip() {
    let make = || Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25]).reshape([2, 2]).set_requires_grad(true);
    let rule = Rule::AdamW { betas: [0.9, 0.999], eps: 1e-8 };
    let step = |opt: &mut Optimizer, w: &Tensor| {
        opt.zero_grad();
        (w * w * 3.0 - w).sum(Kind::Float).backward();
        opt.step(0.05);
    };
    let (a, b) = (make(), make());
    let mut oa = Optimizer::new(rule, 0.1, vec![("w".into(), a.shallow_clone())]);
    for _ in 0..5 {
        step(&mut oa, &a);
    }
    let mut ob = Optimizer::new(rule, 0.1, vec![("w".into(), b.shallow_clone())]);
    for _ in 0..2 {
        step(&mut ob, &b);
    }
    let saved = ob.state_tensors();
    let mut oc = Optimizer::new(rule, 0.1, vec![("w".into(), b.shallow_clone())]);
    oc.load_state(saved).unwrap();
    assert_eq!(oc.steps(), 2);
    for _ in 0..3 {
        step(&mut oc, &b);
    }
    assert!(a.equal(&b), "resumed optimizer diverged");
}

#[test]
fn no_decay_on_norms_biases_and_tokens() {
    let m = Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu));
    let v = Tensor::zeros([4], (Kind::Float, tch::Device::Cpu));
    let tok = Tensor::zeros([1, 1, 4], (Kind::Float, tch::Device::Cpu));
    assert!(decays("layer1.0.conv1.weight", &m));
    assert!(!decays("layer1.0.bn1.weight", &v));
    assert!(!decays("fc.bias", &v));
    assert!(!decays("cls_token", &tok));
    assert!(!decays("pos_embed", &tok));
    assert!(decays("blocks.0.attn.qkv.weight", &m));
}
