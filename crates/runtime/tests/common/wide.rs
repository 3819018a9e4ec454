//! A ChatGLM3-shaped model whose matrices are all multiples of 256 columns wide, for the tests
//! that must reach the K-quant and iq4_xs kernels (the fixture's widths, 128 and 352, make every K
//! type fall back). Included with `#[path]` by the tests that use it.

use crate::common::FIXTURE;
use glm_convert::{convert, ConvertOptions, TypePolicy};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The trained fixture widened to hidden 256, ffn 512 and 8 heads of 32 (2 key/value groups, 2
/// layers, its tokenizer), computing the same function: the fixture's weights sit in the first
/// 128 hidden dimensions, its 4 heads are heads 0, 1 (group 0) and 4, 5 (group 1), its 352 ffn
/// units the first 352 of 512, and every other weight is zero, so the extra dimensions, heads and
/// units stay zero. The RMSNorm weights are divided by √2 (the mean square over 256 dimensions,
/// half of them zero, is half the fixture's; ε changes by that factor too, 1e-5 → effectively
/// 2e-5, which moves nothing visible). Perplexity and next-token distributions are the trained
/// fixture's, so the whole-model comparisons measure what they measure on a real model; every
/// matrix is 256 or 512 columns wide. Generated once per test binary.
pub fn wide_model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::common::shared_dir("wide-model");
        write_wide_model(&dir);
        dir
    })
}

// the fixture's shape and the wide one's
const HIDDEN: (usize, usize) = (128, 256);
const FFN: (usize, usize) = (352, 512);
const HEADS: (usize, usize) = (4, 8);
const HEAD_DIM: usize = 32;
const GROUPS: usize = 2;
/// Wide head of each fixture head (same key/value group: 2 → 4 heads per group).
const HEAD_MAP: [usize; 4] = [0, 1, 4, 5];

/// A zero f32 matrix `rows × cols` and a setter of one element.
struct Mat {
    cols: usize,
    v: Vec<f32>,
}

impl Mat {
    fn new(rows: usize, cols: usize) -> Mat {
        Mat {
            cols,
            v: vec![0.0; rows * cols],
        }
    }
    fn set(&mut self, r: usize, c: usize, x: f32) {
        self.v[r * self.cols + c] = x;
    }
}

/// The wide row of fixture row `r` of query_key_value (q heads, then k and v groups).
fn qkv_row(r: usize) -> usize {
    let q = HEADS.0 * HEAD_DIM;
    if r < q {
        HEAD_MAP[r / HEAD_DIM] * HEAD_DIM + r % HEAD_DIM
    } else {
        r - q + HEADS.1 * HEAD_DIM
    }
}

fn write_wide_model(dir: &Path) {
    use safetensors::tensor::{Dtype, TensorView};
    let fixture = Path::new(FIXTURE);
    std::fs::copy(fixture.join("tokenizer.model"), dir.join("tokenizer.model")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("config.json")).unwrap()).unwrap();
    for (key, v) in [
        ("hidden_size", HIDDEN.1),
        ("ffn_hidden_size", FFN.1),
        ("num_attention_heads", HEADS.1),
        ("kv_channels", HEAD_DIM),
        ("multi_query_group_num", GROUPS),
    ] {
        assert!(config[key].is_u64(), "fixture config has {key}");
        config[key] = v.into();
    }
    config["_name_or_path"] = "glmtool/tiny-chatglm3-wide".into();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();

    let bytes = std::fs::read(fixture.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, t) in st.tensors() {
        assert_eq!(t.dtype(), Dtype::F16, "{name}");
        let x: Vec<f32> = t
            .data()
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        let shape = t.shape().to_vec();
        let cols = shape.get(1).copied().unwrap_or(1);
        let at = |r: usize, c: usize| x[r * cols + c];
        let (h0, h1) = HIDDEN;
        let leaf = name.rsplit('.').nth(1).unwrap_or("");
        let (rows, wcols, m) = match leaf {
            "rotary_pos_emb" => continue, // a buffer converters ignore
            "word_embeddings" | "output_layer" => {
                let mut m = Mat::new(shape[0], h1);
                for r in 0..shape[0] {
                    for c in 0..h0 {
                        m.set(r, c, at(r, c));
                    }
                }
                (shape[0], h1, m)
            }
            "input_layernorm" | "post_attention_layernorm" | "final_layernorm" => {
                let mut m = Mat::new(h1, 1);
                for (c, &g) in x.iter().enumerate() {
                    m.set(c, 0, g / 2f32.sqrt());
                }
                (h1, 1, m)
            }
            "query_key_value" if name.ends_with(".bias") => {
                let mut m = Mat::new(HEADS.1 * HEAD_DIM + 2 * GROUPS * HEAD_DIM, 1);
                for (r, &v) in x.iter().enumerate() {
                    m.set(qkv_row(r), 0, v);
                }
                (m.v.len(), 1, m)
            }
            "query_key_value" => {
                let rows = HEADS.1 * HEAD_DIM + 2 * GROUPS * HEAD_DIM;
                let mut m = Mat::new(rows, h1);
                for r in 0..shape[0] {
                    for c in 0..h0 {
                        m.set(qkv_row(r), c, at(r, c));
                    }
                }
                (rows, h1, m)
            }
            "dense" => {
                // input columns are the heads' outputs
                let mut m = Mat::new(h1, HEADS.1 * HEAD_DIM);
                for r in 0..h0 {
                    for c in 0..HEADS.0 * HEAD_DIM {
                        m.set(
                            r,
                            HEAD_MAP[c / HEAD_DIM] * HEAD_DIM + c % HEAD_DIM,
                            at(r, c),
                        );
                    }
                }
                (h1, HEADS.1 * HEAD_DIM, m)
            }
            "dense_h_to_4h" => {
                // [gate; up]
                let mut m = Mat::new(2 * FFN.1, h1);
                for r in 0..2 * FFN.0 {
                    let wr = if r < FFN.0 { r } else { r - FFN.0 + FFN.1 };
                    for c in 0..h0 {
                        m.set(wr, c, at(r, c));
                    }
                }
                (2 * FFN.1, h1, m)
            }
            "dense_4h_to_h" => {
                let mut m = Mat::new(h1, FFN.1);
                for r in 0..h0 {
                    for c in 0..FFN.0 {
                        m.set(r, c, at(r, c));
                    }
                }
                (h1, FFN.1, m)
            }
            other => panic!("{name}: unexpected fixture tensor ({other})"),
        };
        let shape = if shape.len() == 1 {
            vec![rows]
        } else {
            vec![rows, wcols]
        };
        out.push((name.to_string(), shape, m.v));
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = out
        .into_iter()
        .map(|(name, shape, v)| {
            let b = v
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect();
            (name, shape, b)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(name, shape, b)| {
            (
                name.clone(),
                TensorView::new(Dtype::F16, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
}

/// [`wide_model`] converted with `policy`, cached by `name` in a directory shared by the tests
/// of one binary.
pub fn wide_gguf(name: &str, policy: TypePolicy) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| crate::common::shared_dir("wide"));
    let out = dir.join(format!("wide-{name}.gguf"));
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap();
    if !out.exists() {
        let opts = ConvertOptions {
            family: None,
            policy,
            overwrite: false,
            cancel: None,
            progress: &|_| {},
        };
        convert(wide_model(), &out, &opts).unwrap();
    }
    out
}
