//! The ChatGLM2/3 architecture: hyperparameters, weights, and the forward graph.
//!
//! ```text
//! x = embed(tokens)
//! for each layer:
//!     h        = rms_norm(x) * attn_norm
//!     q, k, v  = split(W_qkv · h + b_qkv)                  q: n_head heads, k, v: n_head_kv heads of d
//!     q, k     = rope_glm(q, pos), rope_glm(k, pos)         first d/2 dims of each head, adjacent pairs
//!     cache[n_past .. n_past+T] = k, v
//!     a        = softmax(K·q / √d + causal_mask) · V        query head h reads KV group h / (n_head / n_head_kv)
//!                                                          (one flash-attention op, or ggml's three)
//!     x        = x + W_o · a
//!     h        = rms_norm(x) * ffn_norm
//!     g, u     = split(W_up · h)                            gate rows first
//!     x        = x + W_down · (silu(g) ⊙ u)
//! logits = W_out · (rms_norm(x) * output_norm)
//! ```
//!
//! This file holds the config read from GGUF keys, the per-layer weight handles, and the graph
//! builder — nothing else.

use crate::RuntimeError;
use gguf::names::{self, LayerTensor};
use gguf::{GgmlType, GgufFile};
use glm_ggml::{GgmlError, GraphCtx, Isa, Packed, SquareSums, Tensor, TYPE_F32, TYPE_I32};

/// Model hyperparameters, from the `chatglm.*` GGUF keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Hparams {
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Dimensions per head (n_embd / n_head).
    pub head_dim: usize,
    pub eps: f32,
    pub rope_base: f32,
    pub n_vocab: usize,
}

impl Hparams {
    /// Reads and checks the hyperparameters; reports every missing key at once.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, RuntimeError> {
        let arch = f.get_str(names::GENERAL_ARCHITECTURE)?;
        if arch != names::ARCH {
            return Err(RuntimeError::Model(format!(
                "{}: architecture is {arch:?}, expected {:?}",
                f.path().display(),
                names::ARCH
            )));
        }
        let mut missing = Vec::new();
        let mut too_big = Vec::new();
        let mut int = |k: &str| match f.get_u64(k) {
            Ok(v) if v > names::max_hparam(k) => {
                too_big.push(format!("{k} = {v} (at most {})", names::max_hparam(k)));
                0
            }
            Ok(v) => v as usize,
            Err(_) => {
                missing.push(k.to_string());
                0
            }
        };
        let n_ctx_train = int(names::CONTEXT_LENGTH);
        let n_embd = int(names::EMBEDDING_LENGTH);
        let n_ff = int(names::FEED_FORWARD_LENGTH);
        let n_layer = int(names::BLOCK_COUNT);
        let n_head = int(names::HEAD_COUNT);
        let n_head_kv = int(names::HEAD_COUNT_KV);
        let n_rot = int(names::ROPE_DIMENSION_COUNT);
        let eps = f.get_f64(names::LAYER_NORM_RMS_EPS).unwrap_or_else(|_| {
            missing.push(names::LAYER_NORM_RMS_EPS.into());
            0.0
        }) as f32;
        let rope_base = f.get_f64(names::ROPE_FREQ_BASE).unwrap_or(10000.0) as f32;
        if !missing.is_empty() {
            return Err(RuntimeError::Model(format!(
                "{}: missing or non-numeric metadata keys: {}",
                f.path().display(),
                missing.join(", ")
            )));
        }
        if !too_big.is_empty() {
            return Err(RuntimeError::Model(format!(
                "{}: metadata out of range: {}",
                f.path().display(),
                too_big.join(", ")
            )));
        }
        // ggml asserts (aborts) on a non-positive epsilon; a zero or non-finite base makes every
        // rotation NaN.
        for (key, v) in [
            (names::LAYER_NORM_RMS_EPS, eps),
            (names::ROPE_FREQ_BASE, rope_base),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(RuntimeError::Model(format!(
                    "{}: {key} is {v}, expected a positive finite number",
                    f.path().display()
                )));
            }
        }
        let n_vocab = f
            .tensor(names::TOKEN_EMBD)
            .map(|t| t.dims.get(1).copied().unwrap_or(0) as usize)
            .unwrap_or(0);
        let bad = |what: String| {
            Err(RuntimeError::Model(format!(
                "{}: {what}",
                f.path().display()
            )))
        };
        if [n_embd, n_ff, n_layer, n_head, n_head_kv, n_ctx_train].contains(&0) {
            return bad("a hyperparameter is zero".into());
        }
        if n_embd % n_head != 0 || n_head % n_head_kv != 0 {
            return bad(format!(
                "{n_embd} embedding dims, {n_head} heads, {n_head_kv} KV heads do not divide"
            ));
        }
        let head_dim = n_embd / n_head;
        if n_rot * 2 != head_dim || n_rot % 2 != 0 {
            return bad(format!(
                "{} = {n_rot}, expected half of the head size {head_dim}",
                names::ROPE_DIMENSION_COUNT
            ));
        }
        Ok(Hparams {
            n_ctx_train,
            n_embd,
            n_ff,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            eps,
            rope_base,
            n_vocab,
        })
    }

    /// Rows of the fused QKV projection.
    pub fn qkv_rows(&self) -> usize {
        (self.n_head + 2 * self.n_head_kv) * self.head_dim
    }

    /// K (or V) values per token per layer.
    pub fn kv_width(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Every tensor the model needs: (name, ggml-order dims, must be f32 — the 1-D ones).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<u64>, bool)> {
        let dims = names::ChatglmDims {
            n_embd: self.n_embd as u64,
            n_ff: self.n_ff as u64,
            n_layer: self.n_layer as u64,
            n_vocab: self.n_vocab as u64,
            n_head: self.n_head as u64,
            n_head_kv: self.n_head_kv as u64,
            head_dim: self.head_dim as u64,
        };
        names::chatglm_tensors(&dims)
            .into_iter()
            .map(|t| {
                let f32_only = t.dims.len() == 1;
                (t.name, t.dims, f32_only)
            })
            .collect()
    }
}

/// Types this ggml can multiply (matrices) on the CPU.
pub fn matmul_type_supported(t: GgmlType) -> bool {
    !matches!(
        t,
        GgmlType::BF16
            | GgmlType::Q8_1
            | GgmlType::Q8K
            | GgmlType::I8
            | GgmlType::I16
            | GgmlType::I32
            | GgmlType::I64
            | GgmlType::F64
    )
}

/// A weight matrix: ggml's tensor, its repacked copy where our CPU kernels run it, and where
/// the statistics of its input go when an importance matrix is being collected.
#[derive(Clone, Copy)]
pub struct Linear<'w> {
    pub w: Tensor<'w>,
    pub packed: Option<Packed<'w>>,
    pub observe: Option<&'w SquareSums>,
}

impl<'w> Linear<'w> {
    /// W · x.
    fn apply<'g>(&self, g: &GraphCtx<'g, '_>, x: Tensor<'g>) -> Result<Tensor<'g>, GgmlError>
    where
        'w: 'g,
    {
        let x = match self.observe {
            Some(acc) => g.observe_squares(x, acc)?, // Σ x² per column, for an imatrix
            None => x,
        };
        match self.packed {
            Some(p) => g.mul_mat_packed(p, x),
            None => g.mul_mat(self.w, x),
        }
    }
}

/// One transformer block's weights.
pub struct LayerWeights<'w> {
    pub attn_norm: Tensor<'w>,
    pub qkv: Linear<'w>,
    pub qkv_bias: Tensor<'w>,
    pub attn_output: Linear<'w>,
    pub ffn_norm: Tensor<'w>,
    pub ffn_up: Linear<'w>,
    pub ffn_down: Linear<'w>,
}

/// All weights, as handles into the weight store (in `expected_tensors` order).
pub struct Weights<'w> {
    pub token_embd: Tensor<'w>,
    pub layers: Vec<LayerWeights<'w>>,
    pub output_norm: Tensor<'w>,
    pub output: Linear<'w>,
    /// Everything runs on the CPU: softmax and SwiGLU use exact-`exp` custom ops instead of
    /// ggml's (whose CPU versions read f16 tables; custom ops cannot run on a GPU).
    pub cpu_only: bool,
}

impl<'w> Weights<'w> {
    /// Picks the handles from tensors listed in `expected_tensors` order, with `packed[i]` the
    /// repacked copy of tensor i where there is one.
    /// The weights at the store positions `slots` found by name at load.
    pub fn from_slots(
        slots: &WeightSlots,
        t: &[Tensor<'w>],
        packed: &[Option<Packed<'w>>],
        cpu_only: bool,
    ) -> Self {
        let lin = |i: usize| Linear {
            w: t[i],
            packed: packed.get(i).copied().flatten(),
            observe: None,
        };
        let layers = slots
            .layers
            .iter()
            .map(|l| LayerWeights {
                attn_norm: t[l[0]],
                qkv: lin(l[1]),
                qkv_bias: t[l[2]],
                attn_output: lin(l[3]),
                ffn_norm: t[l[4]],
                ffn_up: lin(l[5]),
                ffn_down: lin(l[6]),
            })
            .collect();
        Weights {
            token_embd: t[slots.token_embd],
            layers,
            output_norm: t[slots.output_norm],
            output: lin(slots.output),
            cpu_only,
        }
    }
}

impl<'w> Weights<'w> {
    /// The same weights, with the input of every matrix observed into `obs` (the statistics
    /// of an importance matrix); `output.weight` only if `obs` has sums for it.
    pub fn observed(mut self, obs: &'w crate::imatrix::Observers) -> Self {
        for (l, o) in self.layers.iter_mut().zip(&obs.layers) {
            l.qkv.observe = Some(&o[0]);
            l.attn_output.observe = Some(&o[1]);
            l.ffn_up.observe = Some(&o[2]);
            l.ffn_down.observe = Some(&o[3]);
        }
        self.output.observe = obs.output.as_ref();
        self
    }
}

/// Where each weight sits in the model's tensor store, found once by its GGUF name (per layer in
/// [`LayerTensor::ALL`] order), so building a graph is indexing, not name lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightSlots {
    pub layers: Vec<[usize; 7]>,
    pub token_embd: usize,
    pub output_norm: usize,
    pub output: usize,
}

impl WeightSlots {
    /// The positions of every weight among `names` (the store's order).
    pub fn find(names: &[&str], n_layer: usize) -> Result<Self, RuntimeError> {
        let index: std::collections::HashMap<&str, usize> =
            names.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let at = |name: &str| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| RuntimeError::Model(format!("tensor {name} is missing")))
        };
        let mut layers = Vec::with_capacity(n_layer);
        for il in 0..n_layer {
            let mut l = [0; 7];
            for (slot, t) in l.iter_mut().zip(LayerTensor::ALL) {
                *slot = at(&t.name(il))?;
            }
            layers.push(l);
        }
        Ok(WeightSlots {
            layers,
            token_embd: at(names::TOKEN_EMBD)?,
            output_norm: at(names::OUTPUT_NORM)?,
            output: at(names::OUTPUT)?,
        })
    }
}

/// One layer's KV cache: K as `n_ctx` rows of `kv_width` (one per token); V the same with flash
/// attention, transposed (`kv_width` rows of `n_ctx`) without.
#[derive(Clone, Copy)]
pub struct LayerCache<'c> {
    pub k: Tensor<'c>,
    pub v: Tensor<'c>,
}

/// How a session computes attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// ggml's ops: scores, softmax, product with the transposed V cache.
    Unfused,
    /// glm-kernels' flash attention with this instruction set (CPU only): one op, V cached by
    /// token like K.
    Flash(Isa),
}

/// One sequence's share of a step: `n_tokens` consecutive rows of the batch, appended after
/// the `n_past` tokens the sequence has in its region of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqStep {
    /// The sequence (slot): its cache region is tokens `seq·n_ctx .. (seq+1)·n_ctx`.
    pub seq: usize,
    /// Tokens already in the sequence's cache region.
    pub n_past: usize,
    /// Tokens of this sequence in the batch.
    pub n_tokens: usize,
}

/// What one evaluation step computes: a batch made of one or more sequences' tokens, in order.
/// Every matrix product runs over all rows of the batch at once; attention is per sequence.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    pub seqs: &'a [SeqStep],
    /// Cache capacity of one sequence, in tokens.
    pub n_ctx: usize,
    /// The batch rows whose logits are computed, ascending (all of them for perplexity, the
    /// last token of each sequence that samples next when generating).
    pub out_rows: &'a [usize],
}

impl Step<'_> {
    /// Tokens in the batch.
    pub fn n_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.n_tokens).sum()
    }

    /// Whether the logits rows are the batch's last rows (read as a view, not gathered).
    fn out_rows_are_tail(&self) -> bool {
        let (t, n) = (self.n_tokens(), self.out_rows.len());
        self.out_rows.iter().copied().eq(t - n.min(t)..t)
    }
}

/// The graph's inputs and output.
pub struct GraphIo<'g> {
    pub tokens: Tensor<'g>,
    /// Positions for `rope_glm`: the batch's positions, then zeros (see [`rope_glm`]).
    pub rope_pos: Tensor<'g>,
    /// The causal mask ([`step_mask`]); flash attention computes it itself.
    pub mask: Option<Tensor<'g>>,
    /// The rows whose logits are computed, when they are not the batch's last rows.
    pub out_rows: Option<Tensor<'g>>,
    pub logits: Tensor<'g>,
}

/// GLM's rotary embedding on `x = [d, heads, T]` (rows may be strided): rotate the first d/2
/// dims of each head in adjacent pairs by position, keep the second half.
///
/// ggml b2757 cannot rotate part of a row correctly, so both halves go through a full-width
/// rope as a batch of 2T "tokens": the first half at the real positions, the second at position
/// 0, where the rotation is exactly the identity (cos 0 = 1, sin 0 = 0).
fn rope_glm<'g>(
    g: &GraphCtx<'g, '_>,
    x: Tensor<'g>,
    rope_pos: Tensor<'g>,
    base: f32,
) -> Result<Tensor<'g>, GgmlError> {
    let [d, heads, t, _] = x.ne();
    let nb = x.nb();
    let halves = g.view(
        x,
        &[d / 2, 2, heads, t],
        &[nb[0] * (d as usize / 2), nb[1], nb[2]],
        0,
    )?;
    let y = g.cont(g.permute(halves, [0, 3, 1, 2])?)?; // [d/2, heads, T, 2]
    let y = g.rope(g.reshape(y, &[d / 2, heads, 2 * t])?, rope_pos, base)?;
    let y = g.permute(g.reshape(y, &[d / 2, heads, t, 2])?, [0, 2, 3, 1])?; // [d/2, 2, heads, T]
    g.reshape(g.cont(y)?, &[d, heads, t])
}

/// Builds the forward graph of one step; returns its inputs and logits.
pub fn build_graph<'g>(
    g: &GraphCtx<'g, '_>,
    hp: &Hparams,
    w: &Weights<'g>,
    cache: &[LayerCache<'g>],
    step: Step,
    attention: Attention,
) -> Result<GraphIo<'g>, GgmlError> {
    let (d, nh, nkv) = (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64);
    let t = step.n_tokens() as i64;
    let f = 4usize; // bytes of f32
    let scale = 1.0 / (d as f32).sqrt();
    if step.seqs.is_empty() || step.seqs.iter().any(|s| s.n_tokens == 0) {
        return Err(GgmlError::Shape("a step without tokens".into()));
    }
    if step.seqs.len() > 1 && attention == Attention::Unfused {
        return Err(GgmlError::Shape(
            "several sequences in one step need flash attention".into(),
        ));
    }

    let tokens = g.input(TYPE_I32, &[t])?;
    let rope_pos = g.input(TYPE_I32, &[2 * t])?;
    let mask = match attention {
        Attention::Unfused => {
            let s = step.seqs[0];
            Some(g.input(TYPE_F32, &[(s.n_past + s.n_tokens) as i64, t])?)
        }
        Attention::Flash(_) => None,
    };

    let mut x = g.get_rows(w.token_embd, tokens)?; // [n_embd, T]
    for (l, c) in w.layers.iter().zip(cache) {
        // attention
        let h = g.mul(g.rms_norm(x, hp.eps)?, l.attn_norm)?;
        let qkv = g.add(l.qkv.apply(g, h)?, l.qkv_bias)?; // [qkv_rows, T]
        let row = qkv.nb()[1];
        let q = g.view(qkv, &[d, nh, t], &[d as usize * f, row], 0)?;
        let k = g.view(
            qkv,
            &[d, nkv, t],
            &[d as usize * f, row],
            (nh * d) as usize * f,
        )?;
        // Roped separately so that each comes out contiguous: CUDA's batched GEMM below reads
        // its second operand as if it had no gaps between rows.
        let q = rope_glm(g, q, rope_pos, hp.rope_base)?; // [d, nh, T]
        let k = rope_glm(g, k, rope_pos, hp.rope_base)?; // [d, nkv, T]
        let v = g.view(qkv, &[nkv * d, t], &[row], ((nh + nkv) * d) as usize * f)?;

        let kv_w = nkv * d;
        let k_row = glm_ggml::quant::row_size(c.k.ty(), kv_w as usize)?;
        // all sequences' regions: the cache's length in tokens
        let cache_tokens = (c.k.n_elements() / kv_w) as usize;

        let attn = match attention {
            Attention::Flash(isa) => {
                // Per sequence: append its k and v rows to its cache region (one row of kv_width
                // per token, quantized here if the cache is), then softmax(K·q / √d + causal
                // mask) · V over that region in one op; the sequences' outputs are stacked.
                let v_row = glm_ggml::quant::row_size(c.v.ty(), kv_w as usize)?;
                let mut out: Option<Tensor<'g>> = None;
                let mut col = 0usize;
                for s in step.seqs {
                    let (ts, base) = (s.n_tokens as i64, s.seq * step.n_ctx);
                    let n_kv = (s.n_past + s.n_tokens) as i64;
                    let k_s = g.view(k, &[kv_w * ts], &[], col * kv_w as usize * f)?;
                    let k_dst = g.view(c.k, &[kv_w * ts], &[], (base + s.n_past) * k_row)?;
                    g.expand(g.cpy(k_s, k_dst)?)?;
                    let v_s = g.view(v, &[kv_w, ts], &[row], col * row)?;
                    let v_dst = g.view(c.v, &[kv_w * ts], &[], (base + s.n_past) * v_row)?;
                    g.expand(g.cpy(v_s, v_dst)?)?;
                    let keys = g.view(c.k, &[kv_w, n_kv], &[k_row], base * k_row)?;
                    let vals = g.view(c.v, &[kv_w, n_kv], &[v_row], base * v_row)?;
                    let q_s = if step.seqs.len() == 1 {
                        q
                    } else {
                        let qb = q.nb();
                        g.view(q, &[d, nh, ts], &[qb[1], qb[2]], col * qb[2])?
                    };
                    let a = g.flash_attn(q_s, keys, vals, scale, isa)?; // [d, nh, ts]
                    out = Some(match out {
                        None => a,
                        Some(o) => g.concat(o, a)?, // along the token dimension
                    });
                    col += s.n_tokens;
                }
                let a = out.expect("a step has a sequence");
                g.reshape(a, &[nh * d, t])?
            }
            Attention::Unfused => {
                let s = step.seqs[0];
                let (base, n_kv) = (s.seq * step.n_ctx, (s.n_past + s.n_tokens) as i64);
                // append k to the cache: one row of kv_width per token
                let k_dst = g.view(c.k, &[kv_w * t], &[], (base + s.n_past) * k_row)?;
                g.expand(g.cpy(k, k_dst)?)?;
                // v transposed: one row of all regions' tokens per value dimension
                let ve = c.v.nb()[0];
                let v_dst = g.view(
                    c.v,
                    &[t, kv_w],
                    &[cache_tokens * ve],
                    (base + s.n_past) * ve,
                )?;
                g.expand(g.cpy(g.transpose(v)?, v_dst)?)?;

                // softmax(K·q / √d + mask) · V over the sequence's region
                let k_head = glm_ggml::quant::row_size(c.k.ty(), d as usize)?;
                let keys = g.view(c.k, &[d, n_kv, nkv], &[k_row, k_head], base * k_row)?;
                let vals = g.view(
                    c.v,
                    &[n_kv, d, nkv],
                    &[cache_tokens * ve, cache_tokens * d as usize * ve],
                    base * ve,
                )?;
                let q = g.permute(q, [0, 2, 1, 3])?; // [d, T, nh]
                let scores = g.mul_mat_f32(keys, q)?; // [n_kv, T, nh]
                let mask = mask.expect("an unfused graph has a mask input");
                let probs = if w.cpu_only {
                    g.soft_max_exact(scores, mask, scale)?
                } else {
                    g.soft_max_ext(scores, mask, scale)?
                };
                let attn = g.mul_mat_f32(vals, probs)?; // [d, T, nh]
                g.reshape(g.cont(g.permute(attn, [0, 2, 1, 3])?)?, &[nh * d, t])?
            }
        };
        x = g.add(x, l.attn_output.apply(g, attn)?)?;

        // feed-forward (SwiGLU)
        let h = g.mul(g.rms_norm(x, hp.eps)?, l.ffn_norm)?;
        let up = l.ffn_up.apply(g, h)?; // [2 n_ff, T]
        let ff = hp.n_ff as i64;
        let gate = g.view(up, &[ff, t], &[up.nb()[1]], 0)?;
        let lin = g.view(up, &[ff, t], &[up.nb()[1]], ff as usize * f)?;
        let act = if w.cpu_only {
            g.swiglu_exact(gate, lin)?
        } else {
            g.mul(g.silu(g.cont(gate)?)?, lin)? // CUDA's silu needs a contiguous input
        };
        x = g.add(x, l.ffn_down.apply(g, act)?)?;
    }

    // the rows whose logits are wanted: the last ones as a view, others gathered
    let n_out = step.out_rows.len() as i64;
    if n_out == 0 || step.out_rows.iter().any(|&r| r as i64 >= t) {
        return Err(GgmlError::Shape(format!(
            "logits rows {:?} of a {t}-token step",
            step.out_rows
        )));
    }
    let (last, out_rows) = if step.out_rows_are_tail() {
        let v = g.view(
            x,
            &[hp.n_embd as i64, n_out],
            &[x.nb()[1]],
            (t - n_out) as usize * x.nb()[1],
        )?;
        (v, None)
    } else {
        let rows = g.input(TYPE_I32, &[n_out])?;
        (g.get_rows(x, rows)?, Some(rows))
    };
    let h = g.mul(g.rms_norm(last, hp.eps)?, w.output_norm)?;
    let logits = w.output.apply(g, h)?; // [n_vocab, n_out]
    g.output(logits)?;
    Ok(GraphIo {
        tokens,
        rope_pos,
        mask,
        out_rows,
        logits,
    })
}

/// Host data for the step's rope positions: each sequence's next positions, then zeros.
pub fn step_positions(step: Step) -> Vec<i32> {
    let mut pos: Vec<i32> = step
        .seqs
        .iter()
        .flat_map(|s| (s.n_past..s.n_past + s.n_tokens).map(|p| p as i32))
        .collect();
    pos.extend(std::iter::repeat_n(0, pos.len()));
    pos
}

/// Host data for the unfused graph's causal mask (one sequence): `[T][n_past + T]`, −∞ past
/// each token.
pub fn step_mask(step: Step) -> Vec<f32> {
    let s = step.seqs[0];
    let t = s.n_tokens;
    let n_kv = s.n_past + t;
    let mut mask = vec![0f32; n_kv * t];
    for i in 0..t {
        for j in s.n_past + i + 1..n_kv {
            mask[i * n_kv + j] = f32::NEG_INFINITY;
        }
    }
    mask
}
