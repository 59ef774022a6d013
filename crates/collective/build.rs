//! Compiles the c10d shim against the headers and libraries of the torch wheel tch links
//! (`LIBTORCH`), with Debian's libgloo-dev for the Gloo headers the wheel leaves out. Where the
//! wheel has CUDA (`libtorch_cuda`) and CUDA's headers are at hand (the wheel's `nvidia/*/include`
//! with the crt and cccl wheels the Makefile adds, or `CUDA_HOME`), the NCCL process group is
//! compiled in as well.

use std::path::{Path, PathBuf};

/// Headers the NCCL part needs beyond the torch wheel's own.
const CUDA_HEADERS: [&str; 4] = ["cuda_runtime_api.h", "crt/host_config.h", "nv/target", "nccl.h"];

/// Include folders that provide every CUDA header, or the first header none provides.
fn cuda_includes(torch: &Path) -> Result<Vec<PathBuf>, String> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(torch.join("../nvidia"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("include"))
        .filter(|p| p.is_dir())
        .collect();
    candidates.sort();
    let home = std::env::var_os("CUDA_HOME").map(PathBuf::from).unwrap_or_else(|| "/usr/local/cuda".into());
    candidates.push(home.join("include"));
    let mut found = Vec::new();
    for header in CUDA_HEADERS {
        let dir = candidates.iter().find(|d| d.join(header).exists()).ok_or_else(|| format!("no {header}"))?;
        if !found.contains(dir) {
            found.push(dir.clone());
        }
    }
    Ok(found)
}

fn main() {
    let torch = PathBuf::from(std::env::var("LIBTORCH").expect("LIBTORCH (set in .cargo/config.toml)"));
    println!("cargo:rerun-if-changed=shim/dist.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file("shim/dist.cpp")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false);
    let mut libs = vec!["torch_cpu", "c10", "torch"];
    // For the test that NCCL is built whenever LibTorch has CUDA.
    let has_cuda = torch.join("lib/libtorch_cuda.so").exists();
    println!("cargo:rustc-env=PTCGA_LIBTORCH_CUDA={}", u8::from(has_cuda));
    match if has_cuda { cuda_includes(&torch) } else { Err("LibTorch without CUDA".into()) } {
        Ok(dirs) => {
            build.define("USE_C10D_NCCL", None).define("USE_CUDA", None).includes(dirs);
            libs.extend(["torch_cuda", "c10_cuda"]);
        }
        Err(why) => println!("cargo:warning=distributed shim without NCCL ({why}): GPU collectives go through Gloo"),
    }
    build.compile("ptcga_dist");
    println!("cargo:rustc-link-search=native={}", torch.join("lib").display());
    for lib in libs {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}
