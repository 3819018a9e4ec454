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

use serde_json::{Map, Number, Value};

use crate::chat::{python_float_repr, Message};

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

/// Why a `tool_call(...)` did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed tool call at byte {pos}: {msg}")]
pub struct CallError {
    pub pos: usize,
    pub msg: String,
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

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
    base: usize,
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> CallError {
        let near: String = self.src[self.i.min(self.src.len())..]
            .chars()
            .take(20)
            .collect();
        CallError {
            pos: self.base + self.i,
            msg: if near.is_empty() {
                format!("{msg} (at the end)")
            } else {
                format!("{msg} (near {near:?})")
            },
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), CallError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(&format!("expected {:?}", c as char)))
        }
    }
    /// Whitespace (newlines included: everything is inside brackets) and `#` comments.
    fn ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.i += 1,
                b'\\' if self.s.get(self.i + 1) == Some(&b'\n') => self.i += 2,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }
    fn ident(&mut self) -> Option<String> {
        let rest = &self.src[self.i..];
        let mut end = 0;
        for (k, ch) in rest.char_indices() {
            let ok = if k == 0 {
                ch == '_' || ch.is_alphabetic()
            } else {
                ch == '_' || ch.is_alphanumeric()
            };
            if !ok {
                break;
            }
            end = k + ch.len_utf8();
        }
        if end == 0 {
            return None;
        }
        self.i += end;
        Some(rest[..end].to_string())
    }
    fn eat_word(&mut self, w: &str) -> bool {
        let save = self.i;
        match self.ident() {
            Some(id) if id == w => true,
            _ => {
                self.i = save;
                false
            }
        }
    }

    fn value(&mut self) -> Result<Value, CallError> {
        self.ws();
        let start = self.i;
        match self.peek() {
            None => Err(self.err("expected a value")),
            Some(b'[') => {
                self.i += 1;
                Ok(Value::Array(self.items(b']')?))
            }
            Some(b'(') => {
                self.i += 1;
                self.ws();
                if self.eat(b')') {
                    return Ok(Value::Array(vec![]));
                }
                let first = self.value()?;
                self.ws();
                if self.eat(b')') {
                    return Ok(first); // parenthesized expression, not a tuple
                }
                self.expect(b',')?;
                let mut v = vec![first];
                v.extend(self.items(b')')?);
                Ok(Value::Array(v))
            }
            Some(b'{') => {
                self.i += 1;
                self.dict()
            }
            Some(b'-') | Some(b'+') => {
                let neg = self.peek() == Some(b'-');
                self.i += 1;
                self.ws();
                match self.value()? {
                    Value::Number(n) if neg => negate(&n).ok_or_else(|| {
                        self.i = start;
                        self.err("number out of range")
                    }),
                    v @ Value::Number(_) => Ok(v),
                    _ => {
                        self.i = start;
                        Err(self.err("unary sign on a non-number"))
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            Some(b'\'') | Some(b'"') => self.strings(),
            Some(_) => {
                let save = self.i;
                let Some(id) = self.ident() else {
                    return Err(self.err("expected a literal value"));
                };
                match id.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::Null),
                    _ if matches!(self.peek(), Some(b'\'') | Some(b'"'))
                        && matches!(id.to_ascii_lowercase().as_str(), "r" | "u") =>
                    {
                        self.i = save;
                        self.strings()
                    }
                    _ => {
                        self.i = save;
                        Err(self.err(&format!(
                            "only literals are allowed, not the name or expression {id:?}"
                        )))
                    }
                }
            }
        }
    }

    /// Comma-separated values up to `close` (trailing comma allowed); `[`/`(` already eaten.
    fn items(&mut self, close: u8) -> Result<Vec<Value>, CallError> {
        let mut v = Vec::new();
        loop {
            self.ws();
            if self.eat(close) {
                return Ok(v);
            }
            v.push(self.value()?);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(close)?;
                return Ok(v);
            }
        }
    }

    fn dict(&mut self) -> Result<Value, CallError> {
        let mut m = Map::new();
        loop {
            self.ws();
            if self.eat(b'}') {
                return Ok(Value::Object(m));
            }
            let kpos = self.i;
            let key = match self.value()? {
                Value::String(s) => s,
                // json.dumps turns these keys into strings the same way.
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".into(),
                _ => {
                    self.i = kpos;
                    return Err(self.err("dict keys must be strings, numbers, booleans or None"));
                }
            };
            self.ws();
            if !self.eat(b':') {
                return Err(self.err("expected ':' (sets are not supported)"));
            }
            let v = self.value()?;
            m.insert(key, v);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b'}')?;
                return Ok(Value::Object(m));
            }
        }
    }

    fn number(&mut self) -> Result<Value, CallError> {
        let start = self.i;
        let rest = &self.s[self.i..];
        let radix = match rest {
            [b'0', b'x' | b'X', ..] => 16,
            [b'0', b'o' | b'O', ..] => 8,
            [b'0', b'b' | b'B', ..] => 2,
            _ => 10,
        };
        if radix != 10 {
            self.i += 2;
            let d0 = self.i;
            while self
                .peek()
                .is_some_and(|c| c == b'_' || (c as char).is_digit(radix))
            {
                self.i += 1;
            }
            let digits: String = self.src[d0..self.i].chars().filter(|&c| c != '_').collect();
            return u64::from_str_radix(&digits, radix)
                .map(Value::from)
                .map_err(|_| {
                    self.i = start;
                    self.err("bad or too large integer literal")
                });
        }
        let mut is_float = false;
        while let Some(c) = self.peek() {
            match c {
                b'0'..=b'9' | b'_' => self.i += 1,
                b'.' => {
                    is_float = true;
                    self.i += 1;
                }
                b'e' | b'E' => {
                    is_float = true;
                    self.i += 1;
                    if matches!(self.peek(), Some(b'+') | Some(b'-')) {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        {
            return Err(self.err("bad number literal"));
        }
        let text: String = self.src[start..self.i]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        let bad = |p: &mut Self| {
            p.i = start;
            p.err("bad number literal")
        };
        if is_float {
            let f: f64 = text.parse().map_err(|_| bad(self))?;
            if !f.is_finite() {
                return Err(bad(self));
            }
            Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| bad(self))
        } else {
            if text.len() > 1 && text.starts_with('0') && text.bytes().any(|b| b != b'0') {
                return Err(bad(self)); // Python 3 has no 0777 literals
            }
            match text.parse::<u64>() {
                Ok(u) => Ok(Value::from(u)),
                Err(_) => {
                    self.i = start;
                    Err(self.err("integer too large"))
                }
            }
        }
    }

    /// One or more adjacent string literals, concatenated as Python does.
    fn strings(&mut self) -> Result<Value, CallError> {
        let mut out = String::new();
        loop {
            self.string(&mut out)?;
            let save = self.i;
            self.ws();
            let prefixed = matches!(self.peek(), Some(b'r' | b'R' | b'u' | b'U'))
                && matches!(self.s.get(self.i + 1), Some(b'\'' | b'"'));
            if !(prefixed || matches!(self.peek(), Some(b'\'' | b'"'))) {
                self.i = save;
                return Ok(Value::String(out));
            }
        }
    }

    fn string(&mut self, out: &mut String) -> Result<(), CallError> {
        let start = self.i;
        let mut raw = false;
        if let Some(c) = self.peek() {
            if c.eq_ignore_ascii_case(&b'r') {
                raw = true;
                self.i += 1;
            } else if c.eq_ignore_ascii_case(&b'u') {
                self.i += 1;
            }
        }
        let q = self.peek().ok_or_else(|| self.err("expected a string"))?;
        let triple = self.s[self.i..].starts_with(&[q, q, q]);
        self.i += if triple { 3 } else { 1 };
        loop {
            let Some(c) = self.peek() else {
                self.i = start;
                return Err(self.err("unterminated string"));
            };
            if c == q && (!triple || self.s[self.i..].starts_with(&[q, q, q])) {
                self.i += if triple { 3 } else { 1 };
                return Ok(());
            }
            if c == b'\n' && !triple {
                self.i = start;
                return Err(self.err("unterminated string (newline in a single-quoted string)"));
            }
            if c == b'\\' {
                let Some(&e) = self.s.get(self.i + 1) else {
                    self.i = start;
                    return Err(self.err("unterminated string"));
                };
                if raw {
                    // Raw strings keep the backslash; it still protects a quote.
                    out.push('\\');
                    self.i += 1;
                    let ch = self.src[self.i..].chars().next().unwrap_or('\\');
                    out.push(ch);
                    self.i += ch.len_utf8();
                    continue;
                }
                self.i += 2;
                match e {
                    b'\n' => {}
                    b'\\' => out.push('\\'),
                    b'\'' => out.push('\''),
                    b'"' => out.push('"'),
                    b'a' => out.push('\x07'),
                    b'b' => out.push('\x08'),
                    b'f' => out.push('\x0c'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'v' => out.push('\x0b'),
                    b'0'..=b'7' => {
                        let mut v = (e - b'0') as u32;
                        for _ in 0..2 {
                            match self.peek() {
                                Some(d @ b'0'..=b'7') => {
                                    v = v * 8 + (d - b'0') as u32;
                                    self.i += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                    }
                    b'x' | b'u' | b'U' => {
                        let n = match e {
                            b'x' => 2,
                            b'u' => 4,
                            _ => 8,
                        };
                        let hex = self.src.get(self.i..self.i + n).unwrap_or("");
                        let ch = u32::from_str_radix(hex, 16)
                            .ok()
                            .filter(|_| {
                                hex.len() == n && hex.bytes().all(|b| b.is_ascii_hexdigit())
                            })
                            .and_then(char::from_u32);
                        match ch {
                            Some(ch) => {
                                out.push(ch);
                                self.i += n;
                            }
                            None => {
                                self.i -= 2;
                                return Err(self.err(&format!(
                                    "bad \\{} escape (expected {n} hex digits)",
                                    e as char
                                )));
                            }
                        }
                    }
                    b'N' => {
                        self.i -= 2;
                        return Err(self.err("\\N{...} escapes are not supported"));
                    }
                    _ => {
                        // Unknown escapes keep the backslash (Python warns, but does this).
                        self.i -= 1;
                        out.push('\\');
                    }
                }
                continue;
            }
            let ch = self.src[self.i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            self.i += ch.len_utf8();
        }
    }
}

fn negate(n: &Number) -> Option<Value> {
    if let Some(u) = n.as_u64() {
        if u <= i64::MAX as u64 {
            return Some(Value::from(-(u as i64)));
        }
        if u == i64::MAX as u64 + 1 {
            return Some(Value::from(i64::MIN));
        }
        return None;
    }
    if let Some(i) = n.as_i64() {
        return i.checked_neg().map(Value::from);
    }
    n.as_f64()
        .and_then(|f| Number::from_f64(-f))
        .map(Value::Number)
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

/// Python's `repr` of the value `json.loads` gives for `v`.
pub fn python_repr(v: &Value) -> String {
    let mut s = String::new();
    write_repr(v, &mut s);
    s
}

fn write_repr(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => {
                let r = python_float_repr(f);
                out.push_str(match r.as_str() {
                    "Infinity" => "inf",
                    "-Infinity" => "-inf",
                    "NaN" => "nan",
                    _ => &r,
                });
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => out.push_str(&python_str_repr(s)),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(x, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&python_str_repr(k));
                out.push_str(": ");
                write_repr(x, out);
            }
            out.push('}');
        }
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`; `\\`, `\n`, `\r`,
/// `\t` and other control characters escaped; printable non-ASCII kept.
pub fn python_str_repr(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if matches!(c, '\u{2028}' | '\u{2029}' | '\u{ad}') => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}
