//! ChatGLM3 chat messages and prompt ids, exactly as THUDM's `build_chat_input`:
//!
//! ```text
//! [gMASK] sop  { <|role|> encode(f"{metadata}\n") encode(content) }*  <|assistant|>
//! ```
//!
//! where a system message carrying `tools` has the content
//! `content + "\n" + json.dumps(tools, indent=4, ensure_ascii=False)`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::tokenizer::{ChatSpecials, Tokenizer, TokenizerError};

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
    pub fn token(self, s: &ChatSpecials) -> u32 {
        match self {
            Role::System => s.system,
            Role::User => s.user,
            Role::Assistant => s.assistant,
            Role::Observation => s.observation,
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

/// THUDM's `build_single_message(role, metadata, content)`:
/// `[<|role|>] + encode(f"{metadata}\n") + encode(content)`.
pub fn build_message_ids(tok: &Tokenizer, m: &Message) -> Result<Vec<u32>, TokenizerError> {
    let mut ids = vec![m.role.token(tok.special())];
    ids.extend(tok.encode(&format!("{}\n", m.metadata))?);
    ids.extend(tok.encode(&m.full_content())?);
    Ok(ids)
}

/// THUDM's `build_chat_input`: `[gMASK] sop`, every message, then `<|assistant|>`.
/// (THUDM passes the last message as `query` with empty metadata and no tools; here every
/// message is handled alike, which is the same for such a last message.)
pub fn build_chat_ids(tok: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>, TokenizerError> {
    let s = tok.special();
    let mut ids = vec![s.gmask, s.sop];
    for m in messages {
        ids.extend(build_message_ids(tok, m)?);
    }
    ids.push(s.assistant);
    Ok(ids)
}

/// Ids that end a ChatGLM3 reply: `<eos>`, `<|user|>`, `<|observation|>`.
pub fn stop_ids(tok: &Tokenizer) -> Vec<u32> {
    let s = tok.special();
    vec![s.eos, s.user, s.observation]
}

/// `json.dumps(v, indent=4, ensure_ascii=False)` of Python, byte for byte: separators
/// `","` (at line ends) and `": "`, non-ASCII kept, key order kept, floats as Python's `repr`
/// (`1.0`, `1e-05`, `1e+16`).
pub fn python_json_dumps(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, 0, &mut out);
    out
}

fn indent(level: usize, out: &mut String) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("    ");
    }
}

fn write_json(v: &Value, level: usize, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(f) = n.as_f64() {
                out.push_str(&python_float_repr(f));
            } else {
                out.push_str(&n.to_string());
            }
        }
        // serde_json escapes exactly Python's set: \" \\ \b \f \n \r \t and \u00xx for the
        // other control characters; everything else (non-ASCII included) is kept.
        Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        Value::Array(a) => {
            if a.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(level + 1, out);
                write_json(x, level + 1, out);
            }
            indent(level, out);
            out.push(']');
        }
        Value::Object(o) => {
            if o.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(level + 1, out);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                write_json(x, level + 1, out);
            }
            indent(level, out);
            out.push('}');
        }
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, positional when the decimal
/// exponent is in -4..16, else `d.ddde±XX`.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7", "1e16", "0e0".
    let e = format!("{:e}", f);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let decpt = exp + 1; // value = 0.d1d2... * 10^decpt
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    if f != 0.0 && (decpt <= -4 || decpt > 16) {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let x = decpt - 1;
        s.push('e');
        s.push(if x < 0 { '-' } else { '+' });
        s.push_str(&format!("{:02}", x.abs()));
    } else if decpt <= 0 {
        s.push_str("0.");
        for _ in 0..(-decpt) {
            s.push('0');
        }
        s.push_str(&digits);
    } else {
        let d = decpt as usize;
        if digits.len() <= d {
            s.push_str(&digits);
            for _ in digits.len()..d {
                s.push('0');
            }
            s.push_str(".0");
        } else {
            s.push_str(&digits[..d]);
            s.push('.');
            s.push_str(&digits[d..]);
        }
    }
    s
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
