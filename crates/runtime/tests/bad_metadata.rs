//! Metadata that would reach a ggml assertion, or size an allocation, is refused with a one-line
//! error naming the key: epsilon and rope base must be positive and finite, the integer
//! hyperparameters are bounded (gguf::names::HPARAM_BOUNDS).

use gguf::{names, GgmlType, GgufFile, GgufWriter, TensorDecl, Value};
use glm_runtime::Model;
use std::path::{Path, PathBuf};

mod common;
use common::gguf;

/// The fixture with one metadata value replaced.
fn with_value(dir: &Path, key: &str, v: Value) -> PathBuf {
    let src = GgufFile::open(gguf(GgmlType::F16)).unwrap();
    let metadata: Vec<(String, Value)> = src
        .metadata
        .iter()
        .map(|(k, old)| (k.clone(), if k == key { v.clone() } else { old.clone() }))
        .collect();
    assert!(
        metadata.iter().any(|(k, _)| k == key),
        "{key} not in the fixture"
    );
    let decls = src
        .tensors
        .iter()
        .map(|t| TensorDecl {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let out = dir.join(format!("{}.gguf", key.replace('.', "_")));
    let mut w = GgufWriter::new(
        std::io::BufWriter::new(std::fs::File::create(&out).unwrap()),
        &metadata,
        decls,
    )
    .unwrap();
    for t in &src.tensors {
        w.write_tensor(&t.name, src.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
    out
}

fn load_error(path: &Path) -> String {
    match Model::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_epsilon_and_rope_base_are_errors_not_aborts() {
    let dir = tempfile::tempdir().unwrap();
    for (key, bad) in [
        (names::LAYER_NORM_RMS_EPS, 0.0f32),
        (names::LAYER_NORM_RMS_EPS, -1e-5),
        (names::LAYER_NORM_RMS_EPS, f32::NAN),
        (names::LAYER_NORM_RMS_EPS, f32::INFINITY),
        (names::ROPE_FREQ_BASE, 0.0),
        (names::ROPE_FREQ_BASE, -10000.0),
        (names::ROPE_FREQ_BASE, f32::NAN),
    ] {
        let e = load_error(&with_value(dir.path(), key, Value::F32(bad)));
        assert!(
            e.contains(key) && e.contains("positive finite") && !e.contains('\n'),
            "{key} = {bad}: {e}"
        );
    }
}

#[test]
fn oversized_hyperparameters_are_refused_before_anything_is_sized_by_them() {
    let dir = tempfile::tempdir().unwrap();
    for (key, v) in [
        (names::BLOCK_COUNT, 1u32 << 24),
        (names::BLOCK_COUNT, u32::MAX),
        (names::BLOCK_COUNT, 1_000_000),
        (names::CONTEXT_LENGTH, u32::MAX),
        (names::HEAD_COUNT, 1 << 20),
        (names::EMBEDDING_LENGTH, u32::MAX),
    ] {
        let t = std::time::Instant::now();
        let e = load_error(&with_value(dir.path(), key, Value::U32(v)));
        assert!(
            e.contains(key) && e.contains("out of range") && e.len() < 300,
            "{key} = {v}: {e}"
        );
        assert!(
            t.elapsed().as_secs() < 5,
            "{key} = {v} took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn many_missing_tensors_make_one_short_line() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_error(&with_value(
        dir.path(),
        names::BLOCK_COUNT,
        Value::U32(1000),
    ));
    assert!(
        e.contains("is missing") && e.contains("more") && e.len() < 400 && !e.contains('\n'),
        "{e}"
    );
}
