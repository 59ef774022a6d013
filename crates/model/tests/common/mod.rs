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

/// The goldens' deterministic weights (see `patchtcga_testkit::det_values`).
pub fn det(name: &str, shape: &[i64]) -> Tensor {
    Tensor::from_slice(&patchtcga_testkit::det_values(name, shape)).reshape(shape)
}

/// The goldens' deterministic input.
pub fn det_input(shape: &[i64]) -> Tensor {
    Tensor::from_slice(&patchtcga_testkit::det_input_values(shape.iter().product())).reshape(shape)
}

/// Largest absolute difference relative to the largest reference magnitude.
pub fn rel_err(ours: &Tensor, reference: &[f32]) -> f64 {
    let r = Tensor::from_slice(reference).reshape(ours.size());
    let diff = (ours.to_kind(Kind::Float) - &r).abs().max().double_value(&[]);
    diff / r.abs().max().double_value(&[]).max(1e-12)
}
