//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz), here so that a normal `cargo test`
//! replays the committed corpora through exactly the same code (`tests/fuzz_corpora.rs`).
//! Each takes arbitrary bytes and must return without panicking, hanging or allocating wildly,
//! whatever they are.

use crate::model::{LoadOptions, Model};
use crate::plan::PlanShape;
use crate::CacheType;
use std::io::Write;

/// Everything `run` does with a file before computing: parse the GGUF, read and check the
/// hyperparameters, the tokenizer and every tensor, plan and place the weights (without
/// repacking). `dir` is a scratch directory for the file.
pub fn gguf_load(data: &[u8], dir: &std::path::Path) {
    let path = dir.join("fuzz.gguf");
    let Ok(mut f) = std::fs::File::create(&path) else {
        return;
    };
    if f.write_all(data).is_err() {
        return;
    }
    drop(f);
    let shape = PlanShape {
        n_ctx: 64,
        n_batch: 8,
        cache_type: CacheType::F16,
        logits_rows: 1,
        ..Default::default()
    };
    let opts = LoadOptions {
        cpu_kernels: None,
        ..LoadOptions::cpu(shape)
    };
    if let Ok(gguf) = gguf::GgufFile::open(&path) {
        // what `info` shows
        let _ = gguf.metadata.len();
        let _ = crate::chatglm::Hparams::from_gguf(&gguf);
    }
    let _ = Model::load_with(&path, &opts);
}

/// The model's reply as ChatGLM3 tool/interpreter protocol text (and GLM-4's JSON calls): the
/// reply splitters, the `tool_call(...)` argument parser and the code extractor.
pub fn reply_parsers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::agent::split_segment(&text);
    for tools in [false, true] {
        let _ = crate::agent::parse_reply(&text, tools);
        let _ = crate::agent::parse_reply_glm4(&text, tools);
    }
    let _ = crate::agent::parse_tool_call(&text);
    let _ = crate::agent::extract_code(&text);
}
