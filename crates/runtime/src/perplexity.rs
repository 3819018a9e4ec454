//! Perplexity exactly as llama.cpp's `perplexity` computes it, so numbers are comparable:
//! consecutive non-overlapping chunks of `n_ctx` tokens (the tail dropped), a fresh KV cache per
//! chunk, and the second half of each chunk scored (positions n_ctx/2 .. n_ctx-2 predicting the
//! next token), NLL summed in f64. Optionally saves or compares full log-probabilities for a
//! KL-divergence check between two models (e.g. f16 vs q4_0).

use crate::session::Session;
use crate::RuntimeError;
use half::f16;
use std::io::{Read, Write};

/// One finished chunk.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChunkResult {
    pub index: usize,
    /// Perplexity over all chunks so far.
    pub ppl_running: f64,
}

/// KL-divergence statistics against a base model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KlStats {
    pub mean_kl: f64,
    pub kl_stderr: f64,
    pub max_kl: f64,
    /// Fraction of positions whose most likely token is the same.
    pub top1_agreement: f64,
    pub base_ppl: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PerplexityResult {
    pub n_ctx: usize,
    pub n_chunks: usize,
    pub n_scored: usize,
    pub ppl: f64,
    pub ppl_stderr: f64,
    pub chunks: Vec<ChunkResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl: Option<KlStats>,
}

/// Where log-probs go or come from.
pub enum KlMode<'a> {
    None,
    /// Write this model's log-probs (base for a later comparison).
    Save(&'a mut dyn Write),
    /// Compare against log-probs saved earlier.
    Compare(&'a mut dyn Read),
}

const KL_MAGIC: &[u8; 8] = b"GLMKLD01";

/// Number of whole chunks in `n_tokens`.
pub fn n_chunks(n_tokens: usize, n_ctx: usize) -> usize {
    n_tokens / n_ctx
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

fn io_err(e: std::io::Error) -> RuntimeError {
    RuntimeError::Input(format!("KL-divergence data: {e}"))
}

/// Computes perplexity over `tokens` with chunks of `n_ctx` (≤ the session's context).
pub fn perplexity(
    session: &mut Session,
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: Option<usize>,
    mut kl: KlMode,
    mut on_chunk: impl FnMut(&ChunkResult, usize),
) -> Result<PerplexityResult, RuntimeError> {
    if n_ctx < 4 || n_ctx > session.n_ctx() {
        return Err(RuntimeError::Input(format!(
            "perplexity context {n_ctx} must be in 4..={}",
            session.n_ctx()
        )));
    }
    let available = n_chunks(tokens.len(), n_ctx);
    if available < 2 {
        return Err(RuntimeError::Input(format!(
            "the text has {} tokens; perplexity with -c {n_ctx} needs at least {} (2 chunks)",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let n = max_chunks.map_or(available, |m| m.clamp(1, available));
    let n_vocab = session.model().hparams.n_vocab;
    let first = n_ctx / 2;

    match &mut kl {
        KlMode::Save(w) => {
            w.write_all(KL_MAGIC).map_err(io_err)?;
            for v in [n_vocab as u64, n_ctx as u64, n as u64] {
                w.write_all(&v.to_le_bytes()).map_err(io_err)?;
            }
            for &t in &tokens[..n * n_ctx] {
                w.write_all(&t.to_le_bytes()).map_err(io_err)?;
            }
        }
        KlMode::Compare(r) => {
            let mut magic = [0u8; 8];
            r.read_exact(&mut magic).map_err(io_err)?;
            if &magic != KL_MAGIC {
                return Err(RuntimeError::Input("KL-divergence base file: wrong magic (not written by glmtool perplexity --kl-divergence-base)".into()));
            }
            let mut hdr = [0u64; 3];
            for h in hdr.iter_mut() {
                let mut b = [0u8; 8];
                r.read_exact(&mut b).map_err(io_err)?;
                *h = u64::from_le_bytes(b);
            }
            if hdr[0] as usize != n_vocab || hdr[1] as usize != n_ctx || (hdr[2] as usize) < n {
                return Err(RuntimeError::Input(format!(
                    "KL-divergence base has vocab {}, context {}, {} chunks; this run has vocab {n_vocab}, context {n_ctx}, {n} chunks",
                    hdr[0], hdr[1], hdr[2]
                )));
            }
            let mut buf = vec![0u8; hdr[2] as usize * n_ctx * 4];
            r.read_exact(&mut buf).map_err(io_err)?;
            let same = buf
                .chunks_exact(4)
                .zip(tokens)
                .all(|(b, &t)| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == t);
            if !same {
                return Err(RuntimeError::Input(
                    "KL-divergence base was computed on different tokens".into(),
                ));
            }
        }
        KlMode::None => {}
    }

    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let (mut kl_sum, mut kl_sum2, mut kl_max, mut agree, mut base_nll) =
        (0f64, 0f64, 0f64, 0usize, 0f64);
    let mut chunks = Vec::with_capacity(n);
    let mut row_buf = vec![0u8; n_vocab * 2];
    for i in 0..n {
        let chunk = &tokens[i * n_ctx..(i + 1) * n_ctx];
        session.reset();
        let logits = session.eval(chunk, true)?;
        for j in first..n_ctx - 1 {
            let lp = log_softmax(&logits[j * n_vocab..(j + 1) * n_vocab]);
            let next = chunk[j + 1] as usize;
            let v = -lp[next];
            nll += v;
            nll2 += v * v;
            count += 1;
            match &mut kl {
                KlMode::Save(w) => {
                    for (k, &x) in lp.iter().enumerate() {
                        row_buf[2 * k..2 * k + 2]
                            .copy_from_slice(&f16::from_f64(x.max(-60000.0)).to_le_bytes());
                    }
                    w.write_all(&row_buf).map_err(io_err)?;
                }
                KlMode::Compare(r) => {
                    r.read_exact(&mut row_buf).map_err(io_err)?;
                    let base: Vec<f64> = row_buf
                        .chunks_exact(2)
                        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f64())
                        .collect();
                    let d: f64 = base
                        .iter()
                        .zip(&lp)
                        .map(|(&b, &q)| b.exp() * (b - q))
                        .sum::<f64>()
                        .max(0.0);
                    kl_sum += d;
                    kl_sum2 += d * d;
                    kl_max = kl_max.max(d);
                    base_nll -= base[next];
                    let amax = |v: &[f64]| {
                        v.iter()
                            .enumerate()
                            .fold(0, |b, (k, &x)| if x > v[b] { k } else { b })
                    };
                    agree += (amax(&base) == amax(&lp)) as usize;
                }
                KlMode::None => {}
            }
        }
        let c = ChunkResult {
            index: i + 1,
            ppl_running: (nll / count as f64).exp(),
        };
        on_chunk(&c, n);
        chunks.push(c);
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let ppl_stderr = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    let kl = matches!(kl, KlMode::Compare(_)).then(|| {
        let m = kl_sum / count as f64;
        let v = (kl_sum2 / count as f64 - m * m).max(0.0);
        KlStats {
            mean_kl: m,
            kl_stderr: if count > 1 {
                (v / (count - 1) as f64).sqrt()
            } else {
                0.0
            },
            max_kl: kl_max,
            top1_agreement: agree as f64 / count as f64,
            base_ppl: (base_nll / count as f64).exp(),
        }
    });
    Ok(PerplexityResult {
        n_ctx,
        n_chunks: n,
        n_scored: count,
        ppl,
        ppl_stderr,
        chunks,
        kl,
    })
}
