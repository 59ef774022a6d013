//! Two processes on loopback, this test binary started again as each rank: the collectives give
//! the same answer everywhere, and a rank whose peer dies stops with an error naming itself and
//! the failed collective, well within the timeout.

use std::process::Output;
use std::time::{Duration, Instant};

use patchtcga_collective::{Backend, Launch, ProcessGroup};
use patchtcga_testkit::{assert_ranks_ok, run_ranks};
use tch::{Kind, Tensor};

/// Runs test `name` of this binary as ranks 0 and 1, `mode` telling the child what to do.
fn two_ranks(name: &str, mode: &str) -> Vec<Output> {
    run_ranks(name, 2, &[("PTCGA_DIST_CHILD", mode)])
}

fn child_group(timeout: u64) -> ProcessGroup {
    ProcessGroup::new(&Launch::from_env().unwrap().unwrap(), Duration::from_secs(timeout), Backend::Gloo).unwrap()
}

#[test]
fn collectives_agree_across_two_processes() {
    if std::env::var("PTCGA_DIST_CHILD").as_deref() == Ok("collectives") {
        let g = child_group(30);
        let r = g.rank() as f64;
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (r + 1.0);
        g.all_reduce_sum(&t).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [3.0, 6.0, 9.0], "sum of 1× and 2×");
        let b = Tensor::full([2], r * 10.0 + 5.0, (Kind::Float, tch::Device::Cpu));
        g.broadcast(&b, 1).unwrap();
        assert_eq!(Vec::<f32>::try_from(&b).unwrap(), [15.0, 15.0], "rank 1's value everywhere");
        let gathered = g.all_gather(&Tensor::full([2, 3], r, (Kind::Float, tch::Device::Cpu))).unwrap();
        assert_eq!(gathered.size(), [2, 2, 3]);
        assert_eq!(gathered.select(0, 1).sum(Kind::Float).double_value(&[]), 6.0, "rank 1's block second");
        // Rank 0 has 1 row, rank 1 has 3.
        let rows = Tensor::full([1 + 2 * g.rank() as i64, 2], r + 1.0, (Kind::Float, tch::Device::Cpu));
        let all = g.all_gather_rows(&rows).unwrap();
        assert_eq!(Vec::<f32>::try_from(all.view([-1])).unwrap(), [1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]);
        g.barrier().unwrap();
        g.shutdown().unwrap();
        let e = g.all_reduce_sum(&t).unwrap_err().to_string();
        assert!(e.contains("all-reduce failed") && e.contains("shut down"), "{e}");
        println!("rank {} ok", g.rank());
        return;
    }
    if std::env::var("PTCGA_DIST_CHILD").is_ok() {
        return;
    }
    assert_ranks_ok(&two_ranks("collectives_agree_across_two_processes", "collectives"));
}

/// A fixed batch of 6 (N, C=3, 2, 2) with a non-trivial upstream gradient: rows `lo..hi`.
fn batch_rows(lo: i64, hi: i64) -> (Tensor, Tensor) {
    let x = (Tensor::arange(72, (Kind::Float, tch::Device::Cpu)).view([6, 3, 2, 2]) * 0.37).sin() * 3.0 + 1.0;
    let dy = (Tensor::arange(72, (Kind::Float, tch::Device::Cpu)).view([6, 3, 2, 2]) * 0.11).cos();
    (x.narrow(0, lo, hi - lo), dy.narrow(0, lo, hi - lo))
}

/// Batch norm in training mode of rows `lo..hi`: output, input gradient, weight and bias
/// gradients, running mean and variance; synchronised over `group` when given.
fn batch_norm_of(lo: i64, hi: i64, group: Option<&ProcessGroup>) -> Vec<Tensor> {
    let (x, dy) = batch_rows(lo, hi);
    let x = x.set_requires_grad(true);
    let w = Tensor::from_slice(&[1.5f32, 0.5, -1.0]).set_requires_grad(true);
    let b = Tensor::from_slice(&[0.1f32, 0.2, 0.3]).set_requires_grad(true);
    let (rm, rv) =
        (Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)), Tensor::ones([3], (Kind::Float, tch::Device::Cpu)));
    let y = match group {
        Some(g) => g.batch_norm(&x, Some(&w), Some(&b), &rm, &rv, 0.1, 1e-5).unwrap(),
        None => Tensor::batch_norm(&x, Some(&w), Some(&b), Some(&rm), Some(&rv), true, 0.1, 1e-5, false),
    };
    (&y * &dy).sum(Kind::Float).backward();
    vec![y.detach(), x.grad(), w.grad(), b.grad(), rm, rv]
}

#[test]
fn synchronised_batch_norm_over_two_halves_is_batch_norm_of_the_whole_batch() {
    if std::env::var("PTCGA_DIST_CHILD").as_deref() == Ok("batch_norm") {
        let g = child_group(30);
        let lo = 3 * g.rank() as i64;
        let whole = batch_norm_of(0, 6, None);
        let half = batch_norm_of(lo, lo + 3, Some(&g));
        let names = ["output", "input gradient", "weight gradient", "bias gradient", "running mean", "running var"];
        for (i, name) in names.iter().enumerate() {
            let mut want = whole[i].shallow_clone();
            if i < 2 {
                want = want.narrow(0, lo, 3);
            }
            let mut got = half[i].shallow_clone();
            if i == 2 || i == 3 {
                // Each rank holds its own share of the parameter gradients; DDP sums them.
                g.all_reduce_sum(&got).unwrap();
                got = got.shallow_clone();
            }
            let d = (&got - &want).abs().max().double_value(&[]);
            assert!(d < 1e-5, "rank {}: {name} differs by {d}", g.rank());
        }
        println!("rank {} ok", g.rank());
        return;
    }
    if std::env::var("PTCGA_DIST_CHILD").is_ok() {
        return;
    }
    let name = "synchronised_batch_norm_over_two_halves_is_batch_norm_of_the_whole_batch";
    assert_ranks_ok(&two_ranks(name, "batch_norm"));
}

#[test]
fn a_dead_peer_stops_the_other_rank_with_a_clear_error() {
    if std::env::var("PTCGA_DIST_CHILD").as_deref() == Ok("dies") {
        let g = child_group(20);
        g.barrier().unwrap();
        if g.rank() == 1 {
            std::process::exit(3); // the peer dies without a word
        }
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        let e = g.all_reduce_sum(&Tensor::ones([4], (Kind::Float, tch::Device::Cpu))).unwrap_err().to_string();
        println!("error after {:.1} s: {e}", start.elapsed().as_secs_f64());
        return;
    }
    if std::env::var("PTCGA_DIST_CHILD").is_ok() {
        return;
    }
    let start = Instant::now();
    let outs = two_ranks("a_dead_peer_stops_the_other_rank_with_a_clear_error", "dies");
    assert!(start.elapsed() < Duration::from_secs(40), "bounded by the timeout");
    assert_eq!(outs[1].status.code(), Some(3));
    let text = String::from_utf8_lossy(&outs[0].stdout);
    assert!(text.contains("rank 0 of 2: all-reduce failed"), "{text}\n{}", String::from_utf8_lossy(&outs[0].stderr));
}

/// NCCL is built in exactly when LibTorch has CUDA (the Makefile adds the headers it needs). On
/// a GPU a one-process group carries CUDA tensors through NCCL and CPU ones through Gloo; without
/// one, opening it fails with a clear reason. `dist_backend`'s rules.
#[test]
fn nccl_on_a_gpu_or_a_clear_refusal_without_one() {
    let cuda_libtorch = env!("PTCGA_LIBTORCH_CUDA") == "1";
    assert_eq!(
        patchtcga_collective::nccl_available(),
        cuda_libtorch,
        "NCCL compiled in exactly when LibTorch has CUDA"
    );
    assert_eq!(Backend::choose("auto", None).unwrap(), Backend::Gloo);
    assert_eq!(Backend::choose("gloo", Some(0)).unwrap(), Backend::Gloo);
    assert!(Backend::choose("nccl", None).unwrap_err().to_string().contains("needs a CUDA device"));
    assert!(Backend::choose("mpi", Some(0)).unwrap_err().to_string().contains("auto, gloo or nccl"));
    if !patchtcga_collective::nccl_available() {
        assert!(Backend::choose("nccl", Some(0)).unwrap_err().to_string().contains("no NCCL"));
        assert_eq!(Backend::choose("auto", Some(0)).unwrap(), Backend::Gloo);
        return;
    }
    assert_eq!(Backend::choose("auto", Some(1)).unwrap(), Backend::Nccl { device: 1 });
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let launch = Launch { rank: 0, world: 1, local_rank: 0, master_addr: "127.0.0.1".into(), master_port: port };
    let group = ProcessGroup::new(&launch, Duration::from_secs(30), Backend::Nccl { device: 0 });
    if !tch::Cuda::is_available() {
        let e = group.err().expect("NCCL without a GPU must fail").to_string();
        assert!(e.contains("rank 0 of 1") && e.contains("NCCL on GPU 0: this process sees 0 GPU(s)"), "{e}");
        return;
    }
    let g = group.unwrap();
    let gpu = tch::Device::Cuda(0);
    let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(gpu);
    g.all_reduce_sum(&t).unwrap();
    g.broadcast(&t, 0).unwrap();
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(g.all_gather(&t).unwrap().size(), [1, 3]);
    let rows = g.all_gather_rows(&t.view([3, 1])).unwrap();
    assert_eq!(Vec::<f32>::try_from(rows.view([-1])).unwrap(), [1.0, 2.0, 3.0]);
    let (x, _) = batch_rows(0, 6);
    let (mean, var) = (Tensor::zeros([3], (Kind::Float, gpu)), Tensor::ones([3], (Kind::Float, gpu)));
    let y = g.batch_norm(&x.to_device(gpu), None, None, &mean, &var, 0.1, 1e-5).unwrap();
    let plain = x.batch_norm(None::<Tensor>, None::<Tensor>, None::<Tensor>, None::<Tensor>, true, 0.1, 1e-5, false);
    assert!(y.to_device(tch::Device::Cpu).allclose(&plain, 1e-5, 1e-5, false));
    g.barrier().unwrap();
}

#[test]
fn launches_from_torchrun_variables_and_from_the_release_hosts() {
    let hosts = vec!["node-a".to_owned(), "node-b".to_owned()];
    let l = Launch::from_hosts(&hosts, 1, 4, 2, "tcp://node-a:23456").unwrap();
    assert_eq!((l.rank, l.world, l.local_rank, l.master_addr.as_str(), l.master_port), (6, 8, 2, "node-a", 23456));
    assert!(Launch::from_hosts(&hosts, 2, 4, 0, "tcp://node-a:1").unwrap_err().to_string().contains("not in hosts"));
    assert!(Launch::from_hosts(&hosts, 0, 4, 0, "node-a:1").unwrap_err().to_string().contains("tcp://host:port"));
}
