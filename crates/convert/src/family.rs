//! Which member of the GLM family a checkpoint is, from its own files: the tokenizer's format
//! (tiktoken for GLM-4, SentencePiece before), `_name_or_path` in config.json, and THUDM's
//! `tokenization_chatglm.py` when present. `convert --family` overrides the guess.

use gguf::names::{ChatFormat, CHATGLM2_SPECIALS, CHATGLM3_SPECIALS};
use serde_json::Value as Json;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// ChatGLM3-6B and ChatGLM3-6B-32k.
    Chatglm3,
    Chatglm3Base,
    Chatglm2,
    /// CodeGeeX2-6B: ChatGLM2's model and tokenizer, code completion only.
    Codegeex2,
    /// GLM-4-9B-chat.
    Glm4,
    /// GLM-4-9B (base).
    Glm4Base,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Chatglm3,
        Family::Chatglm3Base,
        Family::Chatglm2,
        Family::Codegeex2,
        Family::Glm4,
        Family::Glm4Base,
    ];

    /// `--family`'s spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Chatglm3 => "chatglm3",
            Family::Chatglm3Base => "chatglm3-base",
            Family::Chatglm2 => "chatglm2",
            Family::Codegeex2 => "codegeex2",
            Family::Glm4 => "glm4",
            Family::Glm4Base => "glm4-base",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    pub fn chat_format(self) -> ChatFormat {
        match self {
            Family::Chatglm3 => ChatFormat::Chatglm3,
            Family::Chatglm2 => ChatFormat::Chatglm2,
            Family::Glm4 => ChatFormat::Glm4,
            Family::Chatglm3Base | Family::Codegeex2 | Family::Glm4Base => ChatFormat::Completion,
        }
    }

    /// GLM-4's tiktoken vocabulary, as opposed to SentencePiece.
    pub fn uses_tiktoken(self) -> bool {
        matches!(self, Family::Glm4 | Family::Glm4Base)
    }

    /// The specials after the SentencePiece pieces (SentencePiece families only).
    pub fn spm_specials(self) -> &'static [&'static str] {
        match self {
            Family::Chatglm2 | Family::Codegeex2 => &CHATGLM2_SPECIALS,
            _ => &CHATGLM3_SPECIALS,
        }
    }

    /// The family of the checkpoint in `dir` (config.json already parsed as `config`).
    pub fn detect(dir: &Path, config: &Json) -> Family {
        // the model's name: the last part of `_name_or_path` (a local save holds a whole path)
        let full = config
            .get("_name_or_path")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let name = full
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let completion = gguf::names::is_completion_name(&name);
        let tiktoken = std::fs::read(dir.join("tokenizer.model"))
            .map(|d| crate::tiktoken::looks_like_tiktoken(&d))
            .unwrap_or(false);
        if tiktoken {
            return if completion {
                Family::Glm4Base
            } else {
                Family::Glm4
            };
        }
        if name.starts_with("codegeex2") {
            return Family::Codegeex2;
        }
        if name.contains("chatglm2") {
            return Family::Chatglm2;
        }
        if name.contains("chatglm3") {
            return if completion {
                Family::Chatglm3Base
            } else {
                Family::Chatglm3
            };
        }
        // No telling name: THUDM's tokenizer code says whether there are role tokens.
        match std::fs::read_to_string(dir.join("tokenization_chatglm.py")) {
            Ok(code) if !code.contains("<|system|>") && code.contains("\"sop\"") => {
                Family::Chatglm2
            }
            _ => Family::Chatglm3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_decide_the_family() {
        let dir = Path::new("/nonexistent");
        let f = |n: &str| Family::detect(dir, &json!({ "_name_or_path": n }));
        assert_eq!(f("THUDM/chatglm3-6b"), Family::Chatglm3);
        assert_eq!(f("THUDM/chatglm3-6b-32k"), Family::Chatglm3);
        assert_eq!(f("THUDM/chatglm3-6b-base"), Family::Chatglm3Base);
        assert_eq!(f("/data/base_models/chatglm3-6b"), Family::Chatglm3);
        assert_eq!(f("THUDM/chatglm2-6b"), Family::Chatglm2);
        assert_eq!(f("THUDM/codegeex2-6b"), Family::Codegeex2);
        assert_eq!(f("my-database-chatglm3"), Family::Chatglm3);
    }
}
