//! Request bodies of `/v1/chat/completions` and `/v1/completions`.

use crate::fields::{check_fields, Endpoint};
use crate::messages::{openai_messages_as, ToolChoice};
use crate::wire::{LogprobsRequest, RequestBody};
use glm_runtime::agent::normalize_tools;
use glm_runtime::chat::Message;
use glm_runtime::constraint::{Grammar, OutputSpec, ToolSpec};
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
    /// In [-2, 2].
    pub frequency_penalty: Option<f32>,
    /// In [-2, 2].
    pub presence_penalty: Option<f32>,
    /// (token id, bias in [-100, 100]).
    pub logit_bias: Vec<(u32, f32)>,
    /// In [0, 1].
    pub min_p: Option<f32>,
    /// 0 = off.
    pub top_k: Option<usize>,
    /// > 0.
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<usize>,
    /// What the output must match (`response_format`, `grammar` or `json_schema`).
    pub structured: Option<Structured>,
    /// Choices to generate (1..=16; more than one only without streaming).
    pub n: usize,
}

/// A grammar for the output and the field that asked for it (errors name it).
#[derive(Clone, Debug, PartialEq)]
pub struct Structured {
    pub field: &'static str,
    pub grammar: Grammar,
}

/// The output grammar of a request: at most one of `response_format` (OpenAI's, and
/// llama-server's `json_object` with a `schema`), `grammar` (GBNF) and `json_schema`.
fn structured(r: &RequestBody) -> Result<Option<Structured>, BadRequest> {
    let mut found = Vec::new();
    if let Some(rf) = r.response_format.as_ref().filter(|v| !v.is_null()) {
        let kind = rf
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("response_format: expected {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}"))?;
        match kind {
            "text" => {}
            "json_object" => found.push(match rf.get("schema").filter(|s| !s.is_null()) {
                Some(schema) => Structured {
                    field: "response_format.schema",
                    grammar: Grammar::JsonSchema(schema.clone()),
                },
                None => Structured {
                    field: "response_format",
                    grammar: Grammar::JsonObject,
                },
            }),
            "json_schema" => {
                let js = rf
                    .get("json_schema")
                    .filter(|j| j.is_object())
                    .ok_or_else(|| bad("response_format.json_schema: expected {\"name\", \"schema\", \"strict\"}"))?;
                if js.get("strict").is_some_and(|s| !s.is_boolean() && !s.is_null()) {
                    return Err(bad("response_format.json_schema.strict: expected a boolean"));
                }
                let schema = js.get("schema").cloned().unwrap_or(Value::Bool(true));
                found.push(Structured {
                    field: "response_format.json_schema.schema",
                    grammar: Grammar::JsonSchema(schema),
                });
            }
            other => {
                return Err(bad(format!(
                    "response_format.type: {other:?} is not one of \"text\", \"json_object\", \"json_schema\""
                )))
            }
        }
    }
    if let Some(g) = r.grammar.as_ref().filter(|g| !g.trim().is_empty()) {
        found.push(Structured {
            field: "grammar",
            grammar: Grammar::Gbnf(g.clone()),
        });
    }
    if let Some(schema) = r.json_schema.as_ref().filter(|v| !v.is_null()) {
        found.push(Structured {
            field: "json_schema",
            grammar: Grammar::JsonSchema(schema.clone()),
        });
    }
    if found.len() > 1 {
        return Err(bad(format!(
            "{} and {}: give one output format, not both",
            found[0].field, found[1].field
        )));
    }
    Ok(found.pop())
}

/// An optional number within `range`, as f32.
fn ranged(
    name: &str,
    v: Option<f64>,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Option<f32>, BadRequest> {
    match v {
        Some(x) if !range.contains(&x) => Err(bad(format!(
            "{name}: must be between {} and {}",
            range.start(),
            range.end()
        ))),
        x => Ok(x.map(|x| x as f32)),
    }
}

/// `logit_bias`: token ids (as strings) to biases in [-100, 100].
fn logit_bias(m: Option<&serde_json::Map<String, Value>>) -> Result<Vec<(u32, f32)>, BadRequest> {
    let mut out = Vec::new();
    for (k, v) in m.into_iter().flatten() {
        let id: u32 = k
            .trim()
            .parse()
            .map_err(|_| bad(format!("logit_bias: the key {k:?} is not a token id")))?;
        let b = v
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| {
                bad(format!(
                    "logit_bias.{k}: expected a number from -100 to 100"
                ))
            })?;
        out.push((id, b as f32));
    }
    Ok(out)
}

/// A `/v1/chat/completions` body mapped onto ChatGLM3.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub params: Params,
    pub messages: Vec<Message>,
    /// Tools are registered (given, non-empty, and `tool_choice` is not `"none"`): the reply
    /// is parsed for tool calls.
    pub tools: bool,
    /// What the reply may be: the content's grammar (`response_format`, `grammar`,
    /// `json_schema`), and the tools it must call (`tool_choice` `"required"` or naming one).
    pub output: OutputSpec,
    /// `parallel_tool_calls` (default true): false keeps the first call of a reply only.
    pub parallel_tool_calls: bool,
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
        let n = match r.n {
            None => 1,
            Some(n) if (1..=16).contains(&n) => n as usize,
            Some(_) => return Err(bad("n: expected an integer from 1 to 16")),
        };
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
        let top_k = match r.top_k {
            Some(k) if k < 0 => return Err(bad("top_k: expected an integer >= 0")),
            k => k.map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
        };
        let repeat_penalty = match r.repeat_penalty {
            Some(p) if !(p > 0.0 && p.is_finite()) => {
                return Err(bad("repeat_penalty: must be > 0"))
            }
            p => p.map(|p| p as f32),
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
            frequency_penalty: ranged("frequency_penalty", r.frequency_penalty, -2.0..=2.0)?,
            presence_penalty: ranged("presence_penalty", r.presence_penalty, -2.0..=2.0)?,
            logit_bias: logit_bias(r.logit_bias.as_ref())?,
            min_p: ranged("min_p", r.min_p, 0.0..=1.0)?,
            top_k,
            repeat_penalty,
            repeat_last_n: r
                .repeat_last_n
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            structured: structured(r)?,
            n,
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
        check_fields(v, Endpoint::Chat)?;
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
        let specs = match v.get("tools").filter(|t| tools && !t.is_null()) {
            Some(t) => ToolSpec::from_tools(&normalize_tools(t).map_err(bad)?),
            None => Vec::new(),
        };
        let names = || {
            specs
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (forced, call_required) = match &choice {
            ToolChoice::Function(_) | ToolChoice::Required if !tools => {
                return Err(bad(
                    "tool_choice: asks for a tool call but no tools are given",
                ))
            }
            ToolChoice::Function(name) => {
                let tool = specs.iter().find(|t| &t.name == name).ok_or_else(|| {
                    bad(format!(
                        "tool_choice: no function named {name:?} in tools (there are: {})",
                        names()
                    ))
                })?;
                (vec![tool.clone()], true)
            }
            ToolChoice::Required => (specs, true),
            _ => (specs, false),
        };
        let output = OutputSpec {
            content: params.structured.as_ref().map(|s| s.grammar.clone()),
            tools: forced,
            call_required,
        };
        Ok(ChatRequest {
            params,
            messages,
            tools,
            output,
            parallel_tool_calls: v
                .get("parallel_tool_calls")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        })
    }
}

impl CompletionRequest {
    pub fn parse(body: &[u8]) -> Result<Self, BadRequest> {
        Self::from_json(&parse_object(body)?)
    }

    pub fn from_json(v: &Value) -> Result<Self, BadRequest> {
        check_fields(v, Endpoint::Completions)?;
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
