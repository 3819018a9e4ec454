//! Every op of the GLM graph on the GPU against the CPU, in the shapes and strides the graph
//! uses them: normed linear layers for each weight type and for batches that take each CUDA
//! kernel family (1: mat-vec, 8: MMQ, 40: cuBLAS), the rotary embedding on a permuted copy, the
//! KV-cache writes (f32 → f16, V transposed), grouped-query attention over an f16 cache with
//! f32 accumulation, the masked softmax, and SiLU·gate on a strided split.
//!
//! The operands live in a weight buffer of the backend under test, so ggml's scheduler runs the
//! ops there. Built in every configuration; without a GPU only the CPU side runs (the graphs
//! build and give finite results) and the comparison is skipped with a message. On a GPU:
//! `cargo test --release -p glm-ggml --features cuda --test gpu_ops -- --nocapture`.

use glm_ggml::{
    quant, Backend, GgmlError, GraphCtx, Scheduler, Tensor, TensorSpec, TensorStore, TYPE_F16,
    TYPE_F32, TYPE_I32,
};

struct Operand {
    ty: u32,
    ne: Vec<i64>,
    bytes: Vec<u8>,
}

mod common;
use common::rand;

fn f32s(ne: &[i64], seed: u64, scale: f32) -> Operand {
    let n = ne.iter().product::<i64>() as usize;
    Operand {
        ty: TYPE_F32,
        ne: ne.to_vec(),
        bytes: rand(n, seed, scale)
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    }
}

fn typed(ty: u32, ne: &[i64], seed: u64, scale: f32) -> Operand {
    let (cols, rows) = (ne[0] as usize, ne[1..].iter().product::<i64>() as usize);
    let v = rand(cols * rows, seed, scale);
    let bytes = if ty == TYPE_F32 {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    } else {
        quant::quantize_chunk(ty, &v, rows, cols).unwrap()
    };
    Operand {
        ty,
        ne: ne.to_vec(),
        bytes,
    }
}

fn i32s(v: &[i32]) -> Operand {
    Operand {
        ty: TYPE_I32,
        ne: vec![v.len() as i64],
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

type Build =
    for<'g, 'w> fn(&'g GraphCtx<'g, 'w>, &[Tensor<'g>]) -> Result<Vec<Tensor<'g>>, GgmlError>;

/// Runs `build` over `ops` placed on `gpu` (or on the CPU) and returns its outputs.
fn run(gpu: Option<&Backend>, ops: &[Operand], build: Build) -> Vec<Vec<f32>> {
    let cpu = Backend::cpu(2).unwrap();
    let home = gpu.unwrap_or(&cpu);
    let specs: Vec<TensorSpec> = ops
        .iter()
        .enumerate()
        .map(|(i, o)| TensorSpec {
            name: format!("x{i}"),
            ty: o.ty,
            ne: o.ne.clone(),
        })
        .collect();
    let store = TensorStore::allocate_weights(home, &specs).unwrap();
    for (i, o) in ops.iter().enumerate() {
        store.upload(store.at(i).unwrap(), &o.bytes).unwrap();
    }
    let xs: Vec<Tensor<'_>> = (0..ops.len()).map(|i| store.at(i).unwrap()).collect();
    let mut sched = Scheduler::new(gpu, &cpu, 512).unwrap();
    sched
        .with_graph(|g| -> Result<Vec<Vec<f32>>, GgmlError> {
            let outs = build(g, &xs)?;
            for &o in &outs {
                g.output(o)?;
            }
            g.allocate()?;
            g.compute()?;
            outs.iter().map(|&o| g.read_f32(o)).collect()
        })
        .unwrap()
}

fn gpu() -> Option<Backend> {
    let d = glm_ggml::gpu_devices().into_iter().next();
    match d {
        Some(d) => {
            eprintln!("GPU: {}:{} {}", d.kind.name(), d.index, d.description);
            Some(Backend::gpu(d.kind, d.index).unwrap())
        }
        None => {
            eprintln!("GPU comparison skipped: no GPU (none in this build or machine)");
            None
        }
    }
}

/// Runs on both and compares every output: max |GPU − CPU| ≤ tol × max |CPU|. Without a GPU,
/// checks the CPU's outputs are finite.
fn compare(gpu: Option<&Backend>, what: &str, ops: &[Operand], build: Build, tol: f32) {
    let want = run(None, ops, build);
    assert!(
        want.iter().flatten().all(|x| x.is_finite()),
        "{what}: CPU output not finite"
    );
    let Some(gpu) = gpu else { return };
    let got = run(Some(gpu), ops, build);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), w.len());
        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
        let err = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!(
            "{what} [{i}]: max |GPU-CPU| {err:.3e} of {scale:.3e} ({:.2e})",
            err / scale
        );
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{what} [{i}]: non-finite output"
        );
        assert!(err <= tol * scale, "{what} [{i}]: {err} > {tol} × {scale}");
    }
}

const E: i64 = 256;
const R: i64 = 384;

/// rms_norm(x)·w, then W·h + b.
fn linear<'g>(g: &GraphCtx<'g, '_>, x: &[Tensor<'g>]) -> Result<Vec<Tensor<'g>>, GgmlError> {
    let h = g.mul(g.rms_norm(x[0], 1e-5)?, x[1])?;
    Ok(vec![h, g.add(g.mul_mat(x[2], h)?, x[3])?])
}

#[test]
fn linear_layers_all_types_and_batches() {
    let gpu = gpu();
    for ty in ["f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"] {
        let id = (0..40u32)
            .find(|&t| quant::type_name(t).is_ok_and(|n| n == ty))
            .unwrap();
        for t in [1, 8, 40] {
            let ops = [
                f32s(&[E, t], 1, 1.0),
                f32s(&[E], 2, 1.0),
                typed(id, &[E, R], 3, 0.1),
                f32s(&[R], 4, 0.1),
            ];
            compare(
                gpu.as_ref(),
                &format!("linear {ty} batch {t}"),
                &ops,
                linear,
                2e-2,
            );
        }
    }
}

const D: i64 = 64;
const NH: i64 = 8;
const NKV: i64 = 2;
const T: i64 = 40;
const PAST: i64 = 24;
const CTX: i64 = 96;

/// The attention block as chatglm.rs builds it: rope of the first half of each head (both
/// halves as 2T rows, the second at position 0), K/V appended to an f16 cache, GQA scores
/// accumulated in f32, masked softmax, weighted sum of V.
fn attention<'g>(g: &GraphCtx<'g, '_>, x: &[Tensor<'g>]) -> Result<Vec<Tensor<'g>>, GgmlError> {
    let (qkv, pos, mask, kc, vc) = (x[0], x[1], x[2], x[3], x[4]);
    let f = 4usize;
    let row = qkv.nb()[1];
    let rope = |v: Tensor<'g>, heads: i64| -> Result<Tensor<'g>, GgmlError> {
        let nb = v.nb();
        let halves = g.view(
            v,
            &[D / 2, 2, heads, T],
            &[nb[0] * (D as usize / 2), nb[1], nb[2]],
            0,
        )?;
        let y = g.cont(g.permute(halves, [0, 3, 1, 2])?)?;
        let y = g.rope(g.reshape(y, &[D / 2, heads, 2 * T])?, pos, 10000.0)?;
        let y = g.permute(g.reshape(y, &[D / 2, heads, T, 2])?, [0, 2, 3, 1])?;
        g.reshape(g.cont(y)?, &[D, heads, T])
    };
    let q = rope(g.view(qkv, &[D, NH, T], &[D as usize * f, row], 0)?, NH)?;
    let k = rope(
        g.view(
            qkv,
            &[D, NKV, T],
            &[D as usize * f, row],
            (NH * D) as usize * f,
        )?,
        NKV,
    )?;
    let v = g.view(qkv, &[NKV * D, T], &[row], ((NH + NKV) * D) as usize * f)?;
    let kv_w = (NKV * D) as usize;
    let k_dst = g.view(kc, &[NKV * D * T], &[], PAST as usize * kv_w * 2)?;
    g.expand(g.cpy(k, k_dst)?)?;
    let v_dst = g.view(vc, &[T, NKV * D], &[CTX as usize * 2], PAST as usize * 2)?;
    g.expand(g.cpy(g.transpose(v)?, v_dst)?)?;
    let n_kv = PAST + T;
    let keys = g.view(kc, &[D, n_kv, NKV], &[kv_w * 2, D as usize * 2], 0)?;
    let vals = g.view(
        vc,
        &[n_kv, D, NKV],
        &[CTX as usize * 2, CTX as usize * D as usize * 2],
        0,
    )?;
    let scores = g.mul_mat_f32(keys, g.permute(q, [0, 2, 1, 3])?)?;
    let probs = g.soft_max_ext(scores, mask, 1.0 / (D as f32).sqrt())?;
    let out = g.mul_mat_f32(vals, probs)?;
    let out = g.cont(g.permute(out, [0, 2, 1, 3])?)?;
    Ok(vec![q, k, scores, probs, out])
}

#[test]
fn attention_block() {
    let gpu = gpu();
    let mut pos: Vec<i32> = (PAST as i32..(PAST + T) as i32).collect();
    pos.extend(std::iter::repeat_n(0, T as usize));
    let n_kv = (PAST + T) as usize;
    let mut mask = vec![0f32; n_kv * T as usize];
    for i in 0..T as usize {
        for j in PAST as usize + i + 1..n_kv {
            mask[i * n_kv + j] = f32::NEG_INFINITY;
        }
    }
    let cache = |seed| typed(TYPE_F16, &[NKV * D * CTX], seed, 1.0);
    let ops = [
        f32s(&[(NH + 2 * NKV) * D, T], 5, 2.0),
        i32s(&pos),
        Operand {
            ty: TYPE_F32,
            ne: vec![n_kv as i64, T],
            bytes: mask.iter().flat_map(|x| x.to_le_bytes()).collect(),
        },
        cache(6),
        cache(7),
    ];
    compare(gpu.as_ref(), "attention", &ops, attention, 1e-2);
}

/// SwiGLU on the fused up-projection: silu(cont(gate view)) · up view.
fn swiglu<'g>(g: &GraphCtx<'g, '_>, x: &[Tensor<'g>]) -> Result<Vec<Tensor<'g>>, GgmlError> {
    let up = g.mul_mat(x[1], x[0])?;
    let ff = up.ne()[0] / 2;
    let t = up.ne()[1];
    let gate = g.cont(g.view(up, &[ff, t], &[up.nb()[1]], 0)?)?;
    let lin = g.view(up, &[ff, t], &[up.nb()[1]], ff as usize * 4)?;
    Ok(vec![g.mul(g.silu(gate)?, lin)?])
}

/// A graph the scheduler cannot place is an error, not an abort.
#[test]
fn unplaceable_graph_is_an_error() {
    fn lonely<'g>(g: &GraphCtx<'g, '_>, x: &[Tensor<'g>]) -> Result<Vec<Tensor<'g>>, GgmlError> {
        let v = g.view(x[0], &[4], &[], 0)?;
        Ok(vec![g.silu(g.cont(v)?)?])
    }
    let cpu = Backend::cpu(1).unwrap();
    let store = TensorStore::allocate(
        &cpu,
        &[TensorSpec {
            name: "c".into(),
            ty: TYPE_F32,
            ne: vec![8],
        }],
    )
    .unwrap();
    let x = [store.at(0).unwrap()];
    let mut sched = Scheduler::new(None, &cpu, 64).unwrap();
    let err = sched
        .with_graph(|g| -> Result<(), GgmlError> {
            for o in lonely(g, &x)? {
                g.output(o)?;
            }
            g.allocate()
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("no backend can be chosen"),
        "{err}"
    );
}

#[test]
fn swiglu_on_strided_split() {
    let gpu = gpu();
    for t in [1, 40] {
        let ops = [
            f32s(&[E, t], 8, 1.0),
            typed(TYPE_F16, &[E, 2 * 352], 9, 0.2),
        ];
        compare(
            gpu.as_ref(),
            &format!("swiglu batch {t}"),
            &ops,
            swiglu,
            1e-2,
        );
    }
}
