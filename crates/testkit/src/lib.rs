//! Fixtures for tests: the bundled sample slide and slides derived from it, written as the
//! tiled TIFFs OpenSlide reads (generic or Aperio-like, with or without resolution tags) and
//! as DICOM series, and the sample marked with pen ink.

mod dicom;
pub mod layouts;
pub mod pen;
mod tiff;
pub mod tiff_bytes;

use std::path::{Path, PathBuf};

pub use dicom::{DicomSpec, SERIES_UID, STUDY_UID};
pub use pen::mark_with_pen;
pub use tiff::{write_tiled_tiff, Coding, TiffSpec};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The bundled real H&E slide (Aperio SVS, 2220×2967 px, 0.499 µm/px).
pub fn sample_slide() -> PathBuf {
    repo_root().join("assets/cmu1_small_region.svs")
}

/// Runs test `name` of the calling test binary again as each rank of a `world`-process run on a
/// fresh loopback rendezvous (torchrun's variables set, plus `env`), and returns their outputs
/// in rank order. The test tells parent from child by a variable of `env`.
pub fn run_ranks(name: &str, world: usize, env: &[(&str, &str)]) -> Vec<std::process::Output> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("port").port();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args([name, "--exact", "--nocapture", "--test-threads", "1"])
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .envs(env.iter().copied())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start a rank")
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().expect("a rank's output")).collect()
}

/// Asserts that every rank of [`run_ranks`] succeeded and printed `rank N ok`.
pub fn assert_ranks_ok(outputs: &[std::process::Output]) {
    for (rank, o) in outputs.iter().enumerate() {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains(&format!("rank {rank} ok")),
            "rank {rank}: {text}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811C_9DC5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// The deterministic weights of `det` in tools/make_model_goldens.py, by parameter name and
/// shape (row-major): what the goldens' reference networks were filled with. (0.7071 is the rule's
/// own step, not 1/√2.)
#[allow(clippy::approx_constant)]
pub fn det_values(name: &str, shape: &[i64]) -> Vec<f32> {
    let n: i64 = shape.iter().product();
    let phase = fnv1a(name) as f64 / 2f64.powi(32) * 2.0 * std::f64::consts::PI;
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let fan_in = if shape.is_empty() { 1 } else { n / shape[0] };
    (0..n)
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
        .collect()
}

/// The goldens' deterministic input (`det_input` in tools/make_model_goldens.py), row-major.
pub fn det_input_values(n: i64) -> Vec<f32> {
    (0..n).map(|i| (0.5 * (i as f64 * 0.013).sin() + 0.3 * (i as f64 * 0.0071).cos()) as f32).collect()
}
