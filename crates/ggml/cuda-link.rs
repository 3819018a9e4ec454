// Link settings for the CUDA build (feature `cuda`), shared by the build scripts of every package
// that links executables (glm-ggml's and glm-runtime's tests, glmtool): `include!`d, not a crate.
//
// ggml b2757's CUDA backend calls the driver API (`cuMemCreate`, ...) but ggml-sys-bleedingedge
// does not link `libcuda`. It is added as a link *argument*, which goes after every library on
// the linker's command line: a `rustc-link-lib` would be placed before ggml's static library,
// where GNU ld's `--as-needed` drops it. At build time `libcuda.so` may be the toolkit's stub
// (`$CUDA_PATH/lib64/stubs`); at run time the driver's `libcuda.so.1` is loaded (the soname).
fn cuda_link() {
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cuda = std::env::var("CUDA_PATH").unwrap_or_else(|_| "/usr/local/cuda".into());
    println!("cargo:rustc-link-search=native={cuda}/lib64");
    println!("cargo:rustc-link-search=native={cuda}/lib64/stubs");
    println!("cargo:rustc-link-arg=-lcuda");
}
