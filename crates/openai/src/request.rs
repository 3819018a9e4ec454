//! Request bodies of `/v1/chat/completions` and `/v1/completions`.

use crate::messages::{openai_messages_as, ToolChoice};
use glm_runtime::chat::Message;
use glm_runtime::tokenizer::ChatFormat;
use serde_json::Value;

/// A request the server answers with 400 and this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest(msg.into())
}

/// Parameters shared by both endpoints; `None` means "the server's default".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the token counts.
    pub include_usage: bool,
    /// `max_tokens` or `max_completion_tokens`.
    pub max_tokens: Option<usize>,
    /// In [0, 2].
    pub temperature: Option<f32>,
    /// In [0, 1].
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    /// At most 16 stop sequences.
    pub stops: Vec<String>,
    /// Log-probabilities asked for, with this many alternatives per token (chat: `logprobs:
    /// true` and `top_logprobs` 0..=20; completions: `logprobs` 0..=20).
    pub logprobs: Option<usize>,
}

/// A `/v1/chat/completions` body mapped onto ChatGLM3.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub params: Params,
    pub messages: Vec<Message>,
    /// Tools are registered (given, non-empty, and `tool_choice` is not `"none"`): the reply
    /// is parsed for tool calls.
    pub tools: bool,
    /// A function the reply is forced to call (`tool_choice` naming one): the start of the reply.
    pub prefix: Option<String>,
}

/// A `/v1/completions` body.
#[derive(Clone, Debug)]
pub struct CompletionRequest {
    pub params: Params,
    /// The text to continue (one prompt per request).
    pub prompt: String,
}

/// The body as a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Value, BadRequest> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON body: {e}")))?;
    if !v.is_object() {
        return Err(bad("the body must be a JSON object"));
    }
    Ok(v)
}

impl Params {
    /// The shared parameters of a request object.
    pub fn from_json(v: &Value) -> Result<Self, BadRequest> {
        let num = |k: &str| -> Result<Option<f64>, BadRequest> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("{k}: expected a number"))),
            }
        };
        let temperature = match num("temperature")? {
            Some(t) if !(0.0..=2.0).contains(&t) => {
                return Err(bad("temperature: must be between 0 and 2"))
            }
            t => t.map(|t| t as f32),
        };
        let top_p = match num("top_p")? {
            Some(p) if !(0.0..=1.0).contains(&p) => {
                return Err(bad("top_p: must be between 0 and 1"))
            }
            p => p.map(|p| p as f32),
        };
        let seed = match v.get("seed") {
            None | Some(Value::Null) => None,
            Some(x) => Some(
                x.as_u64()
                    .or_else(|| x.as_i64().map(|i| i as u64))
                    .ok_or_else(|| bad("seed: expected an integer"))?,
            ),
        };
        let mut max_tokens = None;
        for k in ["max_tokens", "max_completion_tokens"] {
            match v.get(k) {
                None | Some(Value::Null) => {}
                Some(x) => match x.as_u64() {
                    Some(n) if n >= 1 => {
                        max_tokens = Some(usize::try_from(n).unwrap_or(usize::MAX))
                    }
                    _ => return Err(bad(format!("{k}: expected an integer >= 1"))),
                },
            }
        }
        let stops = match v.get("stop") {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("stop: expected a string or a list of strings"))?,
            Some(_) => return Err(bad("stop: expected a string or a list of strings")),
        };
        if stops.len() > 16 {
            return Err(bad("stop: at most 16 sequences"));
        }
        if let Some(n) = v.get("n").filter(|n| !n.is_null()) {
            if n.as_u64() != Some(1) {
                return Err(bad("n: only n = 1 is supported"));
            }
        }
        let stream = match v.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("stream: expected true or false")),
        };
        let include_usage = v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let top = |k: &str, x: &Value| -> Result<usize, BadRequest> {
            match x.as_u64() {
                Some(n) if n <= 20 => Ok(n as usize),
                _ => Err(bad(format!("{k}: expected an integer from 0 to 20"))),
            }
        };
        let top_logprobs = match v.get("top_logprobs") {
            None | Some(Value::Null) => None,
            Some(x) => Some(top("top_logprobs", x)?),
        };
        let logprobs = match v.get("logprobs") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {
                if top_logprobs.is_some_and(|n| n > 0) {
                    return Err(bad("top_logprobs: needs \"logprobs\": true"));
                }
                None
            }
            // chat
            Some(Value::Bool(true)) => Some(top_logprobs.unwrap_or(0)),
            // completions: the number of alternatives
            Some(x) => Some(top("logprobs", x)?),
        };
        Ok(Params {
            stream,
            include_usage,
            max_tokens,
            temperature,
            top_p,
            seed,
            stops,
            logprobs,
        })
    }
}

impl ChatRequest {
    /// A request to a ChatGLM3 model.
    pub fn parse(body: &[u8]) -> Result<Self, BadRequest> {
        Self::parse_as(body, ChatFormat::Chatglm3)
    }

    /// A request to a model of this prompt format.
    pub fn parse_as(body: &[u8], format: ChatFormat) -> Result<Self, BadRequest> {
        Self::from_json_as(&parse_object(body)?, format)
    }

    pub fn from_json(v: &Value) -> Result<Self, BadRequest> {
        Self::from_json_as(v, ChatFormat::Chatglm3)
    }

    pub fn from_json_as(v: &Value, format: ChatFormat) -> Result<Self, BadRequest> {
        let params = Params::from_json(v)?;
        let messages = v.get("messages").ok_or_else(|| bad("messages: required"))?;
        let choice = ToolChoice::from_openai(v.get("tool_choice")).map_err(bad)?;
        let tools_given = v
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let messages =
            openai_messages_as(format, messages, v.get("tools"), &choice).map_err(bad)?;
        let tools = tools_given && choice != ToolChoice::None;
        let prefix = match choice {
            ToolChoice::Function(name) if tools => Some(name),
            ToolChoice::Function(_) => {
                return Err(bad("tool_choice names a function but no tools are given"))
            }
            _ => None,
        };
        Ok(ChatRequest {
            params,
            messages,
            tools,
            prefix,
        })
    }
}

impl CompletionRequest {
    pub fn parse(body: &[u8]) -> Result<Self, BadRequest> {
        Self::from_json(&parse_object(body)?)
    }

    pub fn from_json(v: &Value) -> Result<Self, BadRequest> {
        let params = Params::from_json(v)?;
        let prompt = match v.get("prompt") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            Some(_) => return Err(bad("prompt: expected a string (one prompt per request)")),
            None => return Err(bad("prompt: required")),
        };
        Ok(CompletionRequest { params, prompt })
    }
}
