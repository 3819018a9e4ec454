//! ChatGLM3's agent protocol: tool (function) calls and the code interpreter.
//!
//! * Tools are registered by a system message ([`TOOL_SYSTEM_PROMPT`], `tools` = the list of
//!   `{name, description, parameters}`), see [`tools_system_message`].
//! * The model calls a tool by answering with metadata = the tool's name and the content
//!   ```` ```python\ntool_call(arg=value, ...)\n``` ````, then stopping at `<|observation|>`;
//!   the host answers with an `observation` message and the model goes on.
//! * The code interpreter ([`INTERPRETER_SYSTEM_PROMPT`]) answers with metadata `interpreter`
//!   and a ```` ```python ```` block; results come back as [`result_observation`] (or
//!   [`error_observation`]).
//!
//! Replies are split like THUDM's `process_response` ([`parse_reply`]). The arguments of
//! `tool_call(...)` are read by a small Python-literal parser ([`parse_tool_call`]): strings
//! (both quote styles, triple quotes, prefixes r/u, Python escapes, implicit concatenation),
//! ints, floats, `True`/`False`/`None`, lists, tuples and dicts. Nothing is ever evaluated; any
//! other syntax is a [`CallError`].
//!
//! [`openai_messages`] maps OpenAI chat messages (with `tools`, assistant `tool_calls` and
//! `tool` results) onto ChatGLM3 messages, which is how `glmtool serve` builds its prompts.

use serde_json::{Map, Value};

use crate::chat::Message;
use crate::python::Parser;
pub use crate::python::{python_repr, python_str_repr, CallError};
use crate::tokenizer::ChatFormat;

/// THUDM's system prompt for tool use; the tools follow as JSON.
pub const TOOL_SYSTEM_PROMPT: &str =
    "Answer the following questions as best as you can. You have access to the following tools:";

/// THUDM's code-interpreter system prompt (composite_demo).
pub const INTERPRETER_SYSTEM_PROMPT: &str = "你是一位智能AI助手，你叫ChatGLM，你连接着一台电脑，但请注意不能联网。在使用Python解决任务时，你可以运行代码并得到结果，如果运行结果有错误，你需要尽可能对代码进行改进。你可以处理用户上传到电脑上的文件，文件默认存储路径是/mnt/data/。";

/// Metadata of a code-interpreter reply.
pub const INTERPRETER: &str = "interpreter";

/// The system message that registers `tools` (a JSON list of `{name, description, parameters}`).
pub fn tools_system_message(tools: Value) -> Message {
    let mut m = Message::system(TOOL_SYSTEM_PROMPT);
    m.tools = Some(tools);
    m
}

/// The code-interpreter system message.
pub fn interpreter_system_message() -> Message {
    Message::system(INTERPRETER_SYSTEM_PROMPT)
}

/// Normalizes a tool list: accepts ChatGLM3's `[{name, description, parameters}]` and OpenAI's
/// `[{"type": "function", "function": {...}}]`; every tool needs a string `name`.
pub fn normalize_tools(tools: &Value) -> Result<Value, String> {
    let list = tools
        .as_array()
        .ok_or("tools: expected a JSON array of {\"name\", \"description\", \"parameters\"}")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let f = match t.get("function") {
            Some(f) if t.get("type").is_none_or(|ty| ty == "function") => f,
            Some(_) => {
                return Err(format!(
                    "tools[{i}]: only tools of type \"function\" are supported"
                ))
            }
            None => t,
        };
        if !f.get("name").is_some_and(Value::is_string) {
            return Err(format!("tools[{i}]: missing the string field \"name\""));
        }
        out.push(f.clone());
    }
    Ok(Value::Array(out))
}

/// The observation that reports a code-interpreter result.
pub fn result_observation(output: &str) -> Message {
    Message::observation(format!("```result\n{output}\n```"))
}

/// The observation that reports a code-interpreter error (traceback, timeout).
pub fn error_observation(error: &str) -> Message {
    Message::observation(format!("```error\n{error}\n```"))
}

/// A tool call: name and keyword arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Map<String, Value>,
    /// GLM-4: the arguments as the model (or the client) wrote them, kept verbatim for the
    /// history; ChatGLM3's calls are re-written as a `tool_call(...)` block instead.
    pub raw: Option<String>,
}

impl ToolCall {
    /// The assistant message that records this call in a history (metadata = name, content =
    /// GLM-4's JSON arguments, or ChatGLM3's `tool_call(...)` block, as the model writes it).
    pub fn to_message(&self) -> Message {
        let content = match &self.raw {
            Some(raw) => raw.clone(),
            None => format_tool_call(&self.arguments),
        };
        let mut m = Message::assistant(content);
        m.metadata = self.name.clone();
        m
    }
}

/// One `<|assistant|>` segment of a reply, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Segment {
    /// A plain answer (empty metadata); content trimmed as THUDM does.
    Text(String),
    /// A tool call (tools registered, metadata = the tool's name).
    ToolCall(ToolCall),
    /// A code-interpreter cell (metadata `interpreter`); `code` is the last code block.
    Code { code: String, content: String },
    /// Metadata that is neither: a tool call that does not parse (tools registered), or a named
    /// answer without tools. `error` says why it is not a call.
    Other {
        metadata: String,
        content: String,
        error: Option<String>,
    },
}

impl Segment {
    /// The ChatGLM3 history message of this segment.
    pub fn to_message(&self) -> Message {
        match self {
            Segment::Text(c) => Message::assistant(c.clone()),
            Segment::ToolCall(call) => call.to_message(),
            Segment::Code { content, .. } => {
                let mut m = Message::assistant(content.clone());
                m.metadata = INTERPRETER.into();
                m
            }
            Segment::Other {
                metadata, content, ..
            } => {
                let mut m = Message::assistant(content.clone());
                m.metadata = metadata.clone();
                m
            }
        }
    }
}

/// Splits `metadata\ncontent` like `process_response`: an empty metadata line gives a plain,
/// trimmed content; a reply without a newline is plain text.
pub fn split_segment(text: &str) -> (String, String) {
    match text.split_once('\n') {
        Some((meta, content)) if meta.trim().is_empty() => {
            (String::new(), content.trim().to_string())
        }
        Some((meta, content)) => (meta.trim().to_string(), content.to_string()),
        None => (String::new(), text.trim().to_string()),
    }
}

/// Parses a decoded reply (specials decoded as their names, as `Tokenizer::decode` does) like
/// THUDM's `process_response`: one segment per `<|assistant|>`-separated part. With `tools`,
/// a non-empty metadata other than `interpreter` is a tool call.
pub fn parse_reply(text: &str, tools: bool) -> Vec<Segment> {
    text.split("<|assistant|>")
        .filter(|part| !part.trim().is_empty())
        .map(|part| classify(part, tools))
        .collect()
}

/// A reply parsed by its model's protocol: ChatGLM3's segments ([`parse_reply`]), GLM-4's
/// ([`parse_reply_glm4`]); ChatGLM2 and completion models have no metadata line — their reply
/// is its text, trimmed (ChatGLM2's `process_response` is a `strip()`).
pub fn parse_reply_as(format: ChatFormat, text: &str, tools: bool) -> Vec<Segment> {
    match format {
        ChatFormat::Chatglm3 => parse_reply(text, tools),
        ChatFormat::Glm4 => parse_reply_glm4(text, tools),
        ChatFormat::Chatglm2 | ChatFormat::Completion => {
            let t = text.trim();
            if t.is_empty() {
                vec![]
            } else {
                vec![Segment::Text(t.to_string())]
            }
        }
    }
}

/// GLM-4's `process_response`: as [`parse_reply`], but with tools a named segment is a call
/// whose content is its JSON arguments (`get_weather\n{"city": "北京"}`); GLM-4 has no
/// code-interpreter protocol of this kind.
pub fn parse_reply_glm4(text: &str, tools: bool) -> Vec<Segment> {
    text.split("<|assistant|>")
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (metadata, content) = split_segment(part);
            if metadata.is_empty() {
                return Segment::Text(content);
            }
            if !tools {
                return Segment::Other {
                    metadata,
                    content,
                    error: None,
                };
            }
            match serde_json::from_str::<Value>(content.trim()) {
                Ok(Value::Object(arguments)) => Segment::ToolCall(ToolCall {
                    name: metadata,
                    arguments,
                    raw: Some(content),
                }),
                _ => Segment::Other {
                    metadata,
                    content,
                    error: Some("the arguments of a GLM-4 tool call are not a JSON object".into()),
                },
            }
        })
        .collect()
}

fn classify(part: &str, tools: bool) -> Segment {
    let (metadata, content) = split_segment(part);
    if metadata.is_empty() {
        return Segment::Text(content);
    }
    if metadata == INTERPRETER {
        if let Some(code) = extract_code(&content) {
            return Segment::Code { code, content };
        }
        return Segment::Other {
            metadata,
            content,
            error: Some("an interpreter reply without a code block".into()),
        };
    }
    if !tools {
        return Segment::Other {
            metadata,
            content,
            error: None,
        };
    }
    match parse_tool_call(&content) {
        Ok(arguments) => Segment::ToolCall(ToolCall {
            name: metadata,
            arguments,
            raw: None,
        }),
        Err(e) => Segment::Other {
            metadata,
            content,
            error: Some(e.to_string()),
        },
    }
}

/// The body of the last fenced code block (THUDM's `extract_code`), if any.
pub fn extract_code(text: &str) -> Option<String> {
    let mut rest = text;
    let mut last = None;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let Some(nl) = after.find('\n') else { break };
        let body = &after[nl + 1..];
        let Some(close) = body.find("```") else { break };
        last = Some(body[..close].to_string());
        rest = &body[close + 3..];
    }
    last
}

/// Reads the keyword arguments of a tool call's content: an optional code fence around
/// `tool_call(name=literal, ...)`. Positional arguments, repeated names, expressions and
/// anything after the closing parenthesis are errors.
pub fn parse_tool_call(content: &str) -> Result<Map<String, Value>, CallError> {
    let code = strip_fence(content);
    let base = code.as_ptr() as usize - content.as_ptr() as usize;
    let mut p = Parser {
        s: code.as_bytes(),
        src: code,
        i: 0,
        base,
        depth: 0,
    };
    p.ws();
    if !p.eat_word("tool_call") {
        return Err(p.err("expected tool_call(...)"));
    }
    p.ws();
    p.expect(b'(')?;
    let mut args = Map::new();
    loop {
        p.ws();
        if p.eat(b')') {
            break;
        }
        let start = p.i;
        let name = p.ident().ok_or_else(|| {
            p.err("expected a keyword argument name=value (positional arguments are not allowed)")
        })?;
        p.ws();
        if !p.eat(b'=') || p.peek() == Some(b'=') {
            p.i = start;
            return Err(
                p.err("positional arguments are not allowed (tool_call takes name=value only)")
            );
        }
        let value = p.value()?;
        if args.insert(name.clone(), value).is_some() {
            p.i = start;
            return Err(p.err(&format!("keyword argument {name:?} repeated")));
        }
        p.ws();
        if p.eat(b',') {
            continue;
        }
        p.expect(b')')?;
        break;
    }
    p.ws();
    if p.i < p.s.len() {
        return Err(p.err("unexpected text after tool_call(...)"));
    }
    Ok(args)
}

/// The code inside a ```` ``` ```` fence (any language tag), or the trimmed text.
fn strip_fence(content: &str) -> &str {
    let t = content.trim();
    if let Some(rest) = t.strip_prefix("```") {
        if let Some(nl) = rest.find('\n') {
            let body = &rest[nl + 1..];
            if let Some(body) = body.trim_end().strip_suffix("```") {
                return body;
            }
        }
    }
    t
}

/// The content of an assistant tool-call message: ```` ```python\ntool_call(k=v, ...)\n``` ````
/// with the values written as Python literals ([`python_repr`]).
pub fn format_tool_call(args: &Map<String, Value>) -> String {
    let inner: Vec<String> = args
        .iter()
        .map(|(k, v)| format!("{k}={}", python_repr(v)))
        .collect();
    format!("```python\ntool_call({})\n```", inner.join(", "))
}
