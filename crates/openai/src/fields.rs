//! Every top-level request field is read, accepted without effect (documented), or refused:
//! nothing is silently ignored. docs/server.md's field table lists the same.

use crate::request::BadRequest;
use serde_json::Value;

/// Which endpoint a body was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
        }
    }
}

/// Fields both endpoints read.
const SHARED: &[&str] = &[
    "stream",
    "stream_options",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "repeat_penalty",
    "repeat_last_n",
    "logit_bias",
    "logprobs",
    "response_format",
    "grammar",
    "json_schema",
];

/// Fields only `/v1/chat/completions` reads.
const CHAT: &[&str] = &[
    "messages",
    "tools",
    "tool_choice",
    "max_completion_tokens",
    "top_logprobs",
    "parallel_tool_calls",
];

/// Fields only `/v1/completions` reads.
const COMPLETIONS: &[&str] = &["prompt"];

/// Accepted on both endpoints and without effect here: `model` (the server has one model;
/// every client sends it), and fields that only identify the caller to OpenAI.
const NO_EFFECT: &[&str] = &["model", "user", "safety_identifier", "prompt_cache_key"];

/// OpenAI's fields glmtool does not do: (name, why). Refused with a 400 unless the value asks
/// for nothing ([`neutral`]).
const REFUSED: &[(&str, &str)] = &[
    ("audio", "there is no audio output"),
    ("modalities", "only [\"text\"] is supported"),
    ("prediction", "predicted outputs are not supported"),
    (
        "reasoning_effort",
        "the model does not reason in a separate phase",
    ),
    ("verbosity", "not supported"),
    ("service_tier", "there is one tier"),
    ("store", "completions are not stored (only false)"),
    ("metadata", "completions are not stored"),
    ("web_search_options", "there is no web search"),
    ("functions", "use \"tools\""),
    ("function_call", "use \"tool_choice\""),
    ("echo", "the prompt is not echoed (only false)"),
    ("suffix", "insertion (a suffix) is not supported"),
    ("best_of", "only best_of = 1"),
];

/// Whether a refused field's value asks for nothing the server does not do.
fn neutral(name: &str, v: &Value) -> bool {
    match (name, v) {
        (_, Value::Null) => true,
        ("modalities", Value::Array(a)) => a.iter().all(|m| m == "text"),
        ("store" | "echo", Value::Bool(false)) => true,
        ("suffix", Value::String(s)) => s.is_empty(),
        ("best_of", Value::Number(n)) => n.as_u64() == Some(1),
        ("metadata", Value::Object(o)) => o.is_empty(),
        ("service_tier", Value::String(s)) => s == "auto" || s == "default",
        _ => false,
    }
}

/// Checks the top-level fields of a request body for `endpoint`.
pub fn check_fields(body: &Value, endpoint: Endpoint) -> Result<(), BadRequest> {
    let Some(o) = body.as_object() else {
        return Ok(());
    };
    let (own, other) = match endpoint {
        Endpoint::Chat => (CHAT, COMPLETIONS),
        Endpoint::Completions => (COMPLETIONS, CHAT),
    };
    for (k, v) in o {
        let k = k.as_str();
        if SHARED.contains(&k) || own.contains(&k) || NO_EFFECT.contains(&k) {
            continue;
        }
        if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == k) {
            if neutral(k, v) {
                continue;
            }
            return Err(BadRequest(format!("{k}: not supported by glmtool: {why}")));
        }
        if other.contains(&k) {
            let other_path = match endpoint {
                Endpoint::Chat => Endpoint::Completions.path(),
                Endpoint::Completions => Endpoint::Chat.path(),
            };
            return Err(BadRequest(format!(
                "{k}: a field of {other_path}, not of {}",
                endpoint.path()
            )));
        }
        let known = SHARED
            .iter()
            .chain(own)
            .chain(NO_EFFECT)
            .copied()
            .chain(REFUSED.iter().map(|(n, _)| *n));
        let near = known
            .map(|n| (edit_distance(k, n), n))
            .filter(|&(d, n)| d <= 2.max(n.len() / 4) && d < n.len())
            .min();
        return Err(BadRequest(match near {
            Some((_, n)) => format!("unknown field {k:?} (did you mean {n:?}?)"),
            None => format!(
                "unknown field {k:?} (the fields {} reads are listed in docs/server.md)",
                endpoint.path()
            ),
        }));
    }
    Ok(())
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typos_get_a_suggestion_and_refused_fields_a_reason() {
        assert_eq!(edit_distance("tempreature", "temperature"), 2);
        let chat = |v: Value| check_fields(&v, Endpoint::Chat).map_err(|e| e.0);
        assert_eq!(
            chat(json!({"tempreature": 1})).unwrap_err(),
            "unknown field \"tempreature\" (did you mean \"temperature\"?)"
        );
        assert!(chat(json!({"max_token": 1}))
            .unwrap_err()
            .contains("\"max_tokens\""));
        assert!(chat(json!({"zzz": 1}))
            .unwrap_err()
            .contains("listed in docs/server.md"));
        assert!(chat(json!({"audio": {"voice": "x"}}))
            .unwrap_err()
            .starts_with("audio: not supported"));
        assert!(chat(json!({"prompt": "x"}))
            .unwrap_err()
            .contains("a field of /v1/completions"));
        chat(json!({"model": "m", "user": "u", "store": false, "audio": null, "modalities": ["text"]}))
            .unwrap();
        let cmpl = |v: Value| check_fields(&v, Endpoint::Completions).map_err(|e| e.0);
        assert!(cmpl(json!({"echo": true}))
            .unwrap_err()
            .starts_with("echo:"));
        cmpl(json!({"echo": false, "best_of": 1, "suffix": ""})).unwrap();
        assert!(cmpl(json!({"tools": []}))
            .unwrap_err()
            .contains("a field of /v1/chat/completions"));
    }
}
