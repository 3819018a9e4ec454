//! `run --interpreter --allow-exec` end to end, through a model whose replies are fixed: a tiny
//! GGUF built here whose first reply is always a code cell and whose reply after the cell's
//! result is a plain answer. The model is a bigram table plus one attention head that notices
//! the result: embeddings pick a direction per token, the output head maps `<|assistant|>` → the
//! cell (one vocabulary piece `interpreter\n```python\nprint(6*7)\n````), the cell →
//! `<|observation|>`; attention with zero queries and keys averages over the context, and its
//! values carry only the byte `4`, which first appears in the cell's result `42` — then
//! `<|assistant|>` leads to the answer piece instead, and the answer to `<eos>`.

use std::path::Path;
use std::process::Command;

const N_EMBD: usize = 32;
const HEAD: usize = 16;
const N_HEAD: usize = 2;
const N_KV: usize = 1;
const N_FF: usize = 32;

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes the scripted model; returns the path.
fn scripted_model(dir: &Path) -> std::path::PathBuf {
    use gguf::{GgmlType, GgufWriter, TensorDecl, Value};
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<bos>".into(), "<eos>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let cell = tokens.len();
    tokens.push("interpreter\n```python\nprint(6*7)\n```".into());
    let answer = cell + 1;
    tokens.push("The▁answer▁is▁42.".into());
    types.extend([1, 1]);
    let first_special = tokens.len();
    for s in gguf::names::CHATGLM3_SPECIALS {
        tokens.push(s.into());
        types.push(3);
    }
    let assistant = first_special + 7;
    let observation = first_special + 8;
    let eos = 2;
    let marker = 3 + b'4' as usize;
    let n_vocab = tokens.len();
    let scores = vec![0f32; n_vocab];

    // directions of the residual stream
    let (d_asst, d_cell, d_answer, d_seen, d_marker) = (0, 1, 2, 3, 4);
    let mut embd = vec![0f32; N_EMBD * n_vocab];
    for (tok, dim) in [
        (assistant, d_asst),
        (cell, d_cell),
        (answer, d_answer),
        (marker, d_marker),
    ] {
        embd[tok * N_EMBD + dim] = 1.0;
    }
    let qkv_rows = (N_HEAD + 2 * N_KV) * HEAD;
    let mut qkv = vec![0f32; N_EMBD * qkv_rows];
    // value dimension 0 of the one KV head reads the marker direction (queries and keys are 0:
    // every position attends to all before it alike)
    let v_row = (N_HEAD + N_KV) * HEAD;
    qkv[v_row * N_EMBD + d_marker] = 2000.0;
    // head 0's value dimension 0 → the "seen a 4" direction
    let mut attn_out = vec![0f32; N_EMBD * N_EMBD];
    attn_out[d_seen * N_EMBD] = 1.0;
    let mut output = vec![0f32; N_EMBD * n_vocab];
    let mut w = |tok: usize, dim: usize, x: f32| output[tok * N_EMBD + dim] = x;
    w(cell, d_asst, 10.0); // <|assistant|> → the cell
    w(observation, d_cell, 10.0); // the cell → <|observation|>
    w(answer, d_seen, 10.0); // after the result: the answer
    w(answer, d_answer, -1000.0);
    w(eos, d_answer, 1000.0); // the answer → <eos>

    let md: Vec<(String, Value)> = vec![
        (
            "general.architecture".into(),
            Value::String("chatglm".into()),
        ),
        (
            "general.name".into(),
            Value::String("scripted-interpreter".into()),
        ),
        ("chatglm.context_length".into(), Value::U32(2048)),
        ("chatglm.embedding_length".into(), Value::U32(N_EMBD as u32)),
        (
            "chatglm.feed_forward_length".into(),
            Value::U32(N_FF as u32),
        ),
        ("chatglm.block_count".into(), Value::U32(1)),
        (
            "chatglm.attention.head_count".into(),
            Value::U32(N_HEAD as u32),
        ),
        (
            "chatglm.attention.head_count_kv".into(),
            Value::U32(N_KV as u32),
        ),
        (
            "chatglm.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        (
            "chatglm.rope.dimension_count".into(),
            Value::U32((HEAD / 2) as u32),
        ),
        ("chatglm.rope.freq_base".into(), Value::F32(10000.0)),
        ("general.file_type".into(), Value::U32(0)),
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.pre".into(),
            Value::String("chatglm-spm".into()),
        ),
        ("tokenizer.ggml.tokens".into(), Value::strings(tokens)),
        ("tokenizer.ggml.scores".into(), Value::f32s(&scores)),
        ("tokenizer.ggml.token_type".into(), Value::i32s(&types)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(eos as u32)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(0)),
    ];
    let ones = vec![1f32; N_EMBD];
    let tensors: Vec<(&str, Vec<u64>, Vec<f32>)> = vec![
        (
            "token_embd.weight",
            vec![N_EMBD as u64, n_vocab as u64],
            embd,
        ),
        ("blk.0.attn_norm.weight", vec![N_EMBD as u64], ones.clone()),
        (
            "blk.0.attn_qkv.weight",
            vec![N_EMBD as u64, qkv_rows as u64],
            qkv,
        ),
        (
            "blk.0.attn_qkv.bias",
            vec![qkv_rows as u64],
            vec![0.0; qkv_rows],
        ),
        (
            "blk.0.attn_output.weight",
            vec![N_EMBD as u64, N_EMBD as u64],
            attn_out,
        ),
        ("blk.0.ffn_norm.weight", vec![N_EMBD as u64], ones.clone()),
        (
            "blk.0.ffn_up.weight",
            vec![N_EMBD as u64, 2 * N_FF as u64],
            vec![0.0; N_EMBD * 2 * N_FF],
        ),
        (
            "blk.0.ffn_down.weight",
            vec![N_FF as u64, N_EMBD as u64],
            vec![0.0; N_FF * N_EMBD],
        ),
        ("output_norm.weight", vec![N_EMBD as u64], ones),
        ("output.weight", vec![N_EMBD as u64, n_vocab as u64], output),
    ];
    let decls: Vec<TensorDecl> = tensors
        .iter()
        .map(|(name, dims, _)| TensorDecl {
            name: name.to_string(),
            dims: dims.clone(),
            ty: GgmlType::F32,
        })
        .collect();
    let path = dir.join("scripted.gguf");
    let file = std::fs::File::create(&path).unwrap();
    let mut wr = GgufWriter::new(file, &md, decls).unwrap();
    for (name, _, data) in &tensors {
        wr.write_tensor(name, &f32s(data)).unwrap();
    }
    wr.finish().unwrap();
    path
}

#[test]
fn a_code_cell_runs_and_its_result_goes_back_to_the_model() {
    if Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("skipping: no python3");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = scripted_model(dir.path());
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_glmtool"))
            .args([
                "run",
                "-m",
                model.to_str().unwrap(),
                "--interpreter",
                "-p",
                "What is six times seven?",
            ])
            .args(["--temp", "0", "-t", "1", "-n", "8"])
            .args(extra)
            .env("GLMTOOL_CACHE", dir.path())
            .output()
            .unwrap()
    };
    // --json prints the first reply (the cell) and its history, for scripts to continue
    let o = run(&["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["metadata"], "interpreter");
    assert_eq!(v["content"], "```python\nprint(6*7)\n```");
    // without --allow-exec the cell is shown, not run (no terminal to ask for a result)
    let o = run(&[]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(err.contains("pass --allow-exec to run it"), "{err}");
    assert!(!out.contains("The answer is 42."), "{out}");
    // with it: the cell runs (in the sandbox), its result "42" goes back to the model as an
    // observation, and only a model that saw it answers
    let o = run(&["--allow-exec"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches("running the model's code").count(), 1, "{err}");
    assert!(
        out.contains("print(6*7)") && out.trim_end().ends_with("The answer is 42."),
        "{out}"
    );
}
