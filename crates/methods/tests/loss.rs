//! Each self-supervised loss and head piece against its upstream computation on fixed inputs
//! (goldens from tools/make_model_goldens.py: lightly's NTXentLoss, DINOLoss and
//! DINOProjectionHead, MoCo's InfoNCE lines, BYOL's regression loss, MAE's forward_loss,
//! position embedding and patchify).

use patchtcga_methods::heads::{patchify, DinoHead};
use patchtcga_methods::loss::{info_nce, masked_mse, negative_cosine, nt_xent, DinoLoss};
use patchtcga_methods::mae::random_masking;
use patchtcga_model::vit::sincos_pos_embed;
use serde_json::Value;
use tch::nn::ModuleT;
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
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mut d = DinoLoss::new(&vs.root(), 10, 0.9);
    close(&d.loss(&teacher, &student, 0.04, 0.1).0, &g["loss1"], "DINO loss, zero centre");
    let c1 = t(&g["centre1"], &[1, 10]);
    assert!((&d.centre - &c1).abs().max().double_value(&[]) < 1e-6, "centre after one update");
    close(&d.loss(&teacher, &student, 0.07, 0.1).0, &g["loss2"], "DINO loss, updated centre, warmer teacher");
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
    DinoLoss::new(&tch::nn::VarStore::new(Device::Cpu).root(), 10, 0.9)
        .loss(&teacher, &student, 0.04, 0.1)
        .0
        .backward();
    assert!(!teacher[0].grad().defined() || teacher[0].grad().abs().sum(tch::Kind::Float).double_value(&[]) == 0.0);
    assert!(student[2].grad().abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn dino_head_matches_lightly() {
    let g = &goldens()["dino_head"];
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let head = DinoHead::new(&vs.root(), 8, 16, 4, 10);
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let shape = var.size();
            var.copy_(&t(&g["params"][name.as_str()], &shape));
        }
    });
    let y = head.forward_t(&t(&g["x"], &[5, 8]), false);
    assert!(max_diff(&y, &t(&g["y"], &[5, 10])) < 1e-5, "DINO head output");
    assert!(!vs.variables()["last_layer.weight_g"].requires_grad(), "norms of the last layer stay at 1");
}

#[test]
fn mae_position_embedding_and_patches_match_mae() {
    let g = &goldens()["mae"];
    let (dim, grid) = (g["sincos_dim"].as_i64().unwrap(), g["sincos_grid"].as_i64().unwrap());
    let want = t(&g["sincos"], &[1, 1 + grid * grid, dim]);
    assert!(max_diff(&sincos_pos_embed(dim, grid), &want) < 1e-6, "fixed 2-D sine-cosine embedding");
    let patches = patchify(&t(&g["images"], &[2, 3, 8, 8]), 4);
    assert!(max_diff(&patches, &t(&g["patches"], &[2, 4, 48])) == 0.0, "patchify order");
}

#[test]
fn random_masking_keeps_a_share_and_restores_grid_order() {
    // Token i of image n carries the value 100·n + i in every channel.
    let (n, l, d, keep) = (3, 16, 2, 4);
    let ids = Tensor::arange(l, (tch::Kind::Float, Device::Cpu)).reshape([1, l, 1]);
    let tokens =
        (ids + Tensor::arange(n, (tch::Kind::Float, Device::Cpu)).reshape([n, 1, 1]) * 100.0).expand([n, l, d], true);
    let (visible, mask, restore) = random_masking(&tokens, keep);
    assert_eq!(visible.size(), [n, keep, d]);
    assert_eq!(mask.sum(tch::Kind::Float).double_value(&[]), (n * (l - keep)) as f64, "hidden share");
    for i in 0..n {
        for j in 0..keep {
            let v = visible.double_value(&[i, j, 0]) as i64 - 100 * i;
            assert_eq!(mask.double_value(&[i, v]), 0.0, "a visible token is unmasked in grid order");
        }
    }
    // Visible tokens then placeholders, put back by `restore`, land on their grid positions.
    let filler = Tensor::full([n, l - keep, d], -1.0, (tch::Kind::Float, Device::Cpu));
    let back = Tensor::cat(&[&visible, &filler], 1).gather(1, &restore.unsqueeze(-1).expand([n, l, d], true), false);
    let shown = mask.eq(0.0).unsqueeze(-1).expand([n, l, d], true);
    assert_eq!(max_diff(&back.masked_select(&shown), &tokens.masked_select(&shown)), 0.0);
    assert!(random_masking(&tokens, keep).1.ne_tensor(&mask).any().int64_value(&[]) != 0, "masks are drawn anew");
}
