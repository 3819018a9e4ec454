//! `glmtool info MODEL.gguf [--tensors] [--json]`

use crate::args::{Device, GpuArgs, ShapeArgs};
use anyhow::{bail, Result};
use gguf::GgufFile;
use glm_runtime::chatglm::Hparams;
use glm_runtime::plan::{self, ModelSizes, PlanRequest};
use glm_runtime::LoadOptions;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file
    pub model: PathBuf,
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

fn print_plan(a: &Args, f: &GgufFile) -> Result<()> {
    let hp = Hparams::from_gguf(f)?;
    let n_ctx = a.shape.ctx.unwrap_or(hp.n_ctx_train);
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
            // No GPU here: with a budget, plan for a GPU of that size.
            let hypothetical = a.gpu.device != Some(Device::Cpu) && a.gpu.vram_budget.is_some();
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
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        println!(
            "{}: context {n_ctx}, batch {}, {:?} KV cache",
            a.model.display(),
            a.shape.batch,
            a.shape.cache_type
        );
        println!("{}", p.describe());
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    let f = GgufFile::open(&a.model)?;
    if a.plan {
        return print_plan(&a, &f);
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
            "file": a.model.display().to_string(),
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
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{}: GGUF v{}, {} metadata keys, {} tensors",
        a.model.display(),
        f.version,
        f.metadata.len(),
        f.tensors.len()
    );
    for (k, v) in &f.metadata {
        println!("  {k:<44} = {v}");
    }
    println!("tensors by type:");
    for (ty, (n, p, b)) in &by_type {
        println!(
            "  {ty:<6} {n:>5} tensors {p:>14} params {:>12}",
            crate::progress::size(*b)
        );
    }
    println!(
        "total: {n_params} params, {}, {bpw:.2} bits per weight",
        crate::progress::size(n_bytes)
    );
    if a.tensors {
        for t in &f.tensors {
            println!(
                "  {:<32} {:<6} {:<24} offset {}",
                t.name,
                t.ty.name(),
                format!("{:?}", t.dims),
                t.offset
            );
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
