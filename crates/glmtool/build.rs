include!("../ggml/cuda-link.rs");

/// `--version`'s details: the enabled backends and the git commit of the build.
fn version_details() {
    let mut backends = vec!["cpu"];
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        backends.push("cuda");
    }
    if std::env::var_os("CARGO_FEATURE_METAL").is_some() {
        backends.push("metal");
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!(
        "cargo:rustc-env=GLMTOOL_LONG_VERSION={} (backends: {}; ggml of llama.cpp b2757; commit {commit})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
        backends.join(", ")
    );
    // a new commit gets a new version string: watch HEAD and the branch it points to
    let git = std::path::Path::new("../../.git");
    let mut watch = vec![git.join("HEAD"), git.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            watch.push(git.join(r));
        }
    }
    for w in watch.iter().filter(|w| w.exists()) {
        println!("cargo:rerun-if-changed={}", w.display());
    }
}

fn main() {
    cuda_link();
    version_details();
}
