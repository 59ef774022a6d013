//! SimCLR's NT-Xent over a distributed global batch: two processes (this test binary started
//! again as ranks 0 and 1 on loopback), each with half the embeddings, give the one-process loss
//! on the whole batch (as the mean of theirs) and its gradient (their embeddings' gradients,
//! averaged over ranks as the engine averages parameter gradients).

use std::time::Duration;

use patchtcga_collective::{Backend, Launch, ProcessGroup};
use patchtcga_methods::loss::{nt_xent, nt_xent_global};
use patchtcga_testkit::run_ranks;
use tch::Tensor;

const B: i64 = 3;
const D: i64 = 5;

/// Both views of the whole batch of 2·B samples: rank r holds samples r·B … r·B + B − 1.
fn views() -> (Tensor, Tensor) {
    let v = |phase: f64| {
        let x: Vec<f32> = (0..2 * B * D).map(|i| ((i as f64) * 0.37 + phase).sin() as f32).collect();
        Tensor::from_slice(&x).reshape([2 * B, D])
    };
    (v(0.0), v(1.3))
}

fn numbers(t: &Tensor) -> String {
    Vec::<f32>::try_from(t.reshape([-1])).unwrap().iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")
}

fn parse(s: &str) -> Vec<f64> {
    s.split(',').map(|v| v.parse().unwrap()).collect()
}

#[test]
fn global_nt_xent_over_two_processes_is_the_one_process_loss() {
    if std::env::var("PTCGA_DIST_CHILD").is_ok() {
        let launch = Launch::from_env().unwrap().unwrap();
        let g = ProcessGroup::new(&launch, Duration::from_secs(30), Backend::Gloo).unwrap();
        let (v0, v1) = views();
        let r = g.rank() as i64;
        let z0 = v0.narrow(0, r * B, B).set_requires_grad(true);
        let z1 = v1.narrow(0, r * B, B).set_requires_grad(true);
        let loss = nt_xent_global(&z0, &z1, 0.2, &g).unwrap();
        loss.backward();
        println!("loss={} g0={} g1={}", loss.double_value(&[]), numbers(&z0.grad()), numbers(&z1.grad()));
        return;
    }
    let name = "global_nt_xent_over_two_processes_is_the_one_process_loss";
    let children = run_ranks(name, 2, &[("PTCGA_DIST_CHILD", "1")]);
    let mut losses = Vec::new();
    let mut grads = [Vec::new(), Vec::new()];
    for (rank, o) in children.iter().enumerate() {
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text
            .lines()
            .find_map(|l| l.find("loss=").map(|i| &l[i..]))
            .unwrap_or_else(|| panic!("rank {rank}: {text}"));
        let mut parts = line.split(' ');
        losses.push(parts.next().unwrap()["loss=".len()..].parse::<f64>().unwrap());
        for (view, p) in parts.enumerate() {
            grads[view].extend(parse(&p[3..]));
        }
    }
    // One process on the whole batch.
    let (v0, v1) = views();
    let (z0, z1) = (v0.set_requires_grad(true), v1.set_requires_grad(true));
    let loss = nt_xent(&z0, &z1, 0.2);
    loss.backward();
    assert!((loss.double_value(&[]) - (losses[0] + losses[1]) / 2.0).abs() < 1e-5, "{losses:?} vs {loss:?}");
    for (view, z) in [&z0, &z1].iter().enumerate() {
        let want = Vec::<f32>::try_from(z.grad().reshape([-1])).unwrap();
        // Rank order is sample order; the engine averages over the 2 ranks.
        for (i, (a, b)) in grads[view].iter().zip(&want).enumerate() {
            assert!((a / 2.0 - *b as f64).abs() < 1e-5, "view {view}, value {i}: {} vs {b}", a / 2.0);
        }
        assert_eq!(grads[view].len(), want.len());
    }
}
