//! Helpers of the parity tests: fixtures, the goldens' deterministic weights and inputs, errors.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;
use tch::{Kind, Tensor};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

pub fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811C_9DC5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// The deterministic weights of `det` in tools/make_model_goldens.py (0.7071 is the rule's own
/// step, not 1/√2).
#[allow(clippy::approx_constant)]
pub fn det(name: &str, shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let phase = fnv1a(name) as f64 / 2f64.powi(32) * 2.0 * std::f64::consts::PI;
    let leaf = name.rsplit('.').next().unwrap();
    let fan_in = if shape.is_empty() { 1 } else { n / shape[0] };
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let s = (i as f64 * 0.7071 + phase).sin();
            let v = match leaf {
                "running_var" => 1.0 + 0.5 * s.abs(),
                "running_mean" => 0.1 * s,
                "weight" if shape.len() == 1 => 1.0 + 0.1 * s,
                "bias" => 0.05 * s,
                "cls_token" | "pos_embed" => 0.02 * s,
                _ => s * (1.0 / fan_in as f64).sqrt(),
            };
            v as f32
        })
        .collect();
    Tensor::from_slice(&v).reshape(shape)
}

pub fn det_input(shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f32> =
        (0..n).map(|i| (0.5 * (i as f64 * 0.013).sin() + 0.3 * (i as f64 * 0.0071).cos()) as f32).collect();
    Tensor::from_slice(&v).reshape(shape)
}

/// Largest absolute difference relative to the largest reference magnitude.
pub fn rel_err(ours: &Tensor, reference: &[f32]) -> f64 {
    let r = Tensor::from_slice(reference).reshape(ours.size());
    let diff = (ours.to_kind(Kind::Float) - &r).abs().max().double_value(&[]);
    diff / r.abs().max().double_value(&[]).max(1e-12)
}
