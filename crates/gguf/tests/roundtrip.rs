//! GGUF writer -> reader round trip, and hand-made broken files (each must be a clear error).

use gguf::{Array, GgmlType, GgufError, GgufFile, GgufWriter, TensorDecl, Value, ValueType};
use std::io::Write;

fn sample_metadata() -> Vec<(String, Value)> {
    vec![
        (
            "general.architecture".into(),
            Value::String("chatglm".into()),
        ),
        ("general.alignment".into(), Value::U32(64)),
        ("a.u8".into(), Value::U8(7)),
        ("a.i8".into(), Value::I8(-7)),
        ("a.u16".into(), Value::U16(65535)),
        ("a.i16".into(), Value::I16(-300)),
        ("a.i32".into(), Value::I32(-70000)),
        ("a.f32".into(), Value::F32(1e-5)),
        ("a.bool".into(), Value::Bool(true)),
        ("a.u64".into(), Value::U64(1 << 40)),
        ("a.i64".into(), Value::I64(-(1 << 40))),
        ("a.f64".into(), Value::F64(std::f64::consts::PI)),
        (
            "a.strs".into(),
            Value::strings(vec!["<unk>".into(), "▁你好".into(), "".into()]),
        ),
        ("a.empty".into(), Value::Array(Array::empty(ValueType::F32))),
        (
            "a.nested".into(),
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::U8(vec![3, 4, 5]),
            ])),
        ),
    ]
}

fn write(path: &std::path::Path, md: &[(String, Value)], tensors: &[(TensorDecl, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = GgufWriter::new(f, md, tensors.iter().map(|(d, _)| d.clone()).collect()).unwrap();
    for (d, data) in tensors {
        w.write_tensor(&d.name, data).unwrap();
    }
    w.finish().unwrap();
}

fn tensors() -> Vec<(TensorDecl, Vec<u8>)> {
    vec![
        (
            TensorDecl {
                name: "a".into(),
                dims: vec![3],
                ty: GgmlType::F32,
            },
            (0..12).collect(),
        ),
        (
            TensorDecl {
                name: "b".into(),
                dims: vec![32, 2],
                ty: GgmlType::Q8_0,
            },
            (0..68).map(|i| i as u8).collect(),
        ),
        (
            TensorDecl {
                name: "c".into(),
                dims: vec![5, 1, 1],
                ty: GgmlType::F16,
            },
            vec![9; 10],
        ),
    ]
}

#[test]
fn round_trip_preserves_metadata_tensors_and_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.gguf");
    let md = sample_metadata();
    let ts = tensors();
    write(&p, &md, &ts);
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.metadata, md);
    assert_eq!(f.data_offset % 64, 0);
    for (d, data) in &ts {
        let t = f.tensor(&d.name).unwrap();
        assert_eq!(t.dims, d.dims);
        assert_eq!(t.ty, d.ty);
        assert_eq!(t.offset % 64, 0);
        assert_eq!(f.tensor_data(t), &data[..]);
    }
    assert_eq!(f.get_u64("a.u16").unwrap(), 65535);
    assert!((f.get_f64("a.f32").unwrap() - 1e-5).abs() < 1e-12);
    assert_eq!(f.get_str_array("a.strs").unwrap()[1], "▁你好");
    assert!(matches!(
        f.get_u64("missing.key"),
        Err(GgufError::MissingKey { .. })
    ));
    let e = f.get_str("a.u8").unwrap_err().to_string();
    assert!(
        e.contains("a.u8") && e.contains("should be a string"),
        "{e}"
    );
}

#[test]
fn writer_rejects_wrong_sizes_order_and_missing_tensors() {
    let ts = tensors();
    let decls: Vec<_> = ts.iter().map(|(d, _)| d.clone()).collect();
    let mut w = GgufWriter::new(Vec::new(), &[], decls.clone()).unwrap();
    assert!(w
        .write_tensor("b", &ts[1].1)
        .unwrap_err()
        .to_string()
        .contains("out of order"));
    assert!(w
        .write_tensor("a", &[0; 11])
        .unwrap_err()
        .to_string()
        .contains("12 expected"));
    let mut w = GgufWriter::new(Vec::new(), &[], decls.clone()).unwrap();
    w.write_tensor("a", &ts[0].1).unwrap();
    assert!(w.finish().unwrap_err().to_string().contains("only 1 of 3"));
    let bad = vec![TensorDecl {
        name: "q".into(),
        dims: vec![33, 2],
        ty: GgmlType::Q4_0,
    }];
    assert!(GgufWriter::new(Vec::new(), &[], bad)
        .err()
        .unwrap()
        .to_string()
        .contains("not a multiple of the 32-element block"));
}

fn open_bytes(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    match GgufFile::open(&p) {
        Ok(_) => panic!("accepted a bad file"),
        Err(e) => e.to_string(),
    }
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(n_tensors.to_le_bytes());
    v.extend(n_kv.to_le_bytes());
    v
}

#[test]
fn broken_files_are_clear_errors() {
    assert!(open_bytes(b"").contains("not a GGUF file"));
    assert!(open_bytes(b"GGML\x03\0\0\0").contains("not a GGUF file"));
    let mut v = b"GGUF".to_vec();
    v.extend(1u32.to_le_bytes());
    assert!(open_bytes(&v).contains("unsupported GGUF version 1"));
    assert!(open_bytes(&header(1u64 << 40, 0)).contains("implausible"));
    // a string length larger than the file
    let mut v = header(0, 1);
    v.extend(u64::MAX.to_le_bytes());
    assert!(open_bytes(&v).contains("exceeds"));
    // an array count larger than the file
    let mut v = header(0, 1);
    v.extend(1u64.to_le_bytes());
    v.push(b'k');
    v.extend(9u32.to_le_bytes());
    v.extend(4u32.to_le_bytes());
    v.extend((1u64 << 50).to_le_bytes());
    let e = open_bytes(&v);
    assert!(e.contains("k: array of") && e.contains("cannot fit"), "{e}");
    // unknown value type
    let mut v = header(0, 1);
    v.extend(1u64.to_le_bytes());
    v.push(b'k');
    v.extend(99u32.to_le_bytes());
    assert!(open_bytes(&v).contains("unknown value type 99"));
    // truncated tensor data: write a good file and cut it
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.gguf");
    write(&p, &sample_metadata(), &tensors());
    let full = std::fs::read(&p).unwrap();
    let c_start = {
        let f = GgufFile::open(&p).unwrap();
        (f.data_offset + f.tensor("c").unwrap().offset) as usize
    };
    let e = open_bytes(&full[..c_start + 5]);
    assert!(e.contains("truncated") && e.contains("tensor c"), "{e}");
    // a cut inside the header
    let e = open_bytes(&full[..40]);
    assert!(
        e.contains("bad GGUF at byte 32") && e.contains("metadata key #0"),
        "{e}"
    );
    // unknown ggml type in a tensor
    let mut v = header(1, 0);
    v.extend(1u64.to_le_bytes());
    v.push(b't');
    v.extend(1u32.to_le_bytes());
    v.extend(4u64.to_le_bytes());
    v.extend(77u32.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    assert!(open_bytes(&v).contains("tensor t: unknown ggml type 77"));
}

#[test]
fn atomic_file_leaves_nothing_on_drop_and_refuses_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.gguf");
    {
        let mut f = gguf::AtomicFile::create(&dest, false).unwrap();
        f.write_all(b"partial").unwrap();
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary file left behind"
    );
    let mut f = gguf::AtomicFile::create(&dest, false).unwrap();
    f.write_all(b"done").unwrap();
    assert_eq!(f.commit().unwrap(), 4, "commit returns the file size");
    assert_eq!(std::fs::read(&dest).unwrap(), b"done");
    assert!(gguf::AtomicFile::create(&dest, false)
        .err()
        .unwrap()
        .to_string()
        .contains("already exists"));
    assert!(gguf::AtomicFile::create(&dest, true).is_ok());
}

#[test]
fn hf_names_map_to_gguf_names() {
    use gguf::names::hf_to_gguf;
    assert_eq!(
        hf_to_gguf("transformer.embedding.word_embeddings.weight").unwrap(),
        "token_embd.weight"
    );
    assert_eq!(
        hf_to_gguf("transformer.encoder.layers.27.mlp.dense_h_to_4h.weight").unwrap(),
        "blk.27.ffn_up.weight"
    );
    assert_eq!(
        hf_to_gguf("transformer.encoder.layers.3.self_attention.query_key_value.bias").unwrap(),
        "blk.3.attn_qkv.bias"
    );
    assert_eq!(
        hf_to_gguf("transformer.output_layer.weight").unwrap(),
        "output.weight"
    );
    assert!(hf_to_gguf("transformer.rotary_pos_emb.inv_freq").is_none());
}

/// Hundreds of thousands of keys or tensors with a duplicate at the very end: refused, naming
/// it (duplicate checks are linear: pairwise comparison took minutes on such files).
#[test]
fn duplicates_among_many_keys_and_tensors_are_found() {
    let n = 1u64 << 18;
    let mut v = header(0, n);
    for i in 0..n {
        let key = format!("k{}", if i == n - 1 { 7 } else { i });
        v.extend((key.len() as u64).to_le_bytes());
        v.extend(key.as_bytes());
        v.extend(0u32.to_le_bytes()); // u8
        v.push(1);
    }
    let e = open_bytes(&v);
    assert!(e.contains("duplicate metadata key k7"), "{e}");

    let n = 200_000u64;
    let mut v = header(n, 0);
    for i in 0..n {
        let name = format!("t{}", if i == n - 1 { 3 } else { i });
        v.extend((name.len() as u64).to_le_bytes());
        v.extend(name.as_bytes());
        v.extend(1u32.to_le_bytes()); // 1 dimension
        v.extend(32u64.to_le_bytes());
        v.extend(0u32.to_le_bytes()); // f32
        v.extend((i * 128).to_le_bytes());
    }
    let e = open_bytes(&v);
    assert!(e.contains("duplicate tensor name t3"), "{e}");
}
