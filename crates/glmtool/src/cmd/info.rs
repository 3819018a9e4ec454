//! `glmtool info [-m] MODEL [--tensors] [--json] [--plan]`: a summary a person reads, then the
//! raw metadata keys.

use crate::args::{Device, GpuArgs, ShapeArgs};
use anyhow::{bail, Result};
use gguf::GgufFile;
use glm_runtime::chatglm::Hparams;
use glm_runtime::plan::{self, ModelSizes, PlanRequest};
use glm_runtime::LoadOptions;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file or Hugging Face checkpoint folder (same as -m)
    #[arg(conflicts_with = "model_flag")]
    pub model: Option<PathBuf>,
    /// GGUF file or checkpoint folder (default: $GLMTOOL_MODEL, else the bundled demo model)
    #[arg(short = 'm', long = "model", id = "model_flag")]
    pub model_flag: Option<PathBuf>,
    /// File type to convert a checkpoint folder to (as `convert --type`) [default: Q4_0]
    #[arg(long = "type", value_parser = crate::args::parse_file_type)]
    pub convert_type: Option<glm_convert::FileType>,
    /// List every tensor (name, type, shape, offset)
    #[arg(long)]
    pub tensors: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Print where `run` would place the model (GPU layers, memory); loads no weights. Without
    /// a GPU, --vram-budget plans for a GPU of that size
    #[arg(long)]
    pub plan: bool,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

fn print_plan(a: &Args, path: &Path, f: &GgufFile) -> Result<()> {
    let hp = Hparams::from_gguf(f)?;
    let n_ctx = a
        .shape
        .ctx
        .unwrap_or_else(|| crate::args::default_ctx(hp.n_ctx_train));
    if n_ctx == 0 || n_ctx > hp.n_ctx_train || a.shape.batch == 0 {
        bail!(
            "-c must be between 1 and the model's {}, -b at least 1",
            hp.n_ctx_train
        );
    }
    let shape = glm_runtime::PlanShape {
        n_ctx,
        ..a.shape.plan_shape(1)
    };
    // Without a GPU (and no --device), a budget plans for a hypothetical one, -ngl included.
    let device = if glm_runtime::gpu_devices().is_empty() && a.gpu.device.is_none() {
        None
    } else {
        a.gpu.device()?
    };
    let p = match device {
        Some(d) => glm_runtime::model::plan_for(
            f,
            &hp,
            &LoadOptions {
                device: Some(d),
                layers: a.gpu.layers(),
                budget: a.gpu.vram_budget,
                shape,
                cpu_kernels: None,
            },
        )?,
        None => {
            // No GPU here: with a budget or -ngl, plan for such a GPU.
            let hypothetical = a.gpu.device != Some(Device::Cpu)
                && (a.gpu.vram_budget.is_some() || a.gpu.gpu_layers.is_some());
            let req = PlanRequest {
                device: hypothetical.then(|| "a GPU (none in this build/machine)".to_string()),
                layers: a.gpu.layers(),
                budget: a.gpu.vram_budget,
                free: None,
            };
            plan::plan(&ModelSizes::from_gguf(f, &hp)?, &shape, &req)?
        }
    };
    if a.json {
        crate::outln!("{}", serde_json::to_string_pretty(&p)?)?;
    } else {
        crate::outln!(
            "{}: context {n_ctx}, batch {}, {} KV cache, -fa {}",
            path.display(),
            a.shape.batch,
            a.shape.cache().describe(),
            a.shape.flash_attn.name()
        )?;
        crate::outln!("{}", p.describe())?;
    }
    Ok(())
}

/// llama.cpp's name of a `general.file_type` (`llama_ftype`).
fn file_type_name(ft: u64) -> String {
    let name = match ft {
        0 => "F32 (all)",
        1 => "F16 (mostly)",
        2 => "Q4_0 (mostly)",
        3 => "Q4_1 (mostly)",
        7 => "Q8_0 (mostly)",
        8 => "Q5_0 (mostly)",
        9 => "Q5_1 (mostly)",
        10 => "Q2_K (mostly)",
        11..=13 => "Q3_K (mostly)",
        14 | 15 => "Q4_K (mostly)",
        16 | 17 => "Q5_K (mostly)",
        18 => "Q6_K (mostly)",
        32 => "BF16 (mostly)",
        1024 => "guessed",
        _ => return format!("file type {ft}"),
    };
    name.to_string()
}

/// "6.24 B", "123.4 M", "5.6 K" parameters.
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// The lines a person reads first: what the model is and what running it costs.
fn summary(f: &GgufFile, n_params: u64, n_bytes: u64) -> Vec<(&'static str, String)> {
    let get_str = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let mut out = vec![
        ("name", get_str(gguf::names::GENERAL_NAME)),
        ("architecture", get_str(gguf::names::GENERAL_ARCHITECTURE)),
    ];
    let hp = Hparams::from_gguf(f);
    out.push((
        "chat format",
        match glm_runtime::Tokenizer::from_gguf(f).map(|t| t.chat_format()) {
            Ok(glm_runtime::tokenizer::ChatFormat::Chatglm3) => {
                "ChatGLM3 (<|system|> <|user|> <|assistant|> <|observation|>, tools)".into()
            }
            Ok(glm_runtime::tokenizer::ChatFormat::Glm4) => {
                "GLM-4 ([gMASK]<sop> <|user|> <|assistant|>, stops on 3 ids)".into()
            }
            Ok(glm_runtime::tokenizer::ChatFormat::Chatglm2) => {
                "ChatGLM2 ([Round N] 问：… 答：…)".into()
            }
            Ok(glm_runtime::tokenizer::ChatFormat::Completion) => {
                "none: a base or code model (plain completion)".into()
            }
            Err(e) => format!("none ({e})"),
        },
    ));
    out.push(("parameters", count(n_params)));
    out.push((
        "file type",
        f.get(gguf::names::GENERAL_FILE_TYPE)
            .and_then(|v| v.as_u64())
            .map_or_else(|| "unknown".into(), file_type_name),
    ));
    out.push((
        "size",
        format!(
            "{} of tensors, {:.2} bits per weight",
            crate::progress::size(n_bytes),
            n_bytes as f64 * 8.0 / n_params.max(1) as f64
        ),
    ));
    if let Ok(hp) = &hp {
        out.push((
            "shape",
            format!(
                "{} layers, {} wide, {} heads ({} KV), FFN {}",
                hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv, hp.n_ff
            ),
        ));
        out.push(("context", format!("{} tokens (trained)", hp.n_ctx_train)));
        out.push(("vocabulary", format!("{} tokens", hp.n_vocab)));
        if let Ok(sizes) = ModelSizes::from_gguf(f, hp) {
            let n_ctx = crate::args::default_ctx(hp.n_ctx_train);
            let shape = glm_runtime::PlanShape {
                n_ctx,
                n_batch: 512,
                cache_type: glm_runtime::CacheType::F16,
                logits_rows: 1,
                ..Default::default()
            };
            let u = plan::Plan::cpu_only(&sizes, &shape).cpu;
            out.push((
                "default run",
                format!(
                    "about {} of memory on the CPU: weights {}, KV cache {} (f16, -c {}), compute {}",
                    crate::progress::size(u.total()),
                    crate::progress::size(u.weights),
                    crate::progress::size(u.kv),
                    n_ctx,
                    crate::progress::size(u.compute)
                ),
            ));
        }
    }
    out
}

pub fn run(a: Args) -> Result<()> {
    let path = crate::models::resolve(
        a.model.as_deref().or(a.model_flag.as_deref()),
        a.convert_type.unwrap_or(glm_convert::FileType::Q4_0),
        a.json,
    )?;
    let f = GgufFile::open(&path)?;
    if a.plan {
        return print_plan(&a, &path, &f);
    }
    let mut by_type: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
    let (mut n_params, mut n_bytes) = (0u64, 0u64);
    for t in &f.tensors {
        let e = by_type.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.n_elements();
        e.2 += t.n_bytes();
        n_params += t.n_elements();
        n_bytes += t.n_bytes();
    }
    let bpw = n_bytes as f64 * 8.0 / n_params.max(1) as f64;
    if a.json {
        let md: serde_json::Map<String, serde_json::Value> = f
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect();
        let mut out = serde_json::json!({
            "file": path.display().to_string(),
            "summary": summary(&f, n_params, n_bytes).into_iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v))).collect::<serde_json::Map<_, _>>(),
            "version": f.version,
            "metadata": md,
            "n_tensors": f.tensors.len(),
            "n_params": n_params,
            "tensor_bytes": n_bytes,
            "bits_per_weight": bpw,
            "by_type": by_type.iter().map(|(k, v)| (k.to_string(), serde_json::json!({"tensors": v.0, "params": v.1, "bytes": v.2}))).collect::<serde_json::Map<_, _>>(),
        });
        if a.tensors {
            out["tensors"] = f
                .tensors
                .iter()
                .map(|t| serde_json::json!({"name": t.name, "type": t.ty.name(), "shape": t.dims, "offset": t.offset}))
                .collect();
        }
        crate::outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    crate::outln!("{}", path.display())?;
    for (k, v) in summary(&f, n_params, n_bytes) {
        crate::outln!("  {k:<13} {v}")?;
    }
    crate::outln!()?;
    crate::outln!(
        "{}: GGUF v{}, {} metadata keys, {} tensors",
        path.display(),
        f.version,
        f.metadata.len(),
        f.tensors.len()
    )?;
    for (k, v) in &f.metadata {
        crate::outln!("  {k:<44} = {v}")?;
    }
    crate::outln!("tensors by type:")?;
    for (ty, (n, p, b)) in &by_type {
        crate::outln!(
            "  {ty:<6} {n:>5} tensors {p:>14} params {:>12}",
            crate::progress::size(*b)
        )?;
    }
    crate::outln!(
        "total: {n_params} params, {}, {bpw:.2} bits per weight",
        crate::progress::size(n_bytes)
    )?;
    if a.tensors {
        for t in &f.tensors {
            crate::outln!(
                "  {:<32} {:<6} {:<24} offset {}",
                t.name,
                t.ty.name(),
                format!("{:?}", t.dims),
                t.offset
            )?;
        }
    }
    Ok(())
}

fn value_json(v: &gguf::Value) -> serde_json::Value {
    use gguf::Value as V;
    match v {
        V::U8(x) => (*x).into(),
        V::I8(x) => (*x).into(),
        V::U16(x) => (*x).into(),
        V::I16(x) => (*x).into(),
        V::U32(x) => (*x).into(),
        V::I32(x) => (*x).into(),
        V::U64(x) => (*x).into(),
        V::I64(x) => (*x).into(),
        V::F32(x) => (*x as f64).into(),
        V::F64(x) => (*x).into(),
        V::Bool(x) => (*x).into(),
        V::String(s) => s.clone().into(),
        V::Array(a) if a.len() > 16 => serde_json::json!({"array_len": a.len()}),
        V::Array(a) => a.iter().map(|x| value_json(&x)).collect(),
    }
}
