//! ChatGLM hyperparameters from a Hugging Face `config.json`, and their GGUF metadata.

use crate::ConvertError;
use gguf::{names, Value};
use serde_json::Value as Json;
use std::path::Path;

/// The hyperparameters the GGUF file carries (THUDM's config.json names in comments).
#[derive(Clone, Debug, PartialEq)]
pub struct GlmConfig {
    pub name: String,
    /// `seq_length`
    pub context_length: u64,
    /// `hidden_size`
    pub n_embd: u64,
    /// `ffn_hidden_size` (the merged gate|up matrix has twice as many rows)
    pub n_ff: u64,
    /// `num_layers`
    pub n_layer: u64,
    /// `num_attention_heads`
    pub n_head: u64,
    /// `multi_query_group_num` when `multi_query_attention`, else `num_attention_heads`
    pub n_head_kv: u64,
    /// `kv_channels`
    pub head_dim: u64,
    /// `layernorm_epsilon`
    pub eps: f32,
    /// 10000 × `rope_ratio`
    pub rope_freq_base: f32,
    /// `padded_vocab_size`
    pub vocab_size: u64,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    /// tokenizer_config.json's `chat_template`, written as `tokenizer.chat_template` (as
    /// llama.cpp does) when the checkpoint has one.
    pub chat_template: Option<String>,
    /// The whole config.json, for [`crate::family::Family::detect`].
    pub json: Json,
}

impl GlmConfig {
    /// Reads `config.json`; reports every missing or mistyped key in one error.
    pub fn from_file(path: &Path) -> Result<Self, ConvertError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConvertError::io(path, e))?;
        let json: Json = serde_json::from_str(&text).map_err(|e| ConvertError::Config {
            path: path.to_path_buf(),
            what: format!("invalid JSON: {e}"),
        })?;
        Self::from_json(&json, path)
    }

    pub fn from_json(json: &Json, path: &Path) -> Result<Self, ConvertError> {
        let bad = |what: String| ConvertError::Config {
            path: path.to_path_buf(),
            what,
        };
        let model_type = json
            .get("model_type")
            .and_then(Json::as_str)
            .unwrap_or("(absent)");
        if model_type != "chatglm" {
            return Err(bad(format!(
                "model_type is {model_type:?}, expected \"chatglm\" (ChatGLM2/3-6B)"
            )));
        }
        if json.get("rmsnorm").and_then(Json::as_bool) == Some(false) {
            return Err(bad(
                "rmsnorm is false: only RMSNorm ChatGLM models (ChatGLM2/3) are supported".into(),
            ));
        }
        let mut problems = Vec::new();
        // Each count must be positive and at most its bound (which also keeps it inside the
        // GGUF's u32 fields): a config that asks for more is broken, not big.
        let mut int = |key: &str| -> u64 {
            let max = names::max_hparam(key);
            match json.get(key).and_then(Json::as_u64) {
                Some(v) if v > 0 && v <= max => v,
                Some(v) if v > 0 => {
                    problems.push(format!("{key} {v} is larger than {max}"));
                    1
                }
                Some(_) => {
                    problems.push(format!("{key} must be positive"));
                    1
                }
                None => {
                    problems.push(format!("{key} (a positive integer) is missing"));
                    1
                }
            }
        };
        let n_embd = int("hidden_size");
        let n_layer = int("num_layers");
        let n_head = int("num_attention_heads");
        let n_ff = int("ffn_hidden_size");
        let context_length = int("seq_length");
        let vocab_size = int("padded_vocab_size");
        let head_dim = match json.get("kv_channels") {
            None => n_embd / n_head,
            Some(_) => int("kv_channels"),
        };
        let mqa = json
            .get("multi_query_attention")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        let n_head_kv = if mqa {
            int("multi_query_group_num")
        } else {
            n_head
        };
        // Both end up as f32 in the GGUF and in ggml, which asserts on a non-positive epsilon.
        let eps = match json.get("layernorm_epsilon") {
            None => 1e-5,
            Some(v) => v
                .as_f64()
                .map(|e| e as f32)
                .filter(|e| e.is_finite() && *e > 0.0)
                .unwrap_or_else(|| {
                    problems.push(format!(
                        "layernorm_epsilon {v} is not a positive number (as f32)"
                    ));
                    1e-5
                }),
        };
        let rope_ratio = match json.get("rope_ratio") {
            None => 1.0,
            Some(v) => v
                .as_f64()
                .filter(|r| {
                    let base = (10000.0 * r) as f32;
                    base > 0.0 && base.is_finite()
                })
                .unwrap_or_else(|| {
                    problems.push(format!(
                        "rope_ratio {v} is not a positive number (10000 × rope_ratio must fit an f32)"
                    ));
                    1.0
                }),
        };
        // A token id, or (GLM-4's eos_token_id) a list of them: the first is the one.
        let mut id = |key: &str, default: u32| {
            let one = |v: &Json| v.as_u64().and_then(|v| u32::try_from(v).ok());
            match json.get(key) {
                None | Some(Json::Null) => default,
                Some(Json::Array(a)) if !a.is_empty() && a.iter().all(|v| one(v).is_some()) => {
                    one(&a[0]).unwrap_or(default)
                }
                Some(v) => match one(v) {
                    Some(v) => v,
                    None => {
                        problems.push(format!(
                            "{key} {v} is not a token id (0 ..= 2^32-1) or a list of them"
                        ));
                        default
                    }
                },
            }
        };
        let eos_token_id = id("eos_token_id", 2);
        let pad_token_id = id("pad_token_id", 0);
        if n_head % n_head_kv != 0 {
            problems.push(format!("num_attention_heads {n_head} is not a multiple of multi_query_group_num {n_head_kv}"));
        }
        if head_dim % 4 != 0 {
            problems.push(format!("kv_channels {head_dim} must be a multiple of 4 (GLM rotates half of each head in pairs)"));
        }
        if !problems.is_empty() {
            return Err(bad(problems.join("; ")));
        }
        let name = json
            .get("_name_or_path")
            .and_then(Json::as_str)
            .and_then(|p| p.rsplit('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| {
                path.parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "chatglm".into());
        Ok(GlmConfig {
            name,
            context_length,
            n_embd,
            n_ff,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            eps,
            rope_freq_base: (10000.0 * rope_ratio) as f32,
            vocab_size,
            eos_token_id,
            pad_token_id,
            chat_template: None,
            json: json.clone(),
        })
    }

    /// Rows of the fused QKV matrix.
    pub fn qkv_rows(&self) -> u64 {
        (self.n_head + 2 * self.n_head_kv) * self.head_dim
    }

    /// The `chatglm.*` hyperparameter keys (without general.* or tokenizer keys).
    pub fn hparams_metadata(&self) -> Vec<(String, Value)> {
        vec![
            (
                names::CONTEXT_LENGTH.into(),
                Value::U32(self.context_length as u32),
            ),
            (
                names::EMBEDDING_LENGTH.into(),
                Value::U32(self.n_embd as u32),
            ),
            (
                names::FEED_FORWARD_LENGTH.into(),
                Value::U32(self.n_ff as u32),
            ),
            (names::BLOCK_COUNT.into(), Value::U32(self.n_layer as u32)),
            (names::HEAD_COUNT.into(), Value::U32(self.n_head as u32)),
            (
                names::HEAD_COUNT_KV.into(),
                Value::U32(self.n_head_kv as u32),
            ),
            (names::LAYER_NORM_RMS_EPS.into(), Value::F32(self.eps)),
            (
                names::ROPE_DIMENSION_COUNT.into(),
                Value::U32((self.head_dim / 2) as u32),
            ),
            (
                names::ROPE_FREQ_BASE.into(),
                Value::F32(self.rope_freq_base),
            ),
        ]
    }

    /// The dimensions that fix every tensor shape.
    pub fn dims(&self) -> names::ChatglmDims {
        names::ChatglmDims {
            n_embd: self.n_embd,
            n_ff: self.n_ff,
            n_layer: self.n_layer,
            n_vocab: self.vocab_size,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            head_dim: self.head_dim,
        }
    }

    /// Every tensor of the model: (GGUF name, HF name, PyTorch-order shape).
    pub fn expected_tensors(&self) -> Vec<(String, String, Vec<u64>)> {
        names::chatglm_tensors(&self.dims())
            .into_iter()
            .map(|t| (t.name, t.hf_name, t.dims.into_iter().rev().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Json {
        json!({
            "model_type": "chatglm", "hidden_size": 128, "num_layers": 2,
            "num_attention_heads": 4, "ffn_hidden_size": 352, "seq_length": 512,
            "padded_vocab_size": 3072, "kv_channels": 32, "multi_query_attention": true,
            "multi_query_group_num": 2, "layernorm_epsilon": 1e-5, "rope_ratio": 1.0,
            "eos_token_id": 2, "pad_token_id": 0
        })
    }

    fn error_with(key: &str, v: Json) -> String {
        let mut j = base();
        j[key] = v;
        match GlmConfig::from_json(&j, Path::new("config.json")) {
            Ok(c) => panic!("{key} accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_base_config_is_valid() {
        let c = GlmConfig::from_json(&base(), Path::new("config.json")).unwrap();
        assert_eq!((c.n_layer, c.context_length, c.eps), (2, 512, 1e-5));
    }

    #[test]
    fn bad_floats_are_errors() {
        for v in [json!(0.0), json!(-1e-5), json!(1e-50), json!("x")] {
            let e = error_with("layernorm_epsilon", v.clone());
            assert!(
                e.contains("layernorm_epsilon") && e.contains("positive"),
                "{v}: {e}"
            );
        }
        for v in [json!(0.0), json!(-2.0), json!(1e300)] {
            let e = error_with("rope_ratio", v.clone());
            assert!(e.contains("rope_ratio"), "{v}: {e}");
        }
    }

    #[test]
    fn out_of_range_integers_are_errors_not_truncated() {
        for (key, v) in [
            ("seq_length", (1u64 << 32) + 512),
            ("padded_vocab_size", 1 << 61),
            ("padded_vocab_size", 100_000_000),
            ("num_layers", 1_000_000_000),
            ("hidden_size", u64::MAX),
        ] {
            let e = error_with(key, json!(v));
            assert!(
                e.contains(key) && e.contains("larger than"),
                "{key} {v}: {e}"
            );
        }
        for key in ["eos_token_id", "pad_token_id"] {
            let e = error_with(key, json!(1u64 << 33));
            assert!(
                e.contains(key) && e.contains("not a token id"),
                "{key}: {e}"
            );
        }
    }
}
