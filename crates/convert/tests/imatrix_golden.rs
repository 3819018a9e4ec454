//! Importance matrices against llama.cpp 2026 (golden data from tools/make_imatrix_golden.sh in
//! tests/fixtures/imatrix; no llama.cpp needed here):
//!
//! * llama-imatrix's GGUF file reads, and writes back byte for byte; its legacy `.dat` twin
//!   gives the same weights;
//! * `quantize --imatrix` with llama-imatrix's file (GGUF and .dat) and with glmtool's own
//!   gives, for every case llama-quantize was run on (file types whose weighted quantizers the
//!   tiny model's 128- and 352-wide rows reach, `--pure`, `--include-weights`,
//!   `--exclude-weights`), every tensor's type and bytes as llama-quantize did, and the same
//!   `quantize.imatrix.*` keys.

use gguf::{names, GgufFile, Value};
use glm_convert::quant::imatrix::{Format, Imatrix, ImatrixSpec};
use glm_convert::{
    convert, requantize_with, ConvertOptions, FileType, RequantizeOptions, TypePolicy,
};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[path = "../../runtime/tests/common/shared_dir.rs"]
mod shared_dir;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const GOLDEN_DIR: &str = "tests/fixtures/imatrix";

fn fixture(name: &str) -> PathBuf {
    Path::new(ROOT).join(GOLDEN_DIR).join(name)
}

/// The tiny fixture model as f32 (what the script gave llama.cpp).
fn tiny_f32() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = shared_dir::shared_dir("tiny").join("tiny-f32.gguf");
        let opts = ConvertOptions {
            family: None,
            policy: TypePolicy::of(FileType::F32),
            overwrite: true,
            cancel: None,
            progress: &|_| {},
        };
        convert(
            &Path::new(ROOT).join("tests/fixtures/tiny-chatglm3"),
            &out,
            &opts,
        )
        .unwrap();
        out
    })
}

fn fnv1a64(data: &[u8]) -> String {
    let mut h: u64 = 0xCBF29CE484222325;
    for &x in data {
        h = (h ^ x as u64).wrapping_mul(0x100000001B3);
    }
    format!("{h:016x}")
}

/// A line of quantized.txt: (key, type, value) of a `kv` line, (name, type, digest) of a
/// `tensor` line.
type Triple = (String, String, String);

/// One llama-quantize run of quantized.txt.
struct Case {
    imatrix: String,
    ftype: String,
    opts: Vec<String>,
    /// (key, type, value) as the script prints them.
    kv: Vec<Triple>,
    /// (name, type, digest), by name.
    tensors: Vec<Triple>,
    /// Every key, in file order.
    key_order: Vec<String>,
    /// Every tensor name, in file order.
    tensor_order: Vec<String>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture("quantized.txt"))
        .expect("tests/fixtures/imatrix/quantized.txt (bash tools/make_imatrix_golden.sh)");
    let mut out: Vec<Case> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut w = line.split(' ');
        match w.next() {
            Some("case") => {
                let imatrix = w.next().unwrap().to_string();
                let ftype = w.next().unwrap().to_string();
                let opts: Vec<String> = w.filter(|o| *o != "-").map(String::from).collect();
                out.push(Case {
                    imatrix,
                    ftype,
                    opts,
                    kv: Vec::new(),
                    tensors: Vec::new(),
                    key_order: Vec::new(),
                    tensor_order: Vec::new(),
                });
            }
            Some("keys") => out.last_mut().unwrap().key_order = w.map(String::from).collect(),
            Some("order") => out.last_mut().unwrap().tensor_order = w.map(String::from).collect(),
            Some("kv") => {
                let (k, t) = (w.next().unwrap(), w.next().unwrap());
                let v = w.collect::<Vec<_>>().join(" ");
                out.last_mut().unwrap().kv.push((k.into(), t.into(), v));
            }
            Some("tensor") => {
                let v: Vec<String> = w.map(String::from).collect();
                out.last_mut()
                    .unwrap()
                    .tensors
                    .push((v[0].clone(), v[1].clone(), v[2].clone()));
            }
            other => panic!("quantized.txt: unexpected line {other:?}"),
        }
    }
    out
}

/// What the script prints for a GGUF file of ours.
fn summary(path: &Path) -> (Vec<Triple>, Vec<Triple>) {
    let f = GgufFile::open(path).unwrap();
    let mut kv: Vec<Triple> = f
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("quantize.imatrix."))
        .map(|(k, v)| match v {
            Value::U32(x) => (k.clone(), "u32".to_string(), x.to_string()),
            Value::String(s) => (k.clone(), "str".to_string(), s.clone()),
            other => panic!("{k} is {other:?}"),
        })
        .collect();
    kv.sort();
    let mut tensors: Vec<Triple> = f
        .tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.ty.name().to_string(),
                fnv1a64(f.tensor_data(t)),
            )
        })
        .collect();
    tensors.sort();
    (kv, tensors)
}

#[test]
fn llama_imatrix_files_read_and_write_back_exactly() {
    let path = fixture("llama.imatrix.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let im = Imatrix::load(&path).unwrap();
    assert_eq!(im.format, Format::Gguf);
    assert_eq!(im.chunk_size, 128);
    assert_eq!(im.chunk_count, 24);
    assert_eq!(im.datasets, ["tests/fixtures/imatrix/calibration.txt"]);
    // 2 layers × (attn_qkv, attn_output, ffn_up, ffn_down) + output.weight (--process-output)
    assert_eq!(im.entries.len(), 9);
    for (name, e) in &im.entries {
        assert_eq!(e.counts, [24 * 128], "{name}");
    }
    assert_eq!(im.entries["blk.1.ffn_down.weight"].sums.len(), 352);
    assert_eq!(
        im.write_gguf(Vec::new()).unwrap(),
        bytes,
        "our writer differs from llama-imatrix's"
    );

    // the legacy twin: value = sum / count · ncall, read back as value / ncall
    let dat = Imatrix::load(&fixture("llama.imatrix.dat")).unwrap();
    assert_eq!(dat.format, Format::Legacy);
    assert_eq!(dat.chunk_count, 24);
    assert_eq!(dat.datasets, im.datasets);
    let (a, b) = (im.quant_weights(), dat.quant_weights());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, w) in &a {
        for (x, y) in w.iter().zip(&b[name]) {
            // two extra f32 roundings (· ncall, / ncall): at most 2 ulps apart
            assert!(
                (x - y).abs() <= 2.0 * f32::EPSILON * x.abs(),
                "{name}: {x} vs {y}"
            );
        }
    }
    // glmtool's own file reads too
    let ours = Imatrix::load(&fixture("glmtool.imatrix.gguf")).unwrap();
    assert_eq!(
        ours.entries.keys().collect::<Vec<_>>(),
        im.entries.keys().collect::<Vec<_>>()
    );
    assert_eq!(ours.chunk_count, 24);
    assert_eq!(
        (&ours.datasets, ours.chunk_size),
        (&im.datasets, im.chunk_size)
    );
    // and is laid out exactly as llama-imatrix lays out its own: only the sums differ
    let theirs_with_our_sums = Imatrix {
        entries: ours.entries.clone(),
        ..im.clone()
    };
    assert_eq!(
        theirs_with_our_sums.write_gguf(Vec::new()).unwrap(),
        std::fs::read(fixture("glmtool.imatrix.gguf")).unwrap()
    );
}

/// `convert --imatrix` weights the quantizers as `quantize --imatrix` does: converting the
/// checkpoint (f16 values, exact in f32) gives llama-quantize's bytes of the f32 file.
#[test]
fn convert_with_an_imatrix_gives_the_same_bytes() {
    let case = cases()
        .into_iter()
        .find(|c| c.imatrix == "llama.imatrix.gguf" && c.ftype == "Q4_0" && c.opts == ["--pure"])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.gguf");
    let opts = ConvertOptions {
        family: None,
        policy: TypePolicy {
            pure: true,
            ..TypePolicy::of(FileType::Q4_0)
        },
        overwrite: false,
        cancel: None,
        progress: &|_| {},
    };
    let spec = ImatrixSpec {
        path: fixture("llama.imatrix.gguf"),
        ..Default::default()
    };
    glm_convert::convert_with(
        &Path::new(ROOT).join("tests/fixtures/tiny-chatglm3"),
        &out,
        &opts,
        Some(&spec),
    )
    .unwrap();
    let (kv, tensors) = summary(&out);
    assert_eq!(tensors, case.tensors);
    assert_eq!(kv.len(), case.kv.len());
    for ((k, t, v), (k2, t2, v2)) in kv.iter().zip(&case.kv) {
        assert_eq!((k, t), (k2, t2));
        if k != names::QUANTIZE_IMATRIX_FILE {
            assert_eq!(v, v2, "{k}");
        }
    }
}

#[test]
fn quantize_with_an_imatrix_gives_llama_quantizes_bytes() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let ft = FileType::parse(&c.ftype).unwrap();
        let mut spec = ImatrixSpec {
            path: fixture(&c.imatrix),
            ..Default::default()
        };
        let mut pure = false;
        let mut it = c.opts.iter();
        while let Some(o) = it.next() {
            match o.as_str() {
                "--pure" => pure = true,
                "--include-weights" => spec.include.push(it.next().unwrap().clone()),
                "--exclude-weights" => spec.exclude.push(it.next().unwrap().clone()),
                other => panic!("option {other}"),
            }
        }
        let out = dir.path().join(format!("{i}.gguf"));
        let opts = RequantizeOptions {
            policy: TypePolicy {
                pure,
                ..TypePolicy::of(ft)
            },
            allow_requantize: false,
            overwrite: false,
            cancel: None,
            progress: &|_| {},
        };
        requantize_with(tiny_f32(), &out, &opts, Some(&spec)).unwrap();
        let (mut kv, tensors) = summary(&out);
        // the file key is the path as given: the script's is relative to the repository
        for (k, _, v) in &mut kv {
            if k == names::QUANTIZE_IMATRIX_FILE {
                assert_eq!(*v, spec.path.to_string_lossy());
                *v = format!("{GOLDEN_DIR}/{}", c.imatrix);
            }
        }
        let label = format!("{} {} {}", c.imatrix, c.ftype, c.opts.join(" "));
        // the layout: llama-quantize's key and tensor order (layout.rs)
        let f = GgufFile::open(&out).unwrap();
        let keys: Vec<&str> = f.metadata.iter().map(|(k, _)| k.as_str()).collect();
        let order: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
        if keys != c.key_order || order != c.tensor_order {
            failures.push(format!(
                "{label}: keys {keys:?} and tensors {order:?}, llama-quantize {:?} and {:?}",
                c.key_order, c.tensor_order
            ));
        }
        if kv != c.kv {
            failures.push(format!("{label}: keys {kv:?}, llama-quantize {:?}", c.kv));
        }
        let differ: Vec<String> = tensors
            .iter()
            .zip(&c.tensors)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("{} ({} vs llama's {} {})", a.0, a.1, b.0, b.1))
            .collect();
        if tensors.len() != c.tensors.len() || !differ.is_empty() {
            failures.push(format!("{label}: {}", differ.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
