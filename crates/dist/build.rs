//! Compiles the c10d shim against the headers and libraries of the torch wheel tch links
//! (`LIBTORCH`), with Debian's libgloo-dev for the Gloo headers the wheel leaves out.

use std::path::PathBuf;

fn main() {
    let torch = PathBuf::from(std::env::var("LIBTORCH").expect("LIBTORCH (set in .cargo/config.toml)"));
    println!("cargo:rerun-if-changed=shim/dist.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("shim/dist.cpp")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .compile("ptcga_dist");
    println!("cargo:rustc-link-search=native={}", torch.join("lib").display());
    for lib in ["torch_cpu", "c10", "torch"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}
