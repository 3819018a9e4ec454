//! Collecting an importance matrix the way llama.cpp 2026's `llama-imatrix` does
//! (tools/imatrix/imatrix.cpp), so that its statistics, and the quantizations made with them,
//! agree with llama.cpp's:
//!
//! * The text is tokenized whole (no special tokens are parsed; a BOS token first only if the
//!   vocabulary asks for one, see [`chunk_bos`]) and cut into consecutive chunks of `-c` tokens;
//!   the tail that does not fill a chunk is dropped, and at least 2 chunks are needed.
//! * Each chunk is evaluated on its own, from an empty KV cache, in batches of `-b` tokens; when
//!   the vocabulary adds a BOS token, the first token of every chunk is replaced by it.
//! * For every matrix multiplication by a weight `blk.*` (and `output.weight` with
//!   `--process-output`), the activations entering it are observed: per input column, Σ x²
//!   over the batch's tokens is added (in f32, token after token), and the token count goes up
//!   by the batch size. Batches of fewer than 16 tokens are not observed (llama-imatrix's
//!   `src1->ne[1] < 16` rule).
//! * Every token's logits are computed, and with `ppl` perplexity is reported as
//!   llama-imatrix reports it (the second half of each chunk scored).
//!
//! The observation itself is a ggml op placed on the input of every [`Linear`](crate::chatglm)
//! (glm-ggml's `observe_squares`); this module owns the sums ([`Observers`]) and the chunking.

use crate::chatglm::Hparams;
use crate::session::Session;
use crate::RuntimeError;
use gguf::names::{self, LayerTensor};
use glm_ggml::SquareSums;

/// llama-imatrix skips matrix products over fewer tokens than this.
pub const MIN_BATCH: usize = 16;

/// The matrices of one layer, in [`Observers::layers`] order.
pub const LAYER_MATRICES: [LayerTensor; 4] = [
    LayerTensor::AttnQkv,
    LayerTensor::AttnOutput,
    LayerTensor::FfnUp,
    LayerTensor::FfnDown,
];

/// The running statistics of every observed matrix's input.
pub struct Observers {
    /// Per layer: attn_qkv, attn_output, ffn_up, ffn_down.
    pub layers: Vec<[SquareSums; 4]>,
    /// `output.weight`'s, when it is observed (`--process-output`).
    pub output: Option<SquareSums>,
}

impl Observers {
    /// Sums for every matrix of a model with hyperparameters `hp`, starting from `start(name)`
    /// (sums and token count) where it gives some, else from zero.
    pub fn new(
        hp: &Hparams,
        process_output: bool,
        start: impl Fn(&str) -> Option<(Vec<f32>, u64)>,
    ) -> Self {
        let sums = |name: &str, cols: usize| match start(name) {
            Some((s, rows)) if s.len() == cols => SquareSums::starting_at(&s, rows),
            _ => SquareSums::new(cols),
        };
        let layers = (0..hp.n_layer)
            .map(|il| {
                LAYER_MATRICES.map(|t| {
                    let cols = if t == LayerTensor::FfnDown {
                        hp.n_ff
                    } else {
                        hp.n_embd
                    };
                    sums(&t.name(il), cols)
                })
            })
            .collect();
        Observers {
            layers,
            output: process_output.then(|| sums(names::OUTPUT, hp.n_embd)),
        }
    }

    /// (tensor name, sums, token count) of every observed matrix, in layer order.
    pub fn read(&mut self) -> Vec<(String, &[f32], u64)> {
        let mut out = Vec::new();
        for (il, l) in self.layers.iter_mut().enumerate() {
            for (t, s) in LAYER_MATRICES.iter().zip(l.iter_mut()) {
                let (sums, rows) = s.read();
                out.push((t.name(il), sums, rows));
            }
        }
        if let Some(s) = &mut self.output {
            let (sums, rows) = s.read();
            out.push((names::OUTPUT.to_string(), sums, rows));
        }
        out
    }
}

/// How to collect.
#[derive(Clone, Debug)]
pub struct CollectOptions {
    /// Tokens per chunk (`-c`).
    pub chunk: usize,
    /// Tokens per evaluation (`-b`): a chunk is evaluated in pieces of this size.
    pub batch: usize,
    /// At most this many chunks (`--chunks`).
    pub max_chunks: Option<usize>,
    /// The token that replaces the first of every chunk ([`chunk_bos`]).
    pub bos: Option<u32>,
    /// Compute perplexity on the way (llama-imatrix does unless `--no-ppl`).
    pub ppl: bool,
}

/// Progress after one chunk.
#[derive(Clone, Debug)]
pub struct ChunkDone {
    /// 1-based.
    pub index: usize,
    pub n_chunks: usize,
    /// Perplexity so far, when computed.
    pub ppl: Option<f64>,
}

/// What a collection did.
#[derive(Clone, Debug)]
pub struct CollectResult {
    pub n_chunks: usize,
    /// Perplexity and its standard error, when computed.
    pub ppl: Option<(f64, f64)>,
}

/// The BOS token llama.cpp puts at the start of the text and of every chunk, or `None`:
/// `tokenizer.ggml.add_bos_token` when the file has it, else llama.cpp's default for the
/// vocabulary (yes for SentencePiece, `tokenizer.ggml.bos_token_id` or 1; no for GLM-4's BPE).
/// Files written by glmtool say `add_bos_token = false`.
pub fn chunk_bos(file: &gguf::GgufFile) -> Option<u32> {
    let spm = file
        .get(names::TOKENIZER_MODEL)
        .and_then(|v| v.as_str())
        .is_none_or(|m| m == names::TOKENIZER_MODEL_LLAMA);
    let add = file
        .get(names::TOKENIZER_ADD_BOS)
        .and_then(|v| v.as_bool())
        .unwrap_or(spm);
    if !add {
        return None;
    }
    let id = file
        .get(names::TOKENIZER_BOS_ID)
        .and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok());
    id.or(spm.then_some(1))
}

/// Evaluates `tokens` chunk by chunk in `session` (whose context must hold a chunk), adding the
/// statistics to `obs`; `on_chunk` is called after each chunk (and may read `obs`, or stop the
/// collection with an error). `tokens` must already start with the BOS token when `opts.bos` is set
/// (llama.cpp's tokenizer adds it). Errors on a text of fewer than 2 chunks and on non-finite
/// activations (naming the matrix).
pub fn collect(
    session: &mut Session,
    tokens: &[u32],
    opts: &CollectOptions,
    obs: &mut Observers,
    mut on_chunk: impl FnMut(&ChunkDone, &mut Observers) -> Result<(), RuntimeError>,
) -> Result<CollectResult, RuntimeError> {
    let c = opts.chunk;
    if c == 0 || c > session.n_ctx() {
        return Err(RuntimeError::Input(format!(
            "chunk size {c} must be between 1 and the session's context {}",
            session.n_ctx()
        )));
    }
    if opts.batch < MIN_BATCH {
        return Err(RuntimeError::Input(format!(
            "-b {}: llama-imatrix's method ignores batches of fewer than {MIN_BATCH} tokens, so \
             nothing would be collected; use -b {MIN_BATCH} or more",
            opts.batch
        )));
    }
    if tokens.len() < 2 * c {
        return Err(RuntimeError::Input(format!(
            "the text has {} tokens; -c {c} needs at least {} (2 chunks)",
            tokens.len(),
            2 * c
        )));
    }
    let available = tokens.len() / c;
    let n = opts.max_chunks.map_or(available, |m| m.min(available));
    let n_vocab = session.model().hparams.n_vocab;
    let all_logits = opts.ppl || obs.output.is_some();
    let first = c / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut chunk = Vec::with_capacity(c);
    for i in 0..n {
        chunk.clear();
        chunk.extend_from_slice(&tokens[i * c..(i + 1) * c]);
        if let Some(bos) = opts.bos {
            chunk[0] = bos;
        }
        session.reset();
        let mut logits = Vec::new();
        for piece in chunk.chunks(opts.batch) {
            let watch = (piece.len() >= MIN_BATCH).then_some(&*obs);
            let l = session.eval_observed(piece, all_logits, watch)?;
            if opts.ppl {
                logits.extend_from_slice(&l);
            }
        }
        for (name, sums, _) in obs.read() {
            if let Some(j) = sums.iter().position(|x| !x.is_finite()) {
                return Err(RuntimeError::Input(format!(
                    "chunk {}: non-finite activations entering {name} (column {j}); the \
                     model's weights overflow on this text",
                    i + 1
                )));
            }
        }
        if opts.ppl {
            // scored against the text's own tokens (the BOS replacement is undone)
            let text = &tokens[i * c..(i + 1) * c];
            for j in first..c - 1 {
                let v = -log_softmax_at(&logits[j * n_vocab..(j + 1) * n_vocab], text[j + 1]);
                nll += v;
                nll2 += v * v;
                count += 1;
            }
        }
        let done = ChunkDone {
            index: i + 1,
            n_chunks: n,
            ppl: (opts.ppl && count > 0).then(|| (nll / count as f64).exp()),
        };
        on_chunk(&done, obs)?;
    }
    let ppl = (opts.ppl && count > 1).then(|| {
        let mean = nll / count as f64;
        let var = nll2 / count as f64 - mean * mean;
        let ppl = mean.exp();
        (ppl, (var.max(0.0) / (count - 1) as f64).sqrt() * ppl)
    });
    Ok(CollectResult { n_chunks: n, ppl })
}

/// log softmax(row)[tok], in f64.
fn log_softmax_at(row: &[f32], tok: u32) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row.get(tok as usize)
        .map_or(f64::NEG_INFINITY, |&x| x as f64 - max - sum.ln())
}
