//! OpenAI chat messages → ChatGLM3 messages, like THUDM's `openai_api_demo`.

use glm_runtime::agent::{normalize_tools, tools_system_message, ToolCall};
use glm_runtime::chat::Message;
use glm_runtime::tokenizer::ChatFormat;
use serde_json::{Map, Value};

/// How an OpenAI request's `tool_choice` is honoured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// Tools are registered; the model decides (`"auto"`, or absent).
    Auto,
    /// Tools are registered and the reply must call one (`"required"`).
    Required,
    /// Tools are not registered (`"none"`).
    None,
    /// The reply must call this function.
    Function(String),
}

impl ToolChoice {
    pub fn from_openai(v: Option<&Value>) -> Result<Self, String> {
        match v {
            None | Some(Value::Null) => Ok(ToolChoice::Auto),
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                "none" => Ok(ToolChoice::None),
                _ => Err(format!(
                    "tool_choice: unknown value {s:?} (expected \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}})"
                )),
            },
            Some(o) => o
                .pointer("/function/name")
                .and_then(Value::as_str)
                .map(|n| ToolChoice::Function(n.to_string()))
                .ok_or_else(|| "tool_choice: expected {\"type\": \"function\", \"function\": {\"name\": ...}}".into()),
        }
    }
}

/// Text of an OpenAI message content: a string, null, or a list of `{"type": "text"}` parts.
fn content_text(v: Option<&Value>, at: &str) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for (i, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => s.push_str(t),
                    _ => {
                        return Err(format!(
                            "{at}.content[{i}]: only {{\"type\": \"text\", \"text\": ...}} parts are supported"
                        ))
                    }
                }
            }
            Ok(s)
        }
        Some(_) => Err(format!(
            "{at}.content: expected a string or a list of text parts"
        )),
    }
}

/// Maps an OpenAI chat request's `messages` (and `tools`, unless `tool_choice` is `"none"`)
/// onto ChatGLM3 messages, like THUDM's `openai_api_demo`:
///
/// * `tools` → a first system message [`TOOL_SYSTEM_PROMPT`] with the function definitions;
/// * `system`/`developer`, `user`, `assistant` → the same roles (text parts joined);
/// * an assistant's `tool_calls` → one assistant message per call, metadata = the function
///   name and content = its `tool_call(...)` block (arguments parsed from their JSON string);
/// * `tool` (and the legacy `function`) → `observation`.
pub fn openai_messages(
    messages: &Value,
    tools: Option<&Value>,
    choice: &ToolChoice,
) -> Result<Vec<Message>, String> {
    openai_messages_as(ChatFormat::Chatglm3, messages, tools, choice)
}

/// [`openai_messages`] for a model's prompt format. GLM-4 (THUDM's `glm_server.py`): the
/// tools become a system message carrying them (rendered by GLM-4's template), and a call's
/// content is its arguments string as the client sent it.
pub fn openai_messages_as(
    format: ChatFormat,
    messages: &Value,
    tools: Option<&Value>,
    choice: &ToolChoice,
) -> Result<Vec<Message>, String> {
    let glm4 = format == ChatFormat::Glm4;
    let list = messages
        .as_array()
        .ok_or("messages: expected an array of {\"role\", \"content\"}")?;
    if list.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut out = Vec::with_capacity(list.len() + 1);
    if let Some(t) = tools.filter(|t| !t.is_null()) {
        let t = normalize_tools(t)?;
        if *choice != ToolChoice::None && t.as_array().is_some_and(|a| !a.is_empty()) {
            out.push(if glm4 {
                let mut m = Message::system("");
                m.tools = Some(t);
                m
            } else {
                tools_system_message(t)
            });
        }
    }
    for (i, m) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}: missing the string field \"role\""))?;
        let text = content_text(m.get("content"), &at)?;
        match role {
            "system" | "developer" => out.push(Message::system(text)),
            "user" => out.push(Message::user(text)),
            "tool" | "function" => out.push(Message::observation(text)),
            "assistant" => {
                let calls = match m.get("tool_calls") {
                    None | Some(Value::Null) => &[][..],
                    Some(Value::Array(a)) => a.as_slice(),
                    Some(_) => return Err(format!("{at}.tool_calls: expected an array")),
                };
                let legacy = m.get("function_call").filter(|f| !f.is_null());
                if calls.is_empty() && legacy.is_none() {
                    out.push(Message::assistant(text));
                    continue;
                }
                if !text.trim().is_empty() {
                    out.push(Message::assistant(text.trim().to_string()));
                }
                let functions = calls
                    .iter()
                    .map(|c| c.get("function"))
                    .chain(legacy.map(Some));
                for (k, f) in functions.enumerate() {
                    let at = format!("{at}.tool_calls[{k}]");
                    let f = f.ok_or_else(|| format!("{at}: missing \"function\""))?;
                    let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                        format!("{at}.function: missing the string field \"name\"")
                    })?;
                    let arguments = match f.get("arguments") {
                        None | Some(Value::Null) => Map::new(),
                        Some(Value::String(s)) if s.trim().is_empty() => Map::new(),
                        Some(Value::String(s)) => match serde_json::from_str(s) {
                            Ok(Value::Object(o)) => o,
                            _ => {
                                return Err(format!(
                                    "{at}.function.arguments: expected a JSON object in a string"
                                ))
                            }
                        },
                        Some(Value::Object(o)) => o.clone(),
                        Some(_) => {
                            return Err(format!(
                                "{at}.function.arguments: expected a JSON object in a string"
                            ))
                        }
                    };
                    let raw = glm4.then(|| match f.get("arguments") {
                        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                        _ => Value::Object(arguments.clone()).to_string(),
                    });
                    out.push(
                        ToolCall {
                            name: name.to_string(),
                            arguments,
                            raw,
                        }
                        .to_message(),
                    );
                }
            }
            other => {
                return Err(format!(
                    "{at}: unknown role {other:?} (expected system, user, assistant or tool)"
                ))
            }
        }
    }
    Ok(out)
}
