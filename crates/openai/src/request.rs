//! Request bodies of `/v1/chat/completions` and `/v1/completions`.

use crate::messages::{openai_messages_as, ToolChoice};
use crate::wire::{LogprobsRequest, RequestBody};
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

/// The typed body: serde reads every field we use, and names the one of a wrong type.
pub fn typed_body(v: &Value) -> Result<RequestBody, BadRequest> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        bad(if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        })
    })
}

impl Params {
    /// The shared parameters of a request object.
    pub fn from_json(v: &Value) -> Result<Self, BadRequest> {
        Self::from_body(&typed_body(v)?)
    }

    /// The shared parameters, range-checked.
    pub fn from_body(r: &RequestBody) -> Result<Self, BadRequest> {
        let temperature = match r.temperature {
            Some(t) if !(0.0..=2.0).contains(&t) => {
                return Err(bad("temperature: must be between 0 and 2"))
            }
            t => t.map(|t| t as f32),
        };
        let top_p = match r.top_p {
            Some(p) if !(0.0..=1.0).contains(&p) => {
                return Err(bad("top_p: must be between 0 and 1"))
            }
            p => p.map(|p| p as f32),
        };
        let seed = match &r.seed {
            None => None,
            Some(n) => Some(
                n.as_u64()
                    .or_else(|| n.as_i64().map(|i| i as u64))
                    .ok_or_else(|| bad("seed: expected an integer"))?,
            ),
        };
        let mut max_tokens = None;
        for (k, x) in [
            ("max_tokens", r.max_tokens),
            ("max_completion_tokens", r.max_completion_tokens),
        ] {
            match x {
                None => {}
                Some(n) if n >= 1 => max_tokens = Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Some(_) => return Err(bad(format!("{k}: expected an integer >= 1"))),
            }
        }
        let stops = r.stop.clone().unwrap_or_default();
        if stops.len() > 16 {
            return Err(bad("stop: at most 16 sequences"));
        }
        if stops.iter().any(|s| s.len() > 1024) {
            return Err(bad("stop: a sequence is longer than 1024 bytes"));
        }
        if r.n.is_some_and(|n| n != 1) {
            return Err(bad("n: only n = 1 is supported"));
        }
        let include_usage = r
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let top = |k: &str, n: u64| -> Result<usize, BadRequest> {
            if n <= 20 {
                Ok(n as usize)
            } else {
                Err(bad(format!("{k}: expected an integer from 0 to 20")))
            }
        };
        let top_logprobs = r.top_logprobs.map(|n| top("top_logprobs", n)).transpose()?;
        let logprobs = match r.logprobs {
            None | Some(LogprobsRequest::Enabled(false)) => {
                if top_logprobs.is_some_and(|n| n > 0) {
                    return Err(bad("top_logprobs: needs \"logprobs\": true"));
                }
                None
            }
            Some(LogprobsRequest::Enabled(true)) => Some(top_logprobs.unwrap_or(0)),
            Some(LogprobsRequest::Count(n)) => Some(top("logprobs", n)?),
        };
        Ok(Params {
            stream: r.stream.unwrap_or(false),
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
        let body = typed_body(v)?;
        let params = Params::from_body(&body)?;
        let prompt = match body.prompt.as_ref() {
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
