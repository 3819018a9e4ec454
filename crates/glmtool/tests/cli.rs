//! The `glmtool` binary end to end: the demo model path of README's first command, each
//! subcommand's happy path on the tiny fixture, and every bad input as a clear error with a
//! non-zero exit.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tiny-chatglm3"
);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glmtool"))
}

fn run(args: &[&str]) -> Output {
    let out = bin()
        .args(args)
        .env("GLMTOOL_CACHE", cache())
        .output()
        .unwrap();
    out
}

mod common;
use common::cache;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let o = run(args);
    let e = stderr(&o);
    assert!(!o.status.success(), "{args:?} succeeded: {e}");
    for n in needles {
        assert!(e.contains(n), "{args:?}: stderr {e:?} lacks {n:?}");
    }
    assert!(!e.contains("panicked"), "{args:?} panicked: {e}");
}

/// The fixture converted to `ty`, once.
fn model(ty: &str) -> PathBuf {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = M.lock().unwrap();
    let p = cache().join(format!("tiny-{ty}.gguf"));
    if !p.exists() {
        let o = run(&[
            "convert",
            FIXTURE,
            "-o",
            p.to_str().unwrap(),
            "--type",
            ty,
            "-q",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("bits per weight"));
    }
    p
}

#[test]
fn demo_model_runs_without_m_like_readme() {
    let o = run(&[
        "run",
        "-p",
        "Tell me a fortune",
        "-n",
        "12",
        "--temp",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!v["prompt_ids"].as_array().unwrap().is_empty());
    assert!(v["ids"].as_array().unwrap().len() <= 12);
    assert!(v["timings"]["prompt_tokens"].as_u64().unwrap() > 0);
    // same seed-free greedy output twice, and plain-text mode prints the reply with stats on stderr
    let o2 = run(&[
        "run",
        "-p",
        "Tell me a fortune",
        "-n",
        "12",
        "--temp",
        "0",
        "--json",
    ]);
    let v2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(v["ids"], v2["ids"]);
    let o = run(&["run", "-p", "你好", "-n", "8", "--seed", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("tokens per second"));
}

#[test]
fn info_tokenize_quantize_perplexity_bench() {
    let f16 = model("f16");
    let o = run(&["info", f16.to_str().unwrap(), "--tensors"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("general.architecture")
            && s.contains("blk.1.ffn_up.weight")
            && s.contains("bits per weight"),
        "{s}"
    );
    let o = run(&["info", f16.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["metadata"]["chatglm.block_count"], 2);

    let o = run(&["tokenize", "-m", f16.to_str().unwrap(), "Hello world"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!ids.is_empty());
    let chat = cache().join("chat.json");
    std::fs::write(&chat, r#"[{"role":"user","content":"你好"}]"#).unwrap();
    let o = run(&[
        "tokenize",
        "-m",
        f16.to_str().unwrap(),
        "--chat",
        chat.to_str().unwrap(),
    ]);
    let ids: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(&ids[..3], &[3001, 3003, 3006], "[gMASK] sop <|user|>");
    assert_eq!(*ids.last().unwrap(), 3007, "<|assistant|>");

    let q = cache().join("q4.gguf");
    let o = run(&[
        "quantize",
        f16.to_str().unwrap(),
        q.to_str().unwrap(),
        "--type",
        "q4_0",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "perplexity",
        "-m",
        q.to_str().unwrap(),
        "-f",
        &format!("{FIXTURE}/heldout.txt"),
        "-c",
        "128",
        "--chunks",
        "3",
        "--json",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("Final estimate: PPL = "));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["n_chunks"], 3);
    assert!(v["ppl"].as_f64().unwrap() > 1.0 && v["ppl"].as_f64().unwrap() < 500.0);

    // KL divergence: q4_0 against f16
    let base = cache().join("base.kld");
    let heldout = format!("{FIXTURE}/heldout.txt");
    let o = run(&[
        "perplexity",
        "-m",
        f16.to_str().unwrap(),
        "-f",
        &heldout,
        "-c",
        "128",
        "--chunks",
        "3",
        "-q",
        "--kl-divergence-base",
        base.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "perplexity",
        "-m",
        q.to_str().unwrap(),
        "-f",
        &heldout,
        "-c",
        "128",
        "--chunks",
        "3",
        "-q",
        "--json",
        "--kl-divergence-base",
        base.to_str().unwrap(),
        "--kl-divergence",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kl = v["kl"]["mean_kl"].as_f64().unwrap();
    assert!(kl > 0.0 && kl < 0.1, "mean KL {kl}");
    assert!(v["kl"]["top1_agreement"].as_f64().unwrap() > 0.7);

    let o = run(&[
        "bench",
        "-m",
        q.to_str().unwrap(),
        "-p",
        "32",
        "-n",
        "4",
        "-r",
        "2",
        "--bandwidth",
        "-o",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(v[0]["tokens_per_second"].as_f64().unwrap() > 0.0);
    // --bandwidth: the generation test's bytes per step are the file's tensors but the token
    // embeddings, and the cache of the positions it attends to (on average (4 + 1) / 2)
    assert!(v[0]["read_bytes_per_second"].is_null());
    let f = gguf::GgufFile::open(&q).unwrap();
    let weights: u64 = f
        .tensors
        .iter()
        .filter(|t| t.name != "token_embd.weight")
        .map(|t| t.n_bytes())
        .sum();
    let kv_token = v[1]["kv_bytes"].as_f64().unwrap() / v[1]["n_ctx"].as_f64().unwrap();
    let step = weights as f64 + 2.5 * kv_token;
    let (read, tps) = (
        v[1]["read_bytes_per_second"].as_f64().unwrap(),
        v[1]["tokens_per_second"].as_f64().unwrap(),
    );
    assert!(
        (read / tps / step - 1.0).abs() < 1e-9,
        "{read} / {tps} vs {step}"
    );
    let bw = v[1]["bandwidth_bytes_per_second"].as_f64().unwrap();
    let share = v[1]["bandwidth_share"].as_f64().unwrap();
    assert!(bw > 0.0 && share > 0.0 && share.is_finite(), "{bw} {share}");

    // at depth (llama-bench's -d), with llama.cpp's -fa/-ctk/-ctv, and three sequences
    // decoding side by side after the same prefix (llama-batched-bench's -npl)
    let o = run(&[
        "bench",
        "-m",
        q.to_str().unwrap(),
        "-p",
        "32",
        "-n",
        "4",
        "-r",
        "1",
        "-d",
        "0,40",
        "--parallel",
        "1,3",
        "-fa",
        "on",
        "-ctk",
        "q8_0",
        "-ctv",
        "q4_0",
        "-o",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tests: Vec<(&str, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["test"].as_str().unwrap(), r["n_depth"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        tests,
        [
            ("pp32", 0),
            ("tg4", 0),
            ("tg4 x3", 0),
            ("pp32 @ d40", 40),
            ("tg4 @ d40", 40),
            ("tg4 x3 @ d40", 40)
        ]
    );
    assert_eq!(
        (&v[0]["flash_attn"], &v[0]["type_k"], &v[0]["type_v"]),
        (&json!(true), &json!("q8_0"), &json!("q4_0"))
    );
    assert_eq!(v[0]["n_ctx"], json!(72));
    assert_eq!(
        (&v[1]["n_parallel"], &v[2]["n_parallel"]),
        (&json!(1), &json!(3))
    );
    fails_with(
        &[
            "bench",
            "-m",
            q.to_str().unwrap(),
            "-p",
            "32",
            "-n",
            "4",
            "-d",
            "500",
            "-t",
            "1",
        ],
        &["the tests need 532 tokens of context", "512"],
    );
    fails_with(
        &[
            "bench",
            "-m",
            q.to_str().unwrap(),
            "-n",
            "4",
            "--parallel",
            "2",
            "-fa",
            "off",
            "-t",
            "1",
        ],
        &["--parallel 2", "flash attention"],
    );
}

/// Edits a model's metadata and tensor table.
type Edit = dyn Fn(&mut Vec<(String, gguf::Value)>, &mut Vec<gguf::TensorDecl>);

#[test]
fn bad_models_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f16 = model("f16");
    let good = std::fs::read(&f16).unwrap();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();

    std::fs::write(d.join("not.gguf"), b"hello, I am not a model").unwrap();
    fails_with(
        &["run", "-m", &p("not.gguf"), "-p", "hi"],
        &["not.gguf", "not a GGUF file"],
    );
    std::fs::write(d.join("trunc.gguf"), &good[..good.len() / 2]).unwrap();
    fails_with(
        &["run", "-m", &p("trunc.gguf"), "-p", "hi"],
        &["trunc.gguf", "truncated"],
    );
    fails_with(
        &["run", "-m", &p("absent.gguf"), "-p", "hi"],
        &["absent.gguf"],
    );

    // rewrite the metadata / tensor table with the library and check each complaint
    let src = gguf::GgufFile::open(&f16).unwrap();
    let rewrite = |name: &str, edit: &Edit| {
        let mut md = src.metadata.clone();
        let mut decls: Vec<gguf::TensorDecl> = src
            .tensors
            .iter()
            .map(|t| gguf::TensorDecl {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
            })
            .collect();
        edit(&mut md, &mut decls);
        let file = std::fs::File::create(d.join(name)).unwrap();
        let mut w = gguf::GgufWriter::new(file, &md, decls.clone()).unwrap();
        for t in &decls {
            w.write_tensor(&t.name, &vec![0u8; t.n_bytes().unwrap() as usize])
                .unwrap();
        }
        w.finish().unwrap();
    };
    rewrite("arch.gguf", &|md, _| {
        md[0].1 = gguf::Value::String("llama".into())
    });
    fails_with(
        &["run", "-m", &p("arch.gguf"), "-p", "hi"],
        &["architecture is \"llama\"", "expected \"chatglm\""],
    );
    rewrite("missing.gguf", &|_, t| {
        t.retain(|t| t.name != "blk.1.attn_output.weight")
    });
    fails_with(
        &["run", "-m", &p("missing.gguf"), "-p", "hi"],
        &["blk.1.attn_output.weight is missing"],
    );
    rewrite("shape.gguf", &|_, t| {
        t.iter_mut()
            .filter(|t| t.name == "blk.0.ffn_down.weight")
            .for_each(|t| t.dims = vec![352, 64])
    });
    fails_with(
        &["run", "-m", &p("shape.gguf"), "-p", "hi"],
        &["blk.0.ffn_down.weight has shape [352, 64], expected [352, 128]"],
    );
    rewrite("type.gguf", &|_, t| {
        t.iter_mut()
            .filter(|t| t.name == "blk.0.attn_qkv.weight")
            .for_each(|t| t.ty = gguf::GgmlType::BF16)
    });
    fails_with(
        &["run", "-m", &p("type.gguf"), "-p", "hi"],
        &["blk.0.attn_qkv.weight has type bf16"],
    );
    rewrite("key.gguf", &|md, _| {
        md.retain(|(k, _)| k != "chatglm.block_count" && k != "chatglm.attention.head_count")
    });
    fails_with(
        &["run", "-m", &p("key.gguf"), "-p", "hi"],
        &["chatglm.block_count", "chatglm.attention.head_count"],
    );
}

#[test]
fn bad_prompts_and_texts_are_clear_errors() {
    let m = model("q8_0");
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let long = "fortune ".repeat(400);
    fails_with(
        &["run", "-m", m, "-c", "64", "-p", &long],
        &["the prompt has", "context holds 64"],
    );
    fails_with(
        &["run", "-m", m, "-c", "100000", "-p", "hi"],
        &["-c 100000", "512"],
    );
    for t in ["0", "100000"] {
        fails_with(
            &["run", "-m", m, "-t", t, "-p", "hi"],
            &[&format!("-t {t}")],
        );
    }
    // a context too small to score anything: an error before any range is printed
    let o = run(&[
        "perplexity",
        "-m",
        m,
        "-c",
        "1",
        "-f",
        &format!("{FIXTURE}/heldout.txt"),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("-c 1") && e.contains("at least 4") && !e.contains(".."),
        "{e}"
    );
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    fails_with(
        &["perplexity", "-m", m, "-f", empty.to_str().unwrap()],
        &["empty.txt", "empty"],
    );
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "A short text.").unwrap();
    fails_with(
        &[
            "perplexity",
            "-m",
            m,
            "-f",
            short.to_str().unwrap(),
            "-c",
            "128",
        ],
        &["short.txt", "too short", "256"],
    );
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"valid then \xff\xfe invalid").unwrap();
    fails_with(
        &["perplexity", "-m", m, "-f", bad.to_str().unwrap()],
        &["bad.txt", "not valid UTF-8"],
    );
    fails_with(
        &["run", "-m", m, "-f", bad.to_str().unwrap()],
        &["bad.txt", "not valid UTF-8"],
    );
    fails_with(
        &[
            "convert",
            FIXTURE,
            "-o",
            dir.path().join("x.gguf").to_str().unwrap(),
            "--type",
            "iq2_xxs",
        ],
        &["unsupported type", "Q6_K", "IQ4_XS"],
    );
    let chat = dir.path().join("chat.json");
    std::fs::write(&chat, r#"[{"role":"wizard","content":"hi"}]"#).unwrap();
    fails_with(
        &["tokenize", "-m", m, "--chat", chat.to_str().unwrap()],
        &["chat.json", "expected a JSON array of messages"],
    );
    // no prompt and no terminal
    let o = bin()
        .args(["run", "-m", m])
        .env("GLMTOOL_CACHE", cache())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no prompt"));
}

/// GPU flags in the default (CPU-only) build: clear errors, `--device cpu` works, and
/// `info --plan` plans for a hypothetical GPU of the budget's size.
#[test]
fn gpu_flags_and_plan_without_a_gpu() {
    let m = model("q8_0");
    let m = m.to_str().unwrap();
    fails_with(
        &["run", "-m", m, "-p", "hi", "--device", "cuda"],
        &["--device cuda", "built without cuda"],
    );
    // llama.cpp's habit: -ngl without a GPU warns once and runs on the CPU
    if glm_ggml_has_no_gpu() {
        let o = run(&[
            "run", "-m", m, "-p", "hi", "-n", "2", "-t", "1", "-ngl", "99",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let e = stderr(&o);
        assert_eq!(
            e.matches("warning: --gpu-layers/-ngl ignored").count(),
            1,
            "{e}"
        );
    }
    fails_with(
        &[
            "run",
            "-m",
            m,
            "-p",
            "hi",
            "--device",
            "cpu",
            "--gpu-layers",
            "1",
        ],
        &["--device cpu"],
    );
    fails_with(
        &["run", "-m", m, "-p", "hi", "--device", "tpu"],
        &["unknown device"],
    );
    fails_with(
        &["info", m, "--plan", "--vram-budget", "lots"],
        &["not a size"],
    );
    let o = run(&[
        "run", "-m", m, "-p", "hi", "-n", "4", "--device", "cpu", "-v",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("plan: all 2 layers on the CPU"),
        "{}",
        stderr(&o)
    );

    // CPU plan; then a hypothetical 1 GiB GPU takes everything of the tiny model.
    let o = run(&["info", m, "--plan"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("all 2 layers on the CPU"),
        "{text}"
    );
    let o = run(&[
        "info",
        m,
        "--plan",
        "--vram-budget",
        "1G",
        "--json",
        "-c",
        "256",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["n_gpu_layers"], 2);
    assert_eq!(p["output_on_gpu"], true);
    let gpu_total: u64 = ["weights", "kv", "compute", "scratch"]
        .iter()
        .map(|k| p["gpu"][k].as_u64().unwrap())
        .sum();
    assert!(gpu_total <= 1 << 30);
    // A budget too small for what -ngl asks is refused with the number that fits.
    fails_with(
        &["info", m, "--plan", "--vram-budget", "20M", "-ngl", "2"],
        &["-ngl 2 needs", "layers fit"],
    );
    let o = run(&["info", m, "--plan", "--vram-budget", "1G", "-ngl", "1"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("1/2 layers on a GPU"), "{text}");
}

#[test]
fn temporary_files_of_dead_processes_are_removed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    // above Linux's largest pid_max (2^22): no such process can be running
    let stale = dir.path().join(".out.gguf.4194399.tmp");
    std::fs::write(&stale, b"half a model").unwrap();
    // a live process's (this test's) temporary file is left alone
    let live = dir
        .path()
        .join(format!(".out.gguf.{}.tmp", std::process::id()));
    std::fs::write(&live, b"another convert at work").unwrap();
    let o = run(&[
        "convert",
        FIXTURE,
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    if cfg!(target_os = "linux") {
        assert!(!stale.exists(), "stale temporary file kept");
        assert!(e.contains("removed") && e.contains("4194399"), "{e}");
    }
    assert!(live.exists() && out.exists());
}

/// A checkpoint big enough that converting it takes a while: the fixture's config with wider
/// layers, every tensor bf16 (content irrelevant).
fn slow_checkpoint(dir: &Path) {
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(FIXTURE).join("config.json")).unwrap(),
    )
    .unwrap();
    cfg["hidden_size"] = 1024.into();
    cfg["ffn_hidden_size"] = 2816.into();
    cfg["kv_channels"] = 128.into();
    cfg["num_attention_heads"] = 8.into();
    cfg["num_layers"] = 6.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        Path::new(FIXTURE).join("tokenizer.model"),
        dir.join("tokenizer.model"),
    )
    .unwrap();
    let parsed = glm_convert::GlmConfig::from_json(&cfg, &dir.join("config.json")).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = parsed
        .expected_tensors()
        .into_iter()
        .map(|(_, hf, shape)| {
            let n: u64 = shape.iter().product();
            let data = (0..n)
                .flat_map(|i| ((i % 251) as u16 + 0x3c00).to_le_bytes())
                .collect();
            (hf, shape.iter().map(|&d| d as usize).collect(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), d)
                .unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
}

#[cfg(unix)]
#[test]
fn sigterm_and_sighup_during_convert_leave_nothing() {
    let ckpt = tempfile::tempdir().unwrap();
    slow_checkpoint(ckpt.path());
    for signal in ["TERM", "HUP"] {
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("out.gguf");
        let mut child = bin()
            .args(["convert", ckpt.path().to_str().unwrap(), "-o"])
            .arg(&out)
            .args(["--type", "q4_0", "-q"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // wait until the temporary output exists: the conversion is writing
        let t0 = std::time::Instant::now();
        let writing = loop {
            let tmp = std::fs::read_dir(out_dir.path())
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
            if tmp || t0.elapsed().as_secs() > 60 {
                break tmp;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        if !writing {
            let o = child.wait_with_output().unwrap();
            panic!("the conversion never started writing: {}", stderr(&o));
        }
        let killed = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let o = child.wait_with_output().unwrap();
        let e = stderr(&o);
        if o.status.success() {
            // the conversion won the race; nothing to check
            eprintln!("SIG{signal}: the conversion finished first");
            continue;
        }
        assert!(e.contains("interrupted"), "SIG{signal}: {e}");
        let left: Vec<_> = std::fs::read_dir(out_dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "SIG{signal} left {left:?}");
    }
}

/// This build has no GPU backend (the tests that expect the CPU fallback check it).
fn glm_ggml_has_no_gpu() -> bool {
    let o = run(&["--version"]);
    String::from_utf8_lossy(&o.stdout).contains("backends: cpu;")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_checkpoint_folder_runs_directly_and_is_converted_once() {
    let cache = tempfile::tempdir().unwrap();
    let with_cache = |args: &[&str]| {
        bin()
            .args(args)
            .env("GLMTOOL_CACHE", cache.path())
            .env_remove("GLMTOOL_MODEL")
            .output()
            .unwrap()
    };
    let o = with_cache(&[
        "run", "-m", FIXTURE, "-p", "hi", "-n", "3", "--temp", "0", "-t", "1", "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("converting it to Q4_0 once") && e.contains("wrote "),
        "{e}"
    );
    let first: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let converted: Vec<_> = std::fs::read_dir(cache.path().join("converted"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".gguf.check"))
        .collect();
    assert_eq!(converted.len(), 1, "{converted:?}");
    assert!(converted[0].to_string_lossy().ends_with("-q4_0.gguf"));
    // the second time it is reused, also when -m names a file of the checkpoint
    let weights = format!("{FIXTURE}/model.safetensors");
    let o = with_cache(&[
        "run", "-m", &weights, "-p", "hi", "-n", "3", "--temp", "0", "-t", "1", "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("using "), "{}", stderr(&o));
    let second: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(first["ids"], second["ids"]);
    // --type picks another conversion; perplexity and info take the folder too
    let o = with_cache(&["info", "-m", FIXTURE, "--type", "q8_0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Q8_0 (mostly)"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read_dir(cache.path().join("converted"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "gguf"))
            .count(),
        2
    );
    let heldout = format!("{FIXTURE}/heldout.txt");
    let o = with_cache(&[
        "perplexity",
        "-m",
        FIXTURE,
        "-f",
        &heldout,
        "-c",
        "128",
        "--chunks",
        "1",
        "-t",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // a file that is neither names the command that converts
    let dir = tempfile::tempdir().unwrap();
    let bin_file = dir.path().join("pytorch_model.bin");
    std::fs::write(&bin_file, b"PK\x03\x04 not a gguf").unwrap();
    let o = with_cache(&["run", "-m", bin_file.to_str().unwrap(), "-p", "hi"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("not a GGUF file") && e.contains("glmtool convert DIR -o FILE.gguf"),
        "{e}"
    );
}

#[test]
fn convert_names_what_a_checkpoint_folder_needs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.gguf");
    let out = out.to_str().unwrap();
    let missing = dir.path().join("nowhere");
    fails_with(
        &["convert", missing.to_str().unwrap(), "-o", out],
        &["nowhere", "does not exist"],
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails_with(
        &["convert", empty.to_str().unwrap(), "-o", out],
        &["no config.json", "tokenizer.model", "model.safetensors"],
    );
}

#[test]
fn glmtool_model_sets_the_default_model() {
    let q8 = model("q8_0");
    let o = bin()
        .args(["info"])
        .env("GLMTOOL_CACHE", cache())
        .env("GLMTOOL_MODEL", &q8)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with(&q8.display().to_string()), "{text}");
    for needle in [
        "architecture  chatglm",
        "chat format   ChatGLM3",
        "parameters    1.2 M",
        "file type     Q8_0 (mostly)",
        "bits per weight",
        "vocabulary    3072 tokens",
        "default run   about",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    let o = bin()
        .args(["info", "--json"])
        .env("GLMTOOL_CACHE", cache())
        .env("GLMTOOL_MODEL", &q8)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["summary"]["file type"], "Q8_0 (mostly)");
}

#[test]
fn llama_cpp_flags_mean_what_they_mean_there() {
    let m = model("q8_0");
    let m = m.to_str().unwrap();
    let json = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["run", "-m", m, "-p", "hi", "-n", "4", "-t", "1", "--json"];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // -s is the seed: same seed, same sample; the prompt is unchanged
    let plain = json(&["--temp", "0"]);
    let a = json(&["-s", "42", "--temp", "1.5"]);
    let b = json(&["--seed", "42", "--temp", "1.5"]);
    assert_eq!(a["ids"], b["ids"]);
    assert_eq!(a["prompt_ids"], plain["prompt_ids"]);
    // -sys is the system message
    let sys = json(&["-sys", "Be brief.", "--temp", "0"]);
    let long = json(&["--system", "Be brief.", "--temp", "0"]);
    assert_eq!(sys["prompt_ids"], long["prompt_ids"]);
    assert!(
        sys["prompt_ids"].as_array().unwrap().len() > plain["prompt_ids"].as_array().unwrap().len()
    );
    // --color is accepted (llama.cpp scripts pass it)
    json(&["--color", "--temp", "0"]);
    // numeric flags: the flag and the bad value in the error
    fails_with(
        &["run", "-m", m, "-p", "hi", "--temp", "-1"],
        &["'-1'", "--temp", ">= 0"],
    );
    fails_with(
        &["run", "-m", m, "-p", "hi", "--top-p", "7"],
        &["'7'", "--top-p", "between 0 and 1"],
    );
    fails_with(
        &["run", "-m", m, "-p", "hi", "--repeat-penalty", "0"],
        &["'0'", "--repeat-penalty", "> 0"],
    );
    fails_with(
        &["run", "-m", m, "-p", "hi", "--temp", "warm"],
        &["'warm'", "--temp", "a number"],
    );
}

#[test]
fn quantize_takes_llama_quantize_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let f16 = model("f16");
    let f16 = f16.to_str().unwrap();
    let out = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    for (name, ty, want) in [
        ("a.gguf", "q8_0", "q8_0"),
        ("b.gguf", "Q4_0", "q4_0"),
        ("c.gguf", "7", "q8_0"),
    ] {
        let o = run(&["quantize", f16, &out(name), ty, "-q"]);
        assert!(o.status.success(), "{ty}: {}", stderr(&o));
        let f = gguf::GgufFile::open(out(name)).unwrap();
        assert_eq!(f.tensor("blk.0.attn_qkv.weight").unwrap().ty.name(), want);
    }
    fails_with(
        &["quantize", f16, &out("d.gguf")],
        &["no target type", "Q4_K_M"],
    );
    assert!(!dir.path().join("d.gguf").exists());
    // an already quantized input: one short line, and --allow-requantize does it
    let o = run(&["quantize", &out("a.gguf"), &out("e.gguf"), "q4_0"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("already quantized") && e.contains("--allow-requantize"),
        "{e}"
    );
    assert!(e.trim().lines().count() == 1 && e.len() < 300, "{e}");
    let o = run(&[
        "quantize",
        &out("a.gguf"),
        &out("e.gguf"),
        "q4_0",
        "--allow-requantize",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn info_plan_ngl_completions_man_version_tokenize_stdin() {
    let m = model("q8_0");
    let m = m.to_str().unwrap();
    // -ngl without a budget plans that many layers
    let o = run(&["info", "-m", m, "--plan", "-ngl", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("1/2 layers on a GPU"), "{}", stdout(&o));
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completions", shell]);
        assert!(o.status.success());
        let text = stdout(&o);
        assert!(
            text.contains("glmtool") && text.contains("quantize") && text.len() > 1000,
            "{shell}"
        );
    }
    let o = run(&["man"]);
    assert!(stdout(&o).contains(".TH glmtool 1"));
    let o = run(&["--version"]);
    let v = stdout(&o);
    assert!(
        v.contains("backends: cpu") && v.contains("commit ") && v.contains("b2757"),
        "{v}"
    );
    // tokenize reads standard input; --show-pieces prints id and piece
    let mut child = bin()
        .args(["tokenize", "-m", m, "--show-pieces"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all("你好 world".as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(
        text.contains("\"你\"") && text.contains("\"▁world\""),
        "{text}"
    );
    let direct = stdout(&run(&["tokenize", "-m", m, "你好 world"]));
    let ids: Vec<u32> = serde_json::from_str(&direct).unwrap();
    assert_eq!(ids.len(), text.lines().count());
}

#[test]
fn glm4_runs_from_its_checkpoint_with_the_chat_template_prompt() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tok = root.join("../shared/reference/glm-4-9b-chat/tokenizer.model");
    if !tok.exists() {
        eprintln!("skipping: {} not found", tok.display());
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let ckpt = d.path().join("tiny-glm4");
    std::fs::create_dir(&ckpt).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(root.join("tests/fixtures/tiny-glm4").join(f), ckpt.join(f)).unwrap();
    }
    std::fs::copy(tok, ckpt.join("tokenizer.model")).unwrap();
    let gguf = d.path().join("glm4.gguf");
    let o = run(&[
        "convert",
        ckpt.to_str().unwrap(),
        "-o",
        gguf.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("model family: glm4"), "{}", stderr(&o));
    let m = gguf.to_str().unwrap();
    let info = stdout(&run(&["info", "-m", m]));
    assert!(info.contains("chat format   GLM-4"), "{info}");
    assert!(
        info.contains("-c 8192"),
        "the default context is capped: {info}"
    );
    // every golden conversation through --chat gives the chat template's prompt ids
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/glm4/golden_chat.json")).unwrap(),
    )
    .unwrap();
    for (name, c) in golden["conversations"].as_object().unwrap() {
        let chat = d.path().join(format!("{name}.json"));
        std::fs::write(&chat, c["messages"].to_string()).unwrap();
        let o = run(&[
            "run",
            "-m",
            m,
            "--chat",
            chat.to_str().unwrap(),
            "-n",
            "2",
            "-t",
            "1",
            "--json",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["prompt_ids"], c["ids"], "{name}");
    }
    // --tools with a GLM-4 model: the tools go into GLM-4's system section
    let tools = d.path().join("tools.json");
    std::fs::write(
        &tools,
        golden["conversations"]["tool_call"]["messages"][0]["tools"].to_string(),
    )
    .unwrap();
    let o = run(&[
        "run",
        "-m",
        m,
        "--tools",
        tools.to_str().unwrap(),
        "-p",
        "北京今天天气怎么样？",
        "-n",
        "2",
        "-t",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let want = &golden["conversations"]["tool_call"]["ids"];
    let n = v["prompt_ids"].as_array().unwrap().len();
    // the golden prompt continues with the call and its result; the start is the same
    assert_eq!(
        v["prompt_ids"].as_array().unwrap()[..n - 1],
        want.as_array().unwrap()[..n - 1]
    );
    fails_with(
        &["run", "-m", m, "--interpreter", "-p", "x"],
        &["--interpreter", "GLM-4"],
    );
}

#[test]
fn a_base_model_completes_text_and_chats_only_when_asked() {
    let d = tempfile::tempdir().unwrap();
    let gguf = d.path().join("base.gguf");
    let g = gguf.to_str().unwrap();
    let o = run(&[
        "convert",
        FIXTURE,
        "-o",
        g,
        "--family",
        "chatglm3-base",
        "--type",
        "q8_0",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("model family: chatglm3-base (prompt format: completion"));
    let f = gguf::GgufFile::open(&gguf).unwrap();
    assert_eq!(f.get_str("glmtool.chat_format").unwrap(), "completion");
    assert!(stdout(&run(&["info", "-m", g])).contains("none: a base or code model"));
    // plain completion: [gMASK] sop + the text, no role tokens
    let o = run(&[
        "run",
        "-m",
        g,
        "-p",
        "the fortune",
        "-n",
        "3",
        "-t",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<u64> = serde_json::from_value(v["prompt_ids"].clone()).unwrap();
    let tok = stdout(&run(&["tokenize", "-m", g, "the fortune"]));
    let text_ids: Vec<u64> = serde_json::from_str(&tok).unwrap();
    assert_eq!(ids[2..], text_ids[..]);
    assert_eq!(ids.len(), text_ids.len() + 2);
    // --chat asks for ChatGLM3's format explicitly
    let chat = d.path().join("chat.json");
    std::fs::write(&chat, r#"[{"role": "user", "content": "hi"}]"#).unwrap();
    let o = run(&[
        "run",
        "-m",
        g,
        "--chat",
        chat.to_str().unwrap(),
        "-n",
        "2",
        "-t",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["prompt_ids"].as_array().unwrap().len() > ids.len() - text_ids.len() + 2);
    // no prompt: a base model does not chat
    fails_with(&["run", "-m", g, "-i"], &["base or code model", "-p TEXT"]);
    // --family with a bad name
    fails_with(
        &["convert", FIXTURE, "-o", g, "--family", "llama"],
        &["unknown family", "chatglm3-base"],
    );
}

#[test]
fn a_damaged_cache_entry_is_rebuilt_with_a_message() {
    let cache = tempfile::tempdir().unwrap();
    let with_cache = |args: &[&str]| {
        bin()
            .args(args)
            .env("GLMTOOL_CACHE", cache.path())
            .env_remove("GLMTOOL_MODEL")
            .output()
            .unwrap()
    };
    let generate = ["run", "-p", "hi", "-n", "3", "--temp", "0", "-t", "1"];
    let o = with_cache(&generate);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = o.stdout.clone();
    let entry = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "gguf"))
        .expect("the demo model's cache entry");
    let mut check = entry.as_os_str().to_owned();
    check.push(".check");
    assert!(std::path::Path::new(&check).exists());
    let len = std::fs::metadata(&entry).unwrap().len();
    type Damage<'a> = Box<dyn Fn(&std::path::Path) + 'a>;
    let damages: [(&str, Damage, &str); 4] = [
        (
            "truncated",
            Box::new(move |p| {
                std::fs::File::options()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap()
            }),
            "bytes",
        ),
        (
            "emptied",
            Box::new(|p| std::fs::write(p, b"").unwrap()),
            "bytes",
        ),
        (
            "one bit flipped",
            Box::new(|p| {
                let mut b = std::fs::read(p).unwrap();
                let i = b.len() * 2 / 3;
                b[i] ^= 0x10;
                std::fs::write(p, b).unwrap();
            }),
            "checksum",
        ),
        (
            "record lost",
            Box::new(|p| {
                let mut c = p.as_os_str().to_owned();
                c.push(".check");
                std::fs::remove_file(c).unwrap();
            }),
            "no valid record",
        ),
    ];
    for (what, damage, reason) in damages {
        damage(&entry);
        let o = with_cache(&generate);
        let e = stderr(&o);
        assert!(o.status.success(), "{what}: {e}");
        assert!(
            e.contains("cache entry")
                && e.contains("is damaged")
                && e.contains(reason)
                && e.contains("rebuilding"),
            "{what}: {e}"
        );
        assert_eq!(
            o.stdout, want,
            "{what}: the rebuilt model generates the same"
        );
        // and the next run finds it sound again
        let o = with_cache(&generate);
        assert!(!stderr(&o).contains("damaged"), "{what}: {}", stderr(&o));
    }
}

#[test]
fn llama_cpp_flags_work_or_are_refused_in_one_line() {
    // refused: exit 2, one line, no misparse into bundled short flags
    for flag in ["-ub", "-mli", "--mlock", "-ts", "-tb"] {
        let o = run(&["run", flag, "4", "-p", "hi", "-n", "1"]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.starts_with(&format!("error: glmtool has no {flag} (")),
            "{flag}: {e}"
        );
        assert_eq!(e.trim_end().lines().count(), 1, "{flag}: {e}");
    }
    // renamed ones work
    let base = [
        "run", "-p", "hi", "-n", "2", "--temp", "0", "-t", "1", "--json",
    ];
    let o = run(&base);
    assert!(o.status.success(), "{}", stderr(&o));
    let plain: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut args = base.to_vec();
    args.extend([
        "-ngl",
        "0",
        "-co",
        "-ctk",
        "f16",
        "-ctv",
        "f16",
        "--no-mmap",
        "-dev",
        "cpu",
    ]);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let renamed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plain["ids"], renamed["ids"]);
    // -fa (bare or with a value) and K and V cache types of their own
    for extra in [
        &["-fa", "-ctk", "f32", "-ctv", "f16"][..],
        &["-fa", "off", "-ctk", "q8_0"],
        &["-fa", "on", "-ctk", "q8_0", "-ctv", "q4_0"],
        &["--flash-attn=auto", "--cache-type", "q8_0"],
    ] {
        let mut args = base.to_vec();
        args.extend(extra);
        let o = run(&args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
    }
    fails_with(
        &["run", "-p", "hi", "-fa", "off", "-ctv", "q8_0"],
        &["-ctv q8_0", "needs flash attention", "-fa off"],
    );
    fails_with(
        &["run", "-p", "hi", "-ctk", "q5_k"],
        &["unknown cache type"],
    );
    // -e is on by default: "\n" in -p is a newline, as in llama.cpp; --no-escape keeps it
    let ids = |extra: &[&str], p: &str| {
        let mut a = vec![
            "run", "-p", p, "-n", "1", "--temp", "0", "-t", "1", "--json",
        ];
        a.extend(extra);
        let o = run(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["prompt_ids"].clone()
    };
    assert_eq!(ids(&[], "a\\nb"), ids(&["--no-escape"], "a\nb"));
    assert_ne!(ids(&["--no-escape"], "a\\nb"), ids(&[], "a\\nb"));
    // -r stops once the output ends with the text, which is kept
    let o = run(&[
        "run", "-p", "hi", "-n", "40", "--temp", "0", "-t", "1", "--json",
    ]);
    let full: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = full["text"].as_str().unwrap().to_string();
    let stop_at: String = text.chars().skip(3).take(3).collect();
    assert!(!stop_at.trim().is_empty(), "{text:?}");
    let o = run(&[
        "run", "-p", "hi", "-n", "40", "--temp", "0", "-t", "1", "--json", "-r", &stop_at,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cut: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cut_text = cut["text"].as_str().unwrap();
    assert_eq!(cut["stop"], "reverse prompt", "{cut}");
    assert!(
        cut_text.ends_with(&stop_at) && text.starts_with(cut_text),
        "{cut_text:?} vs {text:?}"
    );
}

#[test]
fn imatrix_then_quantize_with_it_and_every_bad_imatrix_is_one_line() {
    use glm_convert::quant::imatrix::{Entry, Imatrix};
    let dir = tempfile::tempdir().unwrap();
    let f32m = model("f32");
    let m = f32m.to_str().unwrap();
    let out = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let text = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/imatrix/calibration.txt"
    );
    let args = |o: &str| {
        vec![
            "imatrix".to_string(),
            "-m".into(),
            m.into(),
            "-f".into(),
            text.into(),
            "-c".into(),
            "128".into(),
            "--chunks".into(),
            "3".into(),
            "-t".into(),
            "1".into(),
            "-o".into(),
            out(o),
            "-q".into(),
            "--process-output".into(),
        ]
    };
    let o = bin().args(args("im.gguf")).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("Final estimate: PPL"), "{}", stderr(&o));
    let im = Imatrix::load(Path::new(&out("im.gguf"))).unwrap();
    assert_eq!(
        (im.entries.len(), im.chunk_count, im.chunk_size),
        (9, 3, 128)
    );
    assert_eq!(im.datasets, [text]);
    // written after every chunk too: the same file in the end
    let mut every = args("every.gguf");
    every.extend(["--output-frequency".into(), "1".into()]);
    let o = bin().args(&every).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out("every.gguf")).unwrap(),
        std::fs::read(out("im.gguf")).unwrap()
    );
    // the output exists: --force is needed
    let o = bin().args(args("im.gguf")).output().unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("already exists"),
        "{}",
        stderr(&o)
    );
    // two files combined, no text: sums and counts add up
    let o = run(&[
        "imatrix",
        "--in-file",
        &format!("{},{}", out("im.gguf"), out("im.gguf")),
        "-o",
        &out("two.gguf"),
        "-c",
        "128",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let two = Imatrix::load(Path::new(&out("two.gguf"))).unwrap();
    assert_eq!(two.chunk_count, 6);
    assert_eq!(two.entries["output.weight"].counts, [2 * 3 * 128]);

    let o = run(&[
        "quantize",
        m,
        &out("q.gguf"),
        "q4_0",
        "--imatrix",
        &out("im.gguf"),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let q = gguf::GgufFile::open(out("q.gguf")).unwrap();
    assert_eq!(q.get_u64("quantize.imatrix.entries_count").unwrap(), 9);
    assert_eq!(q.get_u64("quantize.imatrix.chunks_count").unwrap(), 3);
    assert_eq!(q.get_str("quantize.imatrix.file").unwrap(), out("im.gguf"));

    // bad importance matrices: one line naming the file and the tensor, no output
    let with = |name: &str, f: &dyn Fn(&mut Imatrix)| {
        let mut bad = im.clone();
        f(&mut bad);
        bad.save(Path::new(&out(name)), true, &[]).unwrap();
        out(name)
    };
    let entry = |n: usize, v: f32| Entry {
        sums: vec![v; n],
        counts: vec![384],
    };
    let mut bytes = std::fs::read(out("im.gguf")).unwrap();
    bytes.truncate(bytes.len() - 100);
    std::fs::write(out("cut.gguf"), &bytes).unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            with("other.gguf", &|i| {
                i.entries
                    .insert("blk.7.ffn_up.weight".into(), entry(128, 1.0));
            }),
            vec!["other.gguf", "blk.7.ffn_up.weight is not in the model"],
        ),
        (
            with("width.gguf", &|i| {
                i.entries
                    .insert("blk.0.ffn_up.weight".into(), entry(64, 1.0));
            }),
            vec![
                "width.gguf",
                "blk.0.ffn_up.weight has 64 importance values",
                "128 columns",
            ],
        ),
        (
            with("nan.gguf", &|i| {
                i.entries
                    .insert("blk.1.ffn_down.weight".into(), entry(352, f32::NAN));
            }),
            vec!["nan.gguf", "blk.1.ffn_down.weight", "NaN"],
        ),
        (
            with("neg.gguf", &|i| {
                i.entries
                    .insert("blk.1.attn_qkv.weight".into(), entry(128, -2.0));
            }),
            vec!["neg.gguf", "blk.1.attn_qkv.weight", "-2"],
        ),
        (
            out("cut.gguf"),
            vec!["cut.gguf", "truncated", "output.weight"],
        ),
        (
            m.to_string(),
            vec![
                "tiny-f32.gguf",
                "token_embd.weight is neither",
                "a model file?",
            ],
        ),
    ];
    for (file, want) in cases {
        let o = run(&["quantize", m, &out("bad.gguf"), "q4_0", "--imatrix", &file]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{file}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        for w in want {
            assert!(e.contains(w), "{file}: {e:?} lacks {w:?}");
        }
        assert!(
            !dir.path().join("bad.gguf").exists(),
            "{file}: output written"
        );
    }
    fails_with(
        &[
            "quantize",
            m,
            &out("bad.gguf"),
            "q4_0",
            "--imatrix",
            &out("im.gguf"),
            "--include-weights",
            "ffn",
            "--exclude-weights",
            "attn",
        ],
        &["--include-weights", "--exclude-weights"],
    );
    fails_with(
        &["imatrix", "-m", m, "-o", &out("x.gguf")],
        &["nothing to do", "-f"],
    );
}

#[test]
fn a_folder_that_is_not_a_checkpoint_is_refused_before_any_conversion_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("emptydir");
    std::fs::create_dir(&empty).unwrap();
    let o = run(&["run", "-m", empty.to_str().unwrap(), "-p", "hi"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("emptydir: has no config.json"), "{e}");
    assert!(!e.contains("converting"), "announced before checking: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
}

#[test]
fn tokenize_takes_llama_tokenize_p_and_lists_only_its_own_flags() {
    let with_p = run(&["tokenize", "-p", "Hello world"]);
    assert!(with_p.status.success(), "{}", stderr(&with_p));
    let positional = run(&["tokenize", "Hello world"]);
    assert_eq!(stdout(&with_p), stdout(&positional));
    let ids: Vec<u32> = serde_json::from_str(&stdout(&with_p)).unwrap();
    assert!(!ids.is_empty());
    fails_with(&["tokenize", "-p", "a", "b"], &["cannot be used with"]);
    let help = stdout(&run(&["tokenize", "--help"]));
    assert!(help.contains("-p, --prompt"), "{help}");
    for flag in [
        "--ctx-size",
        "--batch-size",
        "--device",
        "--threads",
        "--gpu-layers",
    ] {
        assert!(!help.contains(flag), "tokenize --help lists {flag}: {help}");
    }
}

#[test]
fn perplexity_without_a_file_asks_for_f_not_m() {
    let o = run(&["perplexity"]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("--file <FILE>"), "{e}");
    assert!(!e.contains("--model"), "-m is optional: {e}");
}

/// `run` on the demo model with GLMTOOL_LOADAVG set to `load`, plus `extra` flags.
fn run_with_load(load: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", "-p", "hi", "-n", "1", "--temp", "0"];
    args.extend(extra);
    bin()
        .args(&args)
        .env("GLMTOOL_CACHE", cache())
        .env("GLMTOOL_LOADAVG", load)
        .env_remove("GLMTOOL_MODEL")
        .output()
        .unwrap()
}

#[test]
fn busy_cpus_get_one_warning_with_the_t_hint() {
    if glm_runtime::default_threads() < 2 {
        eprintln!("skipping: one core, -t 1 is already the default");
        return;
    }
    let busy = "1000.00 900.00 800.00 1001/2000 4242";
    let o = run_with_load(busy, &[]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert_eq!(e.matches("warning: the CPUs are busy").count(), 1, "{e}");
    assert!(
        e.contains("load average 1000.00, 1001 tasks running"),
        "{e}"
    );
    assert!(e.contains("; try -t 1"), "{e}");
    // -t given: the user chose
    let e = stderr(&run_with_load(busy, &["-t", "2"]));
    assert!(!e.contains("CPUs are busy"), "{e}");
    // idle, or busy a minute ago but not now (our own last run, say)
    for load in ["0.00 0.00 0.00 1/100 1", "3000.00 10.00 10.00 1/100 1"] {
        let e = stderr(&run_with_load(load, &[]));
        assert!(!e.contains("CPUs are busy"), "{load}: {e}");
    }
}

#[test]
fn the_demo_model_gives_a_short_reply_by_default() {
    let demo = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["run", "-p", "Tell me a fortune", "--json", "-t", "1"];
        args.extend(extra);
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    for seed in ["1", "2", "3", "4", "5"] {
        let v = demo(&["-s", seed]);
        let n = v["ids"].as_array().unwrap().len();
        let stop = v["stop"].as_str().unwrap();
        assert!(n <= 96, "seed {seed}: {n} tokens");
        // the reply ends in whitespace holding two newlines (a blank line), or one after
        // 32 tokens (the end of a line)
        let text = v["text"].as_str().unwrap();
        let newlines = text[text.trim_end().len()..].matches('\n').count();
        match stop {
            "blank line" => assert!(newlines >= 2, "{v}"),
            "end of line" => assert!(n >= 32 && newlines == 1, "{v}"),
            _ => assert!(stop == "length" || stop == "</s>", "seed {seed}: {v}"),
        }
    }
    // printed: whole lines, no trailing blank line
    let o = run(&["run", "-p", "Tell me a fortune", "--temp", "0", "-t", "1"]);
    let text = stdout(&o);
    assert!(text.ends_with('\n') && !text.ends_with("\n\n"), "{text:?}");
    assert!(text.lines().count() <= 4, "{text:?}");
    // -n: the plain behaviour
    let v = demo(&["--temp", "0", "-n", "120"]);
    assert_eq!(v["ids"].as_array().unwrap().len(), 120, "{v}");
    assert_eq!(v["stop"], "length");
    // another model (here the demo's GGUF, named by GLMTOOL_MODEL) is not shaped
    let gguf = std::fs::read_dir(cache())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tiny-chatglm3-"))
                && p.extension().is_some_and(|x| x == "gguf")
        })
        .expect("the demo model's cache entry");
    let o = bin()
        .args([
            "run",
            "-p",
            "Tell me a fortune",
            "--json",
            "-t",
            "1",
            "--temp",
            "0",
        ])
        .env("GLMTOOL_CACHE", cache())
        .env("GLMTOOL_MODEL", &gguf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["ids"].as_array().unwrap().len() > 96, "{v}");
}
