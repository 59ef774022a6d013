//! LibTorch's CUDA backend registers itself when libtorch_cuda.so is loaded, but nothing refers to
//! it by symbol, so the linker's default `--as-needed` would drop it and CUDA would look absent.
//! Keep libtorch (which needs libtorch_cuda) linked into `patchtcga-nn` and the tests; never into
//! `patchtcga`, which runs no network and must not load LibTorch.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        for arg in ["-Wl,--no-as-needed", "-ltorch"] {
            println!("cargo:rustc-link-arg-bin=patchtcga-nn={arg}");
            println!("cargo:rustc-link-arg-tests={arg}");
        }
    }
}
