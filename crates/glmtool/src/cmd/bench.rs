//! `glmtool bench -p 512 -n 128 -r 5 [-d 0,4096]`: prompt processing and generation speed, like
//! llama-bench, also at depth: with `-d N` each test runs after an N-token prefix already in the
//! cache (evaluated once, untimed; each repetition starts from a copy of it, as llama-bench
//! restores its saved state). The repetitions go round all the tests in turn (d0, d4096, d0, ...),
//! so a machine whose speed drifts skews no ratio between them. With `--parallel 1,2,4` the generation test also runs
//! with N sequences decoding side by side, one token each per step (llama-batched-bench's
//! `-npl`, as `serve --parallel` batches its slots): `tg128 x4` is the aggregate t/s of all four.
//! With `--bandwidth` every repetition of a generation test is preceded by a read-bandwidth probe
//! on the same threads, and the table adds the bytes the test read per second and their share of
//! that bound (each repetition against its own probe).

use crate::args::ModelArgs;
use anyhow::{bail, Result};
use glm_runtime::chatglm::Attention;
use glm_runtime::{ReadProbe, SeqInput, Session};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens (pp test; 0 = skip)
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens (tg test; 0 = skip)
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Repetitions
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Tokens already in the cache when each test starts (llama-bench's -d); a comma-separated
    /// list runs the tests at each depth
    #[arg(
        short = 'd',
        long = "n-depth",
        default_value = "0",
        value_delimiter = ','
    )]
    pub depth: Vec<usize>,
    /// Sequences decoding side by side in the generation test (llama-batched-bench's -npl);
    /// a comma-separated list runs it for each count; t/s is the sum over the sequences
    #[arg(long = "parallel", default_value = "1", value_delimiter = ',')]
    pub parallel: Vec<usize>,
    /// Measure the memory's read bandwidth (a 512 MiB probe on the same threads) before every
    /// repetition of a generation test, and report the bytes each step read per second (weights
    /// outside the GPU, KV cache) as a share of it: how close decoding comes to its bound
    #[arg(long = "bandwidth")]
    pub bandwidth: bool,
    /// Output format: md or json
    #[arg(short = 'o', long = "output", default_value = "md", value_parser = ["md", "json"])]
    pub output: String,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// One result row: the test's name (llama-bench's, `pp512 @ d4096`), its depth, the sequences
/// side by side, t/s mean and sd (summed over the sequences), and with `--bandwidth` the
/// generation test's reads.
struct Row {
    test: String,
    depth: usize,
    parallel: usize,
    tps: (f64, f64),
    reads: Option<Reads>,
}

/// A generation test's memory traffic (`--bandwidth`), means and sds over the repetitions:
/// bytes read per second, the probe's bandwidth, and their ratio (each repetition against the
/// probe just before it).
struct Reads {
    read: (f64, f64),
    bandwidth: (f64, f64),
    share: (f64, f64),
}

fn row(test: String, depth: usize, parallel: usize) -> Row {
    Row {
        test,
        depth,
        parallel,
        tps: (0.0, 0.0),
        reads: None,
    }
}

/// Per repetition: t/s, and with `--bandwidth` (read B/s, probe B/s).
type Samples = (Vec<f64>, Vec<(f64, f64)>);

pub fn run(a: Args) -> Result<()> {
    if a.reps == 0 {
        bail!("-r must be at least 1");
    }
    if a.parallel.contains(&0) {
        bail!("--parallel: the counts of sequences must be at least 1");
    }
    let n_seq = a.parallel.iter().copied().max().unwrap_or(1);
    let max_depth = a.depth.iter().copied().max().unwrap_or(0);
    let need = a.n_prompt.max(a.n_gen).max(1);
    let total = max_depth + need;
    // the sequences: one per --parallel, and a spare holding the deepest prefix when there are
    // several depths (below); the plan counts all their caches
    let master = (a.depth.len() > 1).then_some(n_seq);
    let mut shape = a.model.shape.plan_shape(n_seq);
    shape.n_ctx = a.model.shape.ctx.unwrap_or(total);
    shape.n_seq = n_seq + usize::from(master.is_some());
    let model = a.model.load_shaped(shape, false)?;
    let mut opts = a.model.session_options(&model)?;
    if a.model.shape.ctx.is_none() {
        opts.n_ctx = total.min(model.hparams.n_ctx_train);
    }
    if total > opts.n_ctx {
        bail!(
            "the tests need {total} tokens of context ({need} after a depth of {max_depth}); {} {}",
            if a.model.shape.ctx.is_some() {
                "-c is"
            } else {
                "the model's context is"
            },
            opts.n_ctx
        );
    }
    // With several depths the deepest prefix is evaluated once into a spare sequence and every
    // test copies its depth's share of it: the repetitions then alternate between the depths
    // (d0, d4096, d0, d4096, ...), so a machine that slows down for a minute moves every depth
    // alike instead of skewing their ratio.
    opts.n_seq = shape.n_seq;
    let mut session = Session::new(&model, &opts)?;
    if n_seq > 1 && !session.batches_sequences() {
        bail!("--parallel {n_seq}: sequences decode side by side with flash attention only (-fa on, a model wholly on the CPU)");
    }
    let n_vocab = model.hparams.n_vocab as u32;
    // Deterministic pseudo-random tokens from the normal part of the vocabulary.
    let tokens: Vec<u32> = (0..total as u64)
        .map(|i| ((i * 2654435761 + 12345) % (n_vocab as u64 / 2)) as u32 + 3)
        .collect();
    // warm-up (page in the weights, size the compute buffer)
    session.reset();
    session.eval(&tokens[..a.n_prompt.clamp(1, 16)], false)?;
    session.reset();
    let src = master.unwrap_or(0);
    for chunk in tokens[..max_depth].chunks(session.n_batch().max(1)) {
        let input = SeqInput {
            seq: src,
            tokens: chunk,
            logits: false,
        };
        session.eval_batch(&[input])?;
    }
    // the tests in table order (depth by depth), and their samples of every repetition
    let mut rows: Vec<(Row, Samples)> = Vec::new();
    for &d in &a.depth {
        let at = if d > 0 {
            format!(" @ d{d}")
        } else {
            String::new()
        };
        if a.n_prompt > 0 {
            let test = format!("pp{}{at}", a.n_prompt);
            rows.push((row(test, d, 1), Samples::default()));
        }
        for &np in a.parallel.iter().filter(|_| a.n_gen > 0) {
            let x = if np > 1 {
                format!(" x{np}")
            } else {
                String::new()
            };
            rows.push((
                row(format!("tg{}{x}{at}", a.n_gen), d, np),
                Samples::default(),
            ));
        }
    }
    // --bandwidth: the probe, and what a generation step reads besides it: the weights once,
    // and each sequence's cache up to its position
    let probe = (a.bandwidth && a.n_gen > 0).then(|| ReadProbe::new(512 << 20));
    let kv_token = session.cpu_cache_bytes_per_token() as f64;
    for _ in 0..a.reps {
        for (test, (tps, reads)) in rows.iter_mut() {
            let (d, np) = (test.depth, test.parallel);
            // sequences 0..np hold the first d tokens (copied from `src`, or cut back to them)
            for seq in 0..np {
                session.copy_seq(src, seq, d)?;
            }
            let pp = test.test.starts_with("pp");
            let bandwidth = match &probe {
                Some(p) if !pp => Some(p.measure(opts.n_threads, 5)),
                _ => None,
            };
            let t = Instant::now();
            if pp {
                session.eval(&tokens[d..d + a.n_prompt], false)?;
                tps.push(a.n_prompt as f64 / t.elapsed().as_secs_f64());
                continue;
            }
            for &tok in &tokens[d..d + a.n_gen] {
                if np == 1 {
                    session.eval(&[tok], false)?;
                } else {
                    let step = [tok];
                    let inputs: Vec<SeqInput> = (0..np)
                        .map(|seq| SeqInput {
                            seq,
                            tokens: &step,
                            logits: true,
                        })
                        .collect();
                    session.eval_batch(&inputs)?;
                }
            }
            let steps_per_s = a.n_gen as f64 / t.elapsed().as_secs_f64();
            tps.push(np as f64 * steps_per_s);
            if let Some(bw) = bandwidth {
                // step i of the test attends to d + i + 1 positions of each sequence
                let kv = np as f64 * kv_token * (d as f64 + (a.n_gen + 1) as f64 / 2.0);
                reads.push(((model.step_bytes as f64 + kv) * steps_per_s, bw));
            }
        }
    }
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|(r, (tps, reads))| Row {
            tps: mean_sd(&tps),
            reads: (!reads.is_empty()).then(|| {
                let col =
                    |f: fn(&(f64, f64)) -> f64| mean_sd(&reads.iter().map(f).collect::<Vec<_>>());
                Reads {
                    read: col(|r| r.0),
                    bandwidth: col(|r| r.1),
                    share: col(|r| r.0 / r.1),
                }
            }),
            ..r
        })
        .collect();
    let (size, params) = (model.file_size, model.n_params);
    let backend = match model.gpu_backend() {
        Some(g) if model.plan.uses_gpu() => g.name(),
        _ => "CPU".to_string(),
    };
    let ngl = model.plan.n_gpu_layers + usize::from(model.plan.output_on_gpu);
    // whose kernels multiply the CPU's quantized matrices (--cpu-kernels)
    let kernels = model.cpu_kernels().map_or("ggml", |isa| isa.name());
    let fa = matches!(session.attention(), Attention::Flash(_));
    let cache = session.cache_type();
    if a.output == "json" {
        let v: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!({
                "model": model.name, "size_bytes": size, "params": params, "backend": backend,
                "n_gpu_layers": model.plan.n_gpu_layers, "output_on_gpu": model.plan.output_on_gpu,
                "gpu_compute_bytes": session.compute_bytes_split().1, "threads": opts.n_threads, "cpu_kernels": kernels,
                "flash_attn": fa, "type_k": cache.k.name(), "type_v": cache.v.name(),
                "n_ctx": opts.n_ctx, "kv_bytes": session.cache_bytes(), "compute_bytes": session.compute_bytes(),
                "load_seconds": model.load_time.as_secs_f64(), "test": r.test, "n_depth": r.depth, "n_parallel": r.parallel,
                "tokens_per_second": r.tps.0, "stddev": r.tps.1, "repetitions": a.reps,
                "read_bytes_per_second": r.reads.as_ref().map(|x| x.read.0),
                "bandwidth_bytes_per_second": r.reads.as_ref().map(|x| x.bandwidth.0),
                "bandwidth_share": r.reads.as_ref().map(|x| x.share.0),
                "bandwidth_share_stddev": r.reads.as_ref().map(|x| x.share.1),
            }))
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let (head, rule) = if a.bandwidth {
            (
                " read GB/s | bandwidth GB/s | of bound |",
                " ---: | ---: | ---: |",
            )
        } else {
            ("", "")
        };
        crate::outln!(
            "| model | size | params | backend | kernels | ngl | threads | fa | cache | test | t/s |{head}"
        )?;
        crate::outln!(
            "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |{rule}"
        )?;
        for r in &rows {
            let reads = match (&r.reads, a.bandwidth) {
                (Some(x), _) => format!(
                    " {:.1} ± {:.1} | {:.1} ± {:.1} | {:.1} ± {:.1} % |",
                    x.read.0 / 1e9,
                    x.read.1 / 1e9,
                    x.bandwidth.0 / 1e9,
                    x.bandwidth.1 / 1e9,
                    100.0 * x.share.0,
                    100.0 * x.share.1
                ),
                (None, true) => " – | – | – |".to_string(),
                (None, false) => String::new(),
            };
            crate::outln!(
                "| {} | {} | {:.2} M | {backend} | {kernels} | {ngl} | {} | {} | {} | {} | {:.2} ± {:.2} |{reads}",
                model.name,
                crate::progress::size(size),
                params as f64 / 1e6,
                opts.n_threads,
                u8::from(fa),
                cache.describe(),
                r.test,
                r.tps.0,
                r.tps.1
            )?;
        }
    }
    Ok(())
}
