//! Each self-supervised loss against its upstream computation on fixed inputs (goldens from
//! tools/make_model_goldens.py: lightly's NTXentLoss and DINOLoss, MoCo's InfoNCE lines, BYOL's
//! regression loss, MAE's forward_loss).

use patchtcga_learn::loss::{info_nce, masked_mse, negative_cosine, nt_xent, DinoLoss};
use serde_json::Value;
use tch::{Device, Tensor};

fn goldens() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/losses.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn t(v: &Value, shape: &[i64]) -> Tensor {
    let f: Vec<f32> = v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    Tensor::from_slice(&f).reshape(shape)
}

fn close(ours: &Tensor, want: &Value, what: &str) {
    let (a, b) = (ours.double_value(&[]), want.as_f64().unwrap());
    assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{what}: ours {a}, reference {b}");
}

#[test]
fn nt_xent_matches_lightly() {
    let g = &goldens()["nt_xent"];
    close(&nt_xent(&t(&g["z0"], &[6, 8]), &t(&g["z1"], &[6, 8]), 0.1), &g["loss"], "NT-Xent");
}

#[test]
fn info_nce_matches_moco() {
    let g = &goldens()["info_nce"];
    let l = info_nce(&t(&g["q"], &[6, 8]), &t(&g["k"], &[6, 8]), &t(&g["queue"], &[16, 8]), 0.2);
    close(&l, &g["loss"], "InfoNCE");
}

#[test]
fn negative_cosine_matches_byol() {
    let g = &goldens()["negative_cosine"];
    close(&negative_cosine(&t(&g["p"], &[6, 8]), &t(&g["z"], &[6, 8])), &g["loss"], "2 − 2·cos");
    let z = t(&g["z"], &[6, 8]);
    assert!(negative_cosine(&z, &(&z * 3.0)).double_value(&[]).abs() < 1e-6, "aligned vectors cost nothing");
}

#[test]
fn dino_loss_and_centre_match_lightly() {
    let g = &goldens()["dino"];
    let views = |k: &str| -> Vec<Tensor> { g[k].as_array().unwrap().iter().map(|v| t(v, &[4, 10])).collect() };
    let (teacher, student) = (views("teacher"), views("student"));
    let mut d = DinoLoss::new(10, 0.9, Device::Cpu);
    close(&d.loss(&teacher, &student, 0.04, 0.1), &g["loss1"], "DINO loss, zero centre");
    let c1 = t(&g["centre1"], &[1, 10]);
    assert!((&d.centre - &c1).abs().max().double_value(&[]) < 1e-6, "centre after one update");
    close(&d.loss(&teacher, &student, 0.07, 0.1), &g["loss2"], "DINO loss, updated centre, warmer teacher");
    assert!((&d.centre - t(&g["centre2"], &[1, 10])).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn masked_mse_matches_mae() {
    let g = &goldens()["masked_mse"];
    let (pred, target, mask) = (t(&g["pred"], &[2, 6, 12]), t(&g["target"], &[2, 6, 12]), t(&g["mask"], &[2, 6]));
    close(&masked_mse(&pred, &target, &mask, true), &g["loss_norm_pix"], "MAE loss, normalised pixels");
    close(&masked_mse(&pred, &target, &mask, false), &g["loss_plain"], "MAE loss");
}

#[test]
fn losses_have_gradients_for_the_online_side_only() {
    let g = &goldens()["negative_cosine"];
    let p = t(&g["p"], &[6, 8]).set_requires_grad(true);
    let z = t(&g["z"], &[6, 8]);
    negative_cosine(&p, &z).backward();
    assert!(p.grad().abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
    let gd = &goldens()["dino"];
    let student: Vec<Tensor> =
        gd["student"].as_array().unwrap().iter().map(|v| t(v, &[4, 10]).set_requires_grad(true)).collect();
    let teacher: Vec<Tensor> =
        gd["teacher"].as_array().unwrap().iter().map(|v| t(v, &[4, 10]).set_requires_grad(true)).collect();
    DinoLoss::new(10, 0.9, Device::Cpu).loss(&teacher, &student, 0.04, 0.1).backward();
    assert!(!teacher[0].grad().defined() || teacher[0].grad().abs().sum(tch::Kind::Float).double_value(&[]) == 0.0);
    assert!(student[2].grad().abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
}
