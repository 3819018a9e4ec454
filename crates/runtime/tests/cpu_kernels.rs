//! glmtool's own CPU kernels (glm-kernels, `--cpu-kernels`) against ggml's `mul_mat` on the
//! whole model, every instruction set this CPU runs, every weight type the kernels take:
//!
//! - the trained fixture (hidden 128, ffn 352) as q4_0, q8_0, and the Q4_K_M / Q5_K_M mixes,
//!   whose K types all fall back there (q5_0, q5_1, q8_0: what ChatGLM3-6B's ffn_down gets,
//!   13696 not being a multiple of 256);
//! - a random model whose widths are multiples of 256 (tests/common/wide.rs), so every matrix
//!   reaches the q3_K, q4_K, q5_K, q6_K and iq4_xs kernels: each type `--pure`, and the real
//!   Q3_K_M, Q4_K_M and Q5_K_M mixes (q3_K/q4_K/q5_K, q4_K/q5_K/q6_K for the use_more_bits
//!   layers and the head);
//! - iq4_nl and iq4_xs on the wide model against ggml, and the fixture's iq4_nl fallbacks
//!   (rows of an odd number of blocks, where b2757's iq4_nl dot product reads past the row)
//!   against llama.cpp 2026's semantics (`iq4_nl_fallbacks_match_2026_semantics`).
//!
//! Integer dot products are the same; the float accumulation order differs, and activations are
//! re-quantized to int8 in every layer, so an f32-noise difference that lands on a rounding
//! boundary flips one activation by a quantization step. Measured on an AVX-512 Xeon: logits of a
//! 100-token prompt agree to 2e-7 of their range, but an AVX2-only EPYC saw a flip move one logit
//! by 3e-3 of the range, and over 4 × 128-token perplexity chunks such flips moved perplexity by
//! ~2.5e-4 relative (6e-5 over the whole held-out file; 8 chunks are used here). So the whole-model bounds are
//! statistical, not per logit: KL divergence against the reference under 1 % of the
//! quantization's own KL, perplexity to 1e-3 relative, greedy ids up to the first near-tie.

use gguf::{GgmlType, GgufFile};
use glm_convert::{FileType, TypePolicy};
use glm_runtime::perplexity::{perplexity, KlMode};
use glm_runtime::plan::PlanShape;
use glm_runtime::sampler::argmax;
use glm_runtime::{CacheType, Isa, LoadOptions, Model, Session, SessionOptions};
use std::path::{Path, PathBuf};

mod common;
use common::{gguf, FIXTURE};
#[path = "common/wide.rs"]
mod wide;

/// Perplexity chunks of 128 tokens (of the 25 in heldout.txt): a flip's effect on perplexity
/// is diluted by the number of scored positions.
const CHUNKS: usize = 8;

fn load_path(path: &Path, kernels: Option<Isa>) -> Model {
    let shape = PlanShape {
        n_ctx: 128,
        n_batch: 64,
        cache_type: CacheType::F32,
        logits_rows: 1,
        ..Default::default()
    };
    let opts = LoadOptions {
        cpu_kernels: kernels,
        ..LoadOptions::cpu(shape)
    };
    Model::load_with(path, &opts).unwrap()
}

fn load(ty: GgmlType, kernels: Option<Isa>) -> Model {
    load_path(&gguf(ty), kernels)
}

fn opts() -> SessionOptions {
    SessionOptions {
        n_ctx: 128,
        n_batch: 64,
        n_threads: 1, // tests run in parallel on 2 cores
        cache_type: CacheType::F32,
        ..Default::default()
    }
}

fn tokens(m: &Model) -> Vec<u32> {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("heldout.txt")).unwrap();
    m.tokenizer.encode(&text).unwrap()
}

/// The fixture converted with file type `ft` (a mix), cached per binary.
fn fixture_mix(ft: FileType) -> PathBuf {
    common_fixture_with(ft.name(), TypePolicy::of(ft))
}

fn common_fixture_with(name: &str, policy: TypePolicy) -> PathBuf {
    use std::sync::OnceLock;
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let dir = DIR.get_or_init(|| common::shared_dir("mixes"));
    let out = dir.join(format!("fixture-{name}.gguf"));
    let _g = LOCK.lock().unwrap();
    if !out.exists() {
        let opts = glm_convert::ConvertOptions {
            family: None,
            policy,
            overwrite: false,
            cancel: None,
            progress: &|_| {},
        };
        glm_convert::convert(Path::new(FIXTURE), &out, &opts).unwrap();
    }
    out
}

/// The wide model, every quantizable matrix of type `ty`.
fn wide_pure(ty: GgmlType) -> PathBuf {
    let policy = TypePolicy {
        pure: true,
        ..TypePolicy::new(ty)
    };
    wide::wide_gguf(&format!("pure-{ty}"), policy)
}

/// The wide model as file type `ft` (a mix).
fn wide_mix(ft: FileType) -> PathBuf {
    wide::wide_gguf(ft.name(), TypePolicy::of(ft))
}

#[test]
fn matrices_are_repacked_only_when_asked() {
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let m = load(ty, Some(Isa::Scalar));
        assert_eq!(m.cpu_kernels(), Some(Isa::Scalar));
        assert!(m.packed_bytes() > 0);
        let m = load(ty, None);
        assert_eq!((m.cpu_kernels(), m.packed_bytes()), (None, 0));
    }
    // nothing to repack in an f16 model
    assert_eq!(load(GgmlType::F16, Some(Isa::detect())).cpu_kernels(), None);
}

/// Every 2-D quantized matrix of the file but the embedding table, with its type.
fn quantized_matrices(path: &Path) -> Vec<(String, GgmlType)> {
    let f = GgufFile::open(path).unwrap();
    f.tensors
        .iter()
        .filter(|t| t.dims.len() == 2 && t.ty.is_quantized() && t.name != "token_embd.weight")
        .map(|t| (t.name.clone(), t.ty))
        .collect()
}

/// Mean over positions of KL(p || q) between the softmaxes of two `[positions × n_vocab]`
/// logit arrays, in nats (f64 throughout).
fn mean_kl(p: &[f32], q: &[f32], n_vocab: usize) -> f64 {
    fn log_softmax(row: &[f32]) -> impl Iterator<Item = f64> + '_ {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let z = row
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        row.iter().map(move |&v| v as f64 - z)
    }
    let rows = p.len() / n_vocab;
    let total: f64 = p
        .chunks_exact(n_vocab)
        .zip(q.chunks_exact(n_vocab))
        .map(|(a, b)| {
            log_softmax(a)
                .zip(log_softmax(b))
                .map(|(la, lb)| la.exp() * (la - lb))
                .sum::<f64>()
        })
        .sum();
    total / rows as f64
}

/// Our kernels on the quantized model `quant`, every instruction set, against `reference`:
/// ggml's `mul_mat` on the same file, or (`reference` given) another file whose weights and
/// integer products are the same (iq4_nl transcoded to q8_0). Robust by design: the two compute the same integer products, but the
/// float accumulation order differs and activations are re-quantized to int8 in every layer, so
/// an f32-noise difference that lands on a rounding boundary flips one activation by a
/// quantization step — differently on AVX2, AVX-512 and scalar (max-logit comparisons failed on
/// an AVX2-only EPYC for exactly that reason). Such flips are a tiny share of the quantization
/// error the kernels implement, so the bound is relative to that error: the KL divergence between
/// our logits and the reference's must stay under `share` of the KL divergence between the
/// reference and the f16 model `f16`, on the same 100-token prompt; and perplexity over
/// [`CHUNKS`] chunks within `ppl_tol` relative. Every quantized matrix must have been repacked (none left on
/// ggml's path). Exactness of each kernel with identical activations is
/// crates/kernels/tests/kernels.rs.
fn check_model(
    label: &str,
    f16: &Path,
    quant: &Path,
    reference: Option<&Path>,
    share: f64,
    ppl_tol: f64,
) {
    let f16 = load_path(f16, None);
    let toks = tokens(&f16);
    let prompt = &toks[..100];
    let n_vocab = f16.hparams.n_vocab;
    let eval = |m: &Model| {
        Session::new(m, &opts())
            .unwrap()
            .eval(prompt, true)
            .unwrap()
    };
    let ppl = |m: &Model| {
        let mut s = Session::new(m, &opts()).unwrap();
        perplexity(
            &mut s,
            &toks[..128 * CHUNKS],
            128,
            None,
            KlMode::None,
            |_, _| {},
        )
        .unwrap()
        .ppl
    };
    let base = load_path(reference.unwrap_or(quant), None);
    let want = eval(&base);
    let quant_kl = mean_kl(&eval(&f16), &want, n_vocab);
    assert!(quant_kl > 0.0, "{label}: quantization changed nothing?");
    let want_ppl = ppl(&base);
    let matrices = quantized_matrices(quant);
    for isa in Isa::available() {
        let m = load_path(quant, Some(isa));
        let packed: Vec<String> = m.packed_matrices().into_iter().map(|p| p.0).collect();
        for (name, ty) in &matrices {
            assert!(
                packed.contains(name),
                "{label}: {name} ({ty}) was not repacked for our kernels"
            );
        }
        let kl = mean_kl(&want, &eval(&m), n_vocab);
        let got_ppl = ppl(&m);
        eprintln!(
            "{label} {}: KL to the reference {kl:.3e} nats, {:.2e} of the quantization's KL \
             {quant_kl:.3e}; perplexity {got_ppl:.4} vs {want_ppl:.4}",
            isa.name(),
            kl / quant_kl
        );
        assert!(
            kl < share * quant_kl,
            "{label} {}: KL divergence from the reference's logits {kl:e}, above {share} of the \
             quantization's own {quant_kl:e}",
            isa.name()
        );
        assert!(
            (got_ppl - want_ppl).abs() / want_ppl < ppl_tol,
            "{label} {}: perplexity {got_ppl} vs the reference's {want_ppl}",
            isa.name()
        );
    }
}

/// The types present among `path`'s matrices.
fn types_of(path: &Path) -> Vec<GgmlType> {
    let mut t: Vec<GgmlType> = quantized_matrices(path).into_iter().map(|m| m.1).collect();
    t.sort_by_key(|t| t.id());
    t.dedup();
    t
}

#[test]
fn every_instruction_set_matches_ggml_on_the_whole_model() {
    let f16 = gguf(GgmlType::F16);
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        check_model(&ty.to_string(), &f16, &gguf(ty), None, 0.01, 1e-3);
    }
}

/// The K mixes on the 128-wide fixture: every K type falls back to a 32-column one, as
/// ChatGLM3-6B's ffn_down does (13696 columns).
#[test]
fn k_mix_fallbacks_match_ggml() {
    let f16 = gguf(GgmlType::F16);
    for (ft, want) in [
        (FileType::Q4_K_M, [GgmlType::Q5_0, GgmlType::Q8_0]),
        (FileType::Q5_K_M, [GgmlType::Q5_1, GgmlType::Q8_0]),
    ] {
        let path = fixture_mix(ft);
        assert_eq!(types_of(&path), want, "{ft}: the fixture's fallback types");
        check_model(&format!("fixture {ft}"), &f16, &path, None, 0.01, 1e-3);
    }
}

/// Every K type on the wide model, `--pure` and as the real mixes.
#[test]
fn k_types_match_ggml_on_a_wide_model() {
    let f16 = wide::wide_gguf("f16", TypePolicy::new(GgmlType::F16));
    for ty in [GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
        let path = wide_pure(ty);
        assert_eq!(types_of(&path), [ty]);
        check_model(&format!("wide {ty}"), &f16, &path, None, 0.01, 1e-3);
    }
    for (ft, want) in [
        (
            FileType::Q3_K_M,
            &[GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K][..],
        ),
        (FileType::Q4_K_M, &[GgmlType::Q4K, GgmlType::Q6K]),
        (FileType::Q5_K_M, &[GgmlType::Q5K, GgmlType::Q6K]),
    ] {
        let path = wide_mix(ft);
        assert_eq!(types_of(&path), want, "{ft}: the wide model's types");
        check_model(&format!("wide {ft}"), &f16, &path, None, 0.01, 1e-3);
    }
}

/// The 32-column types the K mixes fall back to, on the wide model too (`--pure`).
#[test]
fn classic_types_match_ggml_on_a_wide_model() {
    let f16 = wide::wide_gguf("f16", TypePolicy::new(GgmlType::F16));
    for ty in [
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
    ] {
        let path = wide_pure(ty);
        assert_eq!(types_of(&path), [ty]);
        check_model(&format!("wide {ty}"), &f16, &path, None, 0.01, 1e-3);
    }
}

#[test]
fn greedy_ids_match_ggml_up_to_a_near_tie() {
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let (base, native) = (load(ty, None), load(ty, Some(Isa::detect())));
        let prompt = &tokens(&base)[200..240];
        let run = |m: &Model| {
            let mut s = Session::new(m, &opts()).unwrap();
            let mut logits = s.eval(prompt, false).unwrap();
            let mut out = Vec::new();
            for _ in 0..40 {
                let mut sorted = logits.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let t = argmax(&logits);
                out.push((t, sorted[0] - sorted[1]));
                logits = s.eval(&[t], false).unwrap();
            }
            out
        };
        let (a, b) = (run(&base), run(&native));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if x.0 != y.0 {
                assert!(
                    x.1 < 0.02,
                    "{ty}: step {i} differs ({} vs {}) with margin {}",
                    x.0,
                    y.0,
                    x.1
                );
                break;
            }
        }
    }
}

/// iq4_nl and iq4_xs `--pure` on the wide model, against ggml b2757's own dot products. Its
/// AVX2 `vec_dot_iq4_nl_q8_0` takes blocks two at a time with no tail; every row here has an even
/// number of blocks (8, 16), and `vec_dot_iq4_xs_q8_K` pairs the 8 sub-blocks of a super-block,
/// so on this model b2757 computes what llama.cpp 2026 computes (same table, same scale packing:
/// the reference of crates/kernels/tests/kernels.rs is checked against glm-convert's 2026
/// dequantization).
#[test]
fn iq4_types_match_ggml_on_a_wide_model() {
    let f16 = wide::wide_gguf("f16", TypePolicy::new(GgmlType::F16));
    for ty in [GgmlType::IQ4XS, GgmlType::IQ4NL] {
        let path = wide_pure(ty);
        assert_eq!(types_of(&path), [ty]);
        check_model(&format!("wide {ty}"), &f16, &path, None, 0.01, 1e-3);
    }
}

/// `path` with every iq4_nl matrix rewritten as q8_0 holding the same values: an iq4_nl block
/// `d, q` becomes the q8_0 block `d, KVALUES[q]` (the table's values fit an i8), so ggml's q8_0
/// path computes exactly llama.cpp 2026's iq4_nl × q8_0 integer products.
fn iq4_nl_as_q8_0(path: &Path) -> PathBuf {
    const KVALUES: [i8; 16] = [
        -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
    ];
    let out = path.with_extension("q8.gguf");
    if out.exists() {
        return out;
    }
    let src = GgufFile::open(path).unwrap();
    let decls: Vec<gguf::TensorDecl> = src
        .tensors
        .iter()
        .map(|t| gguf::TensorDecl {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: if t.ty == GgmlType::IQ4NL {
                GgmlType::Q8_0
            } else {
                t.ty
            },
        })
        .collect();
    let file = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
    let mut w = gguf::GgufWriter::new(file, &src.metadata, decls).unwrap();
    for t in &src.tensors {
        let data = src.tensor_data(t);
        if t.ty != GgmlType::IQ4NL {
            w.write_tensor(&t.name, data).unwrap();
            continue;
        }
        let mut q8 = Vec::with_capacity(data.len() / 18 * 34);
        for blk in data.chunks_exact(18) {
            q8.extend_from_slice(&blk[..2]);
            q8.extend(blk[2..].iter().map(|&b| KVALUES[(b & 15) as usize] as u8));
            q8.extend(blk[2..].iter().map(|&b| KVALUES[(b >> 4) as usize] as u8));
        }
        w.write_tensor(&t.name, &q8).unwrap();
    }
    w.finish().unwrap();
    out
}

/// The IQ4_XS and IQ4_NL mixes of the 128-wide fixture are iq4_nl and q8_0 (iq4_xs falls back to
/// iq4_nl), and their ffn_down rows have 352 columns = 11 blocks: there b2757's AVX2
/// `vec_dot_iq4_nl_q8_0` reads one block past the row (perplexity 78.7 instead of 74.1 on this
/// file), where llama.cpp 2026 finishes the odd block in scalar code. So the reference here is
/// 2026's semantics run on b2757's correct q8_0 path: the same file with iq4_nl transcoded to
/// q8_0 exactly ([`iq4_nl_as_q8_0`]), whose integer products are 2026's iq4_nl × q8_0 ones; our
/// kernels must match it as they match ggml elsewhere.
#[test]
fn iq4_nl_fallbacks_match_2026_semantics() {
    let f16 = gguf(GgmlType::F16);
    for ft in [FileType::IQ4_XS, FileType::IQ4_NL] {
        let path = fixture_mix(ft);
        assert_eq!(types_of(&path), [GgmlType::Q8_0, GgmlType::IQ4NL], "{ft}");
        let reference = iq4_nl_as_q8_0(&path);
        check_model(
            &format!("fixture {ft}"),
            &f16,
            &path,
            Some(&reference),
            0.01,
            1e-3,
        );
    }
}
