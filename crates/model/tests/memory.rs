//! Loading holds the model plus about one tensor, not a second copy of the weights (a test binary
//! of its own: it reads the process's peak resident memory).

use patchtcga_model::vit::VitConfig;
use patchtcga_model::{load, Backbone, Foundation, ImportOptions, Spec};
use tch::nn;
use tch::{Device, Tensor};

/// A field of /proc/self/status in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_giant_width_checkpoint_loads_with_little_more_than_the_model() {
    // GigaPath's width and MLP at 3 of its 40 blocks: ~85 M parameters, 340 MB of float32.
    let config = VitConfig { depth: 3, ..Foundation::GigaPath.config() };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("giant.safetensors");
    let size = {
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Backbone::new(&vs.root(), Spec::Vit(config));
        let tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        Tensor::write_safetensors(&tensors, &file).unwrap();
        tensors.iter().map(|(_, t)| t.numel() as u64 * 4).sum::<u64>()
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Backbone::new(&vs.root(), Spec::Vit(config));
    let largest = vs.variables().values().map(|t| t.numel() as u64 * 4).max().unwrap();
    // Resets the peak (VmHWM) to the present resident size (Linux's clear_refs "5").
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_bytes("VmRSS:");
    load(&vs, &file, "head", &ImportOptions::default()).unwrap();
    let extra = status_bytes("VmHWM:").saturating_sub(before);
    let mb = |b: u64| b as f64 / 1e6;
    eprintln!(
        "model {:.0} MB, largest tensor {:.0} MB, extra while loading {:.0} MB",
        mb(size),
        mb(largest),
        mb(extra)
    );
    assert!(
        (extra as f64) < 0.3 * size as f64,
        "loading took {:.0} MB beyond the {:.0} MB model (a second copy would be {:.0} MB)",
        mb(extra),
        mb(size),
        mb(size)
    );
}
