//! Chat messages and prompt ids of each GLM family, exactly as THUDM's code builds them:
//!
//! ```text
//! ChatGLM3  [gMASK] sop    { <|role|> encode(f"{metadata}\n") encode(content) }*  <|assistant|>
//! GLM-4     [gMASK] <sop>  { <|role|> encode(f"{metadata}\n{content}") }*        <|assistant|>
//! ChatGLM2  [gMASK] sop    encode("[Round 1]\n\n问：{q}\n\n答：{a}\n\n" … "[Round n]\n\n问：{q}\n\n答：")
//! ```
//!
//! ChatGLM3's system message carrying `tools` has the content
//! `content + "\n" + json.dumps(tools, indent=4, ensure_ascii=False)`; GLM-4 renders its tools
//! into the system prompt as its chat template does ([`glm4_tools_system_text`]). GLM-4 encodes
//! each stretch of text between two special tokens as one string, as tiktoken does with the
//! template's output.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use crate::python::{python_float_repr, python_json_dumps};
use crate::tokenizer::{ChatFormat, RoleTokens, Tokenizer, TokenizerError};

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Observation,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Observation => "observation",
        }
    }

    /// The `<|role|>` token id.
    pub fn token(self, r: &RoleTokens) -> u32 {
        match self {
            Role::System => r.system,
            Role::User => r.user,
            Role::Assistant => r.assistant,
            Role::Observation => r.observation,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One chat message, in THUDM's history format (`{"role", "content", "metadata"?, "tools"?}`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    #[serde(default)]
    pub metadata: String,
    /// Present (even as JSON `null`) means "tools" is in the message: `Some(Value::Null)`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub tools: Option<Value>,
}

/// Deserializes a present field as `Some`, `null` included (Python's `"tools" in item`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            metadata: String::new(),
            tools: None,
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    pub fn observation(content: impl Into<String>) -> Self {
        Self::new(Role::Observation, content)
    }

    /// The text that is tokenized: the content, plus the tools JSON for a system message.
    pub fn full_content(&self) -> String {
        match (&self.role, &self.tools) {
            (Role::System, Some(tools)) => {
                format!("{}\n{}", self.content, python_json_dumps(tools))
            }
            _ => self.content.clone(),
        }
    }
}

fn roles(tok: &Tokenizer) -> Result<RoleTokens, TokenizerError> {
    tok.special().roles.ok_or_else(|| {
        TokenizerError::NoChat("this vocabulary has no role tokens (<|user|>…)".into())
    })
}

/// THUDM's `build_single_message(role, metadata, content)` of ChatGLM3:
/// `[<|role|>] + encode(f"{metadata}\n") + encode(content)`.
pub fn build_message_ids(tok: &Tokenizer, m: &Message) -> Result<Vec<u32>, TokenizerError> {
    let mut ids = vec![m.role.token(&roles(tok)?)];
    ids.extend(tok.encode(&format!("{}\n", m.metadata))?);
    ids.extend(tok.encode(&m.full_content())?);
    Ok(ids)
}

/// The prompt ids of a chat in the model's format ([`Tokenizer::chat_format`]); a completion
/// model (base or code model) has none: an error that says to complete text instead.
pub fn build_chat_ids(tok: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>, TokenizerError> {
    match tok.chat_format() {
        ChatFormat::Completion => Err(TokenizerError::NoChat(
            "this is a base or code model without a chat format: complete plain text instead \
             (run --raw, /v1/completions), or ask for its family's chat format explicitly"
                .into(),
        )),
        f => build_chat_ids_as(tok, f, messages),
    }
}

/// The prompt ids of a chat in format `f`.
pub fn build_chat_ids_as(
    tok: &Tokenizer,
    f: ChatFormat,
    messages: &[Message],
) -> Result<Vec<u32>, TokenizerError> {
    let s = tok.special();
    match f {
        // THUDM's `build_chat_input`: `[gMASK] sop`, every message, then `<|assistant|>`.
        // (THUDM passes the last message as `query` with empty metadata and no tools; here
        // every message is handled alike, which is the same for such a last message.)
        ChatFormat::Chatglm3 => {
            let mut ids = vec![s.gmask, s.sop];
            for m in messages {
                ids.extend(build_message_ids(tok, m)?);
            }
            ids.push(roles(tok)?.assistant);
            Ok(ids)
        }
        // GLM-4's chat template (tokenizer_config.json, rendered as transformers does): a
        // message with `tools` first adds a system section listing them; a message with empty
        // content adds nothing.
        ChatFormat::Glm4 => {
            let r = roles(tok)?;
            let mut ids = vec![s.gmask, s.sop];
            for m in messages {
                if let Some(tools) = &m.tools {
                    ids.push(r.system);
                    ids.extend(tok.encode(&glm4_tools_system_text(tools))?);
                }
                if !m.content.is_empty() {
                    ids.push(m.role.token(&r));
                    ids.extend(tok.encode(&format!("{}\n{}", m.metadata, m.content))?);
                }
            }
            ids.push(r.assistant);
            Ok(ids)
        }
        ChatFormat::Chatglm2 => {
            let mut ids = vec![s.gmask, s.sop];
            ids.extend(tok.encode(&chatglm2_prompt(messages)?)?);
            Ok(ids)
        }
        ChatFormat::Completion => Err(TokenizerError::NoChat("no chat format".into())),
    }
}

/// ChatGLM2's `build_prompt`: user/assistant rounds, the last user message open.
fn chatglm2_prompt(messages: &[Message]) -> Result<String, TokenizerError> {
    let bad = |what: &str| TokenizerError::NoChat(format!("ChatGLM2's chat format: {what}"));
    let mut prompt = String::new();
    let mut round = 1;
    let mut i = 0;
    while i < messages.len() {
        let q = &messages[i];
        if q.role != Role::User {
            return Err(bad(&format!(
                "message {i} is a {} message; ChatGLM2 has only user/assistant rounds (no system \
                 messages, tools or observations)",
                q.role
            )));
        }
        match messages.get(i + 1) {
            Some(a) if a.role == Role::Assistant => {
                prompt.push_str(&format!(
                    "[Round {round}]\n\n问：{}\n\n答：{}\n\n",
                    q.content, a.content
                ));
                i += 2;
                round += 1;
            }
            Some(a) => {
                return Err(bad(&format!(
                    "message {} is a {} message where an assistant reply belongs",
                    i + 1,
                    a.role
                )))
            }
            None => {
                prompt.push_str(&format!("[Round {round}]\n\n问：{}\n\n答：", q.content));
                return Ok(prompt);
            }
        }
    }
    Err(bad("the conversation must end with a user message"))
}

/// GLM-4's system section for tools, as its chat template renders it: the tool prompt, then
/// for each function `## name` and its JSON (`tojson(indent=4)`: indent 4, non-ASCII kept, key
/// order kept). Functions may be OpenAI's `{"type": "function", "function": {...}}` or bare.
pub fn glm4_tools_system_text(tools: &Value) -> String {
    let mut text = format!("\n{GLM4_TOOLS_PROMPT}");
    for t in tools.as_array().map(Vec::as_slice).unwrap_or_default() {
        let f = match t.get("type").and_then(Value::as_str) {
            Some("function") => t.get("function").unwrap_or(t),
            Some(_) => continue,
            None => t,
        };
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        text.push_str(&format!(
            "\n## {name}\n\n{}\n在调用上述函数时，请使用 Json 格式表示调用的参数。",
            python_json_dumps(f)
        ));
    }
    text
}

/// The start of GLM-4's tool system prompt (its chat template's text).
pub const GLM4_TOOLS_PROMPT: &str = "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具";

/// The prompt ids of plain text to continue: `[gMASK] sop` then the text (THUDM's tokenizers
/// put the prefix before any text).
pub fn completion_ids(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, TokenizerError> {
    let s = tok.special();
    let mut ids = vec![s.gmask, s.sop];
    ids.extend(tok.encode(text)?);
    Ok(ids)
}

/// Ids that end a reply: the end of text, and `<|user|>` / `<|observation|>` where the
/// vocabulary has them (ChatGLM3, GLM-4: 151329, 151336, 151338).
pub fn stop_ids(tok: &Tokenizer) -> Vec<u32> {
    let s = tok.special();
    match s.roles {
        Some(r) => vec![s.eos, r.user, r.observation],
        None => vec![s.eos],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_like_python() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789.125, "123456789.125"),
            (1e15, "1000000000000000.0"),
            (1234567890123456.0, "1234567890123456.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (2.5e-3, "0.0025"),
        ] {
            assert_eq!(python_float_repr(f), want, "{f:e}");
        }
    }

    #[test]
    fn json_dumps_like_python() {
        // Expected text from Python: json.dumps(v, indent=4, ensure_ascii=False)
        let v: Value = serde_json::from_str(
            r#"{"name": "天气", "z": [], "a": {}, "n": [1, 2.0, -3.5e-9, true, null], "s": "q\"\\\n\t\u0001\u007f\u2028é"}"#,
        )
        .unwrap();
        let want = "{\n    \"name\": \"天气\",\n    \"z\": [],\n    \"a\": {},\n    \"n\": [\n        1,\n        2.0,\n        -3.5e-09,\n        true,\n        null\n    ],\n    \"s\": \"q\\\"\\\\\\n\\t\\u0001\u{7f}\u{2028}é\"\n}";
        assert_eq!(python_json_dumps(&v), want);
        assert_eq!(python_json_dumps(&Value::Null), "null");
    }

    #[test]
    fn message_serde() {
        let m: Message =
            serde_json::from_str(r#"{"role": "observation", "content": "x"}"#).unwrap();
        assert_eq!(m, Message::observation("x"));
        let m: Message =
            serde_json::from_str(r#"{"role": "system", "content": "x", "tools": null}"#).unwrap();
        assert_eq!(m.tools, Some(Value::Null));
        assert_eq!(m.full_content(), "x\nnull");
        let m: Message =
            serde_json::from_str(r#"{"role": "user", "content": "x", "tools": [1]}"#).unwrap();
        assert_eq!(m.full_content(), "x");
        assert_eq!(
            serde_json::to_string(&Message::assistant("hi")).unwrap(),
            r#"{"role":"assistant","content":"hi","metadata":""}"#
        );
        assert!(serde_json::from_str::<Message>(r#"{"role": "bot", "content": "x"}"#).is_err());
    }
}
