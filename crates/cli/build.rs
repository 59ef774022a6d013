//! LibTorch's CUDA backend registers itself when libtorch_cuda.so is loaded, but nothing refers to
//! it by symbol, so the linker's default `--as-needed` would drop it and CUDA would look absent.
//! Keep libtorch (which needs libtorch_cuda) linked into the binary and its tests.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
