//! Synchronised batch norm in whole networks: two processes on loopback, each with half of a
//! batch, give the gradients of the whole batch. The yardstick is float64: a deep ResNet's
//! float32 gradients are themselves some way from exact (ResNet50 here: a few per cent), so
//! the halves must be as close to float64 as LibTorch's own float32 batch norm on the whole
//! batch is, while per-rank batch norm is far off.

use std::time::Duration;

use patchtcga_model::{Arch, Backbone};
use patchtcga_testkit::{assert_ranks_ok, run_ranks};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// Gradients of every parameter, by name, for rows `lo..hi` of a fixed batch of 8 at 64 px.
fn gradients(arch: Arch, lo: i64, hi: i64, kind: Kind) -> Vec<Tensor> {
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = Backbone::new(&vs.root(), arch.spec(64));
    if kind == Kind::Double {
        vs.double();
    }
    tch::manual_seed(1);
    let x = Tensor::randn([8, 3, 64, 64], (Kind::Float, Device::Cpu)).narrow(0, lo, hi - lo).to_kind(kind);
    let w = Tensor::randn([arch.spec(64).feature_dim()], (Kind::Float, Device::Cpu)).to_kind(kind);
    let f = net.forward_t(&x, true);
    // A loss of the whole batch that is a sum over its rows, as cross-entropy's mean is.
    ((f * w).sum_dim_intlist([1i64].as_slice(), false, kind).square().sum(kind) / 8.0).backward();
    let mut named: Vec<(String, Tensor)> =
        vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, t)| (n, t.grad())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, g)| g.to_kind(Kind::Double)).collect()
}

/// Median over tensors of |got − exact|max / |exact|max.
fn median_error(exact: &[Tensor], got: &[Tensor]) -> f64 {
    let mut r: Vec<f64> = exact
        .iter()
        .zip(got)
        .map(|(e, g)| (e - g).abs().max().double_value(&[]) / e.abs().max().double_value(&[]).max(1e-30))
        .collect();
    r.sort_by(f64::total_cmp);
    r[r.len() / 2]
}

#[test]
fn two_halves_with_synchronised_batch_norm_have_the_whole_batch_gradients() {
    if let Ok(arch) = std::env::var("PTCGA_SYNC_BN_CHILD") {
        let arch = if arch == "resnet50" { Arch::ResNet50 } else { Arch::ResNet18 };
        let g = patchtcga_collective::init_from_env(Duration::from_secs(60), patchtcga_collective::Backend::Gloo)
            .unwrap()
            .unwrap();
        let exact = gradients(arch, 0, 8, Kind::Double);
        let whole = median_error(&exact, &gradients(arch, 0, 8, Kind::Float));
        let lo = 4 * g.rank() as i64;
        let summed = |sync: bool| {
            let group = sync.then_some(g);
            let half = patchtcga_model::norm::synchronised(group, || gradients(arch, lo, lo + 4, Kind::Float)).unwrap();
            for t in &half {
                g.all_reduce_sum(t).unwrap();
            }
            median_error(&exact, &half)
        };
        let (synced, local) = (summed(true), summed(false));
        println!("{arch:?}: float32 whole {whole:.2e}, synchronised halves {synced:.2e}, per-rank halves {local:.2e}");
        assert!(synced <= 1.5 * whole + 1e-6, "synchronised halves {synced:.2e} against float32 whole {whole:.2e}");
        assert!(local > 10.0 * whole, "per-rank batch norm {local:.2e} should be far from the whole batch");
        println!("rank {} ok", g.rank());
        return;
    }
    for arch in ["resnet18", "resnet50"] {
        let name = "two_halves_with_synchronised_batch_norm_have_the_whole_batch_gradients";
        let outputs = run_ranks(name, 2, &[("PTCGA_SYNC_BN_CHILD", arch), ("OMP_NUM_THREADS", "1")]);
        assert_ranks_ok(&outputs);
        let text = String::from_utf8_lossy(&outputs[0].stdout);
        eprintln!("{}", text.lines().find(|l| l.contains("float32 whole")).unwrap_or(""));
    }
}

#[test]
fn a_failed_batch_norm_collective_is_an_error_not_a_panic() {
    // A one-process group on loopback, shut down so that every collective fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let launch = patchtcga_collective::Launch {
        rank: 0,
        world: 1,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: port,
    };
    let g =
        patchtcga_collective::ProcessGroup::new(&launch, Duration::from_secs(30), patchtcga_collective::Backend::Gloo)
            .unwrap();
    g.shutdown().unwrap();
    let g: &'static patchtcga_collective::ProcessGroup = Box::leak(Box::new(g));
    let vs = nn::VarStore::new(Device::Cpu);
    let bn = nn::batch_norm2d(vs.root(), 3, Default::default());
    let x = Tensor::randn([4, 3, 5, 5], (Kind::Float, Device::Cpu));
    let norm = |train| patchtcga_model::norm::batch_norm(&x, &bn, train);
    let e = patchtcga_model::norm::synchronised(Some(g), || norm(true)).unwrap_err().to_string();
    assert!(e.contains("synchronised batch norm") && e.contains("shut down"), "{e}");
    // Outside a synchronised scope, and in evaluation mode, batch norm is per process as before.
    assert!(patchtcga_model::norm::synchronised(None, || norm(true)).is_ok());
    assert!(patchtcga_model::norm::synchronised(Some(g), || norm(false)).is_ok(), "evaluation mode needs no group");
}
