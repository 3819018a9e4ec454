//! Entry point of the `openai_request` fuzz target (`fuzz/`, cargo-fuzz), here so that a normal
//! `cargo test` replays the committed corpus through the same code (`tests/fuzz_corpus.rs`).

use crate::{ChatRequest, CompletionRequest};
use glm_runtime::chat::build_chat_ids;
use glm_runtime::tokenizer::ChatFormat;
use glm_runtime::Tokenizer;

/// A request body as the server maps it to a prompt: JSON → parameters and ChatGLM3 messages →
/// prompt ids (both endpoints). Must not panic, hang or allocate wildly on any bytes.
pub fn openai_request(data: &[u8], tok: &Tokenizer) {
    if let Ok(req) = ChatRequest::parse(data) {
        let _ = build_chat_ids(tok, &req.messages);
    }
    if let Ok(req) = ChatRequest::parse_as(data, ChatFormat::Glm4) {
        let _ = glm_runtime::chat::glm4_tools_system_text(&serde_json::Value::Array(
            req.messages
                .iter()
                .filter_map(|m| m.tools.clone())
                .collect(),
        ));
    }
    if let Ok(req) = CompletionRequest::parse(data) {
        let _ = tok.encode(&req.prompt);
    }
}
