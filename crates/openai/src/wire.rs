//! The OpenAI API as `glmtool serve` speaks it: the request fields it reads and the objects it
//! writes, as serde types. A field of the wrong type is a 400 that names it (`temperature:
//! invalid type: string "hot", expected f64`); fields not read here are checked by `fields`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------- requests

/// The body of `/v1/chat/completions` and `/v1/completions` (each reads its own fields).
#[derive(Deserialize, Debug, Default)]
pub struct RequestBody {
    /// Ignored: the server has one model.
    pub model: Option<Value>,
    /// Chat: the conversation (mapped onto the model's prompt format by `messages`).
    pub messages: Option<Value>,
    /// Chat: function definitions, OpenAI's `{"type": "function", "function": {...}}`.
    pub tools: Option<Value>,
    /// Chat: `"none"`, `"auto"`, `"required"`, or a named function.
    pub tool_choice: Option<Value>,
    /// Completions: the text to continue (one string, or a list of exactly one).
    pub prompt: Option<Value>,
    /// 0..=2; 0 is greedy.
    pub temperature: Option<f64>,
    /// 0..=1.
    pub top_p: Option<f64>,
    /// Any integer (negative ones wrap); absent: random, or `--seed`.
    pub seed: Option<serde_json::Number>,
    /// ≥ 1; absent: until the context is full or a stop.
    pub max_tokens: Option<u64>,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<u64>,
    /// A string or up to 16 strings that end the reply (not included).
    #[serde(default, deserialize_with = "stop_sequences")]
    pub stop: Option<Vec<String>>,
    /// Only 1.
    pub n: Option<u64>,
    /// Server-sent events, one chunk per piece of text, then `data: [DONE]`.
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Chat: `true`; completions: the number of alternatives (0..=20).
    #[serde(default, deserialize_with = "logprobs_field")]
    pub logprobs: Option<LogprobsRequest>,
    /// Chat: alternatives per token, 0..=20 (needs `logprobs: true`).
    pub top_logprobs: Option<u64>,
    /// -2..=2.
    pub frequency_penalty: Option<f64>,
    /// -2..=2.
    pub presence_penalty: Option<f64>,
    /// Token id (as a string) → bias in -100..=100.
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    /// 0..=1 (llama-server's).
    pub min_p: Option<f64>,
    /// ≥ 0, 0 = off (llama-server's).
    pub top_k: Option<i64>,
    /// > 0, 1 = off (llama-server's).
    pub repeat_penalty: Option<f64>,
    /// ≥ 0 (llama-server's).
    pub repeat_last_n: Option<u64>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`.
    pub response_format: Option<Value>,
    /// llama-server's: a GBNF grammar.
    pub grammar: Option<String>,
    /// llama-server's: a JSON Schema.
    pub json_schema: Option<Value>,
    /// Chat: false keeps at most one tool call per reply.
    pub parallel_tool_calls: Option<bool>,
}

#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    /// A last chunk with `usage` (and llama-server's `timings`).
    pub include_usage: Option<bool>,
}

/// `logprobs` is a boolean in chat requests and a count in completions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogprobsRequest {
    Enabled(bool),
    Count(u64),
}

fn stop_sequences<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let bad = || serde::de::Error::custom("expected a string or a list of strings");
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s])),
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

fn logprobs_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LogprobsRequest>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(LogprobsRequest::Enabled(b))),
        Some(v) => v
            .as_u64()
            .map(|n| Some(LogprobsRequest::Count(n)))
            .ok_or_else(|| {
                serde::de::Error::custom("expected true/false (chat) or a count (completions)")
            }),
    }
}

// ---------------------------------------------------------------- responses

/// `/v1/chat/completions` without `stream`.
#[derive(Serialize, Debug)]
pub struct ChatCompletion {
    pub id: String,
    /// `"chat.completion"`
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    /// llama-server's extra: what the prompt and the generation took.
    pub timings: Timings,
    /// llama-server's extra: the context was shifted (here: the oldest turns dropped to fit;
    /// `serve --context-shift`). Absent when it was not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Serialize, Debug)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ResponseMessage,
    /// `"stop"`, `"length"` or `"tool_calls"`.
    pub finish_reason: &'static str,
    pub logprobs: Option<ChoiceLogprobs>,
}

#[derive(Serialize, Debug)]
pub struct ResponseMessage {
    /// `"assistant"`
    pub role: &'static str,
    /// `null` when the reply is only tool calls.
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
}

/// A tool call; in a stream chunk the first delta of a call has `index`, `id`, `type` and the
/// name, later ones only `index` and more `arguments` text.
#[derive(Serialize, Debug, Clone)]
pub struct ToolCallOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `"function"`
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionOut,
}

#[derive(Serialize, Debug, Clone)]
pub struct FunctionOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// JSON text of the arguments (or the next piece of it).
    pub arguments: String,
}

/// One event of a streamed chat completion.
#[derive(Serialize, Debug)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// `"chat.completion.chunk"`
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    /// Empty in the last chunk, which carries `usage` (with `stream_options.include_usage`).
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

#[derive(Serialize, Debug)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<&'static str>,
    pub logprobs: Option<ChoiceLogprobs>,
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallOut>>,
}

/// Chat `logprobs`: one entry per generated token.
#[derive(Serialize, Debug, Clone)]
pub struct ChoiceLogprobs {
    pub content: Vec<TokenLogprob>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text (a piece of a character shows as U+FFFD; `bytes` has it exactly).
    pub token: String,
    /// Natural log of the model's probability (before temperature and top-p).
    pub logprob: f32,
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position, best first.
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// `/v1/completions` without `stream`; each streamed event has the same shape with a piece
/// of `text`.
#[derive(Serialize, Debug)]
pub struct Completion {
    pub id: String,
    /// `"text_completion"`
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

#[derive(Serialize, Debug)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub finish_reason: Option<&'static str>,
    pub logprobs: Option<LegacyLogprobs>,
}

/// The completions API's `logprobs`: parallel lists.
#[derive(Serialize, Debug, Default)]
pub struct LegacyLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    /// token → logprob of the alternatives at each position.
    pub top_logprobs: Vec<serde_json::Map<String, Value>>,
    /// Byte offset of each token in the text.
    pub text_offset: Vec<usize>,
}

impl LegacyLogprobs {
    /// From chat-style entries, the first token starting at byte `offset` of the text.
    pub fn from_entries(entries: &[TokenLogprob], mut offset: usize) -> Self {
        let mut out = LegacyLogprobs::default();
        for e in entries {
            out.tokens.push(e.token.clone());
            out.token_logprobs.push(e.logprob);
            out.top_logprobs.push(
                e.top_logprobs
                    .iter()
                    .map(|t| (t.token.clone(), Value::from(t.logprob as f64)))
                    .collect(),
            );
            out.text_offset.push(offset);
            offset += e.bytes.len();
        }
        out
    }
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose KV cache an earlier request had already computed.
    pub cached_tokens: usize,
}

/// llama-server's `timings`.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// Prompt tokens evaluated (not from the cache), and the time that took.
    pub prompt_n: usize,
    pub prompt_ms: f64,
    pub prompt_per_second: f64,
    pub predicted_n: usize,
    pub predicted_ms: f64,
    pub predicted_per_second: f64,
}

/// Every error: `{"error": {"message", "type", "param", "code"}}` with the HTTP status.
#[derive(Serialize, Debug)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Serialize, Debug)]
pub struct ErrorBody {
    pub message: String,
    /// `invalid_request_error`, `authentication_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// `/v1/models`.
#[derive(Serialize, Debug)]
pub struct ModelList {
    /// `"list"`
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Serialize, Debug)]
pub struct ModelCard {
    pub id: String,
    /// `"model"`
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}
