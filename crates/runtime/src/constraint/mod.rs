//! Constrained decoding: at each step only the tokens that keep the output inside a grammar may
//! be sampled. The engine is the `llguidance` crate (Earley parser over a derivative-based
//! lexer, JSON Schema compiler); this module gives it our vocabularies and builds its grammars:
//!
//! * [`Grammars`] (one per tokenizer, [`crate::Tokenizer::grammars`]): the token trie —
//!   every id's bytes ([`crate::Tokenizer::grammar_vocabulary`]) — and llguidance's tables;
//! * [`Grammar`]: what the user asked for — a JSON Schema, any JSON object, or a GBNF grammar
//!   (llama.cpp's format, converted to llguidance's Lark by [`gbnf`]);
//! * [`OutputSpec`] + [`Shape`]: where the grammar applies. A chat reply is the model's own
//!   format — a metadata line, a newline, the content — so the grammar covers the whole reply:
//!   `"\n" content` for an answer, `name "\n" arguments` for a tool call, with the arguments
//!   in the model's own call format ([`tools`]);
//! * [`Constraint`]: one generation's parser state; the sampler applies its mask
//!   ([`crate::sampler`]) and feeds it the token it picked.
//!
//! The ids that end a reply (`<eos>`, `<|user|>`, `<|observation|>`) are allowed exactly when
//! the grammar is complete; once nothing else can follow, only they are.

pub mod gbnf;
pub mod tools;

use std::sync::Arc;
use std::time::Instant;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};

use crate::tokenizer::{ChatFormat, Tokenizer};
pub use tools::ToolSpec;

/// Why a grammar cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// The grammar or schema is malformed or uses what the engine does not support (a client
    /// error: the server answers 400 with this text).
    #[error("{0}")]
    Unsupported(String),
    /// The engine failed while generating (a server error).
    #[error("constrained decoding failed: {0}")]
    Engine(String),
}

fn unsupported(e: impl std::fmt::Display) -> ConstraintError {
    ConstraintError::Unsupported(e.to_string())
}

/// What generated text must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`, ollama's
    /// `format: "json"`, the chat's `/set format json`).
    JsonObject,
    /// JSON valid against this JSON Schema.
    JsonSchema(Value),
    /// A GBNF grammar (llama.cpp's format; `root` is the start rule).
    Gbnf(String),
}

/// The whitespace JSON may have between its tokens: at most 20 blanks, like llama.cpp's
/// `space` rule, so a model cannot fill the context with whitespace.
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,20}";

impl Grammar {
    /// Lark rules for this grammar whose start rule is `name`.
    fn lark_rules(&self, name: &str) -> Result<String, ConstraintError> {
        match self {
            Grammar::JsonObject => Ok(json_rule(name, &json!({"type": "object"}))),
            Grammar::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(unsupported(
                        "the JSON schema must be an object (or true/false)",
                    ));
                }
                Ok(json_rule(name, schema))
            }
            Grammar::Gbnf(text) => gbnf::to_lark(text, name),
        }
    }
}

/// `name: %json {schema}`, with our whitespace rule.
fn json_rule(name: &str, schema: &Value) -> String {
    let mut schema = match schema {
        Value::Bool(true) => json!({}),
        Value::Bool(false) => json!({"not": {}}),
        s => s.clone(),
    };
    if let Some(o) = schema.as_object_mut() {
        o.insert(
            "x-guidance".into(),
            json!({"whitespace_pattern": JSON_WHITESPACE, "lenient": false}),
        );
    }
    format!("{name}: %json {schema}\n")
}

/// A Lark string literal (JSON's escapes, which llguidance's Lark reads).
pub(crate) fn lark_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Where the grammar applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The whole generated text (completions, `run --raw`, models without a metadata line).
    Text,
    /// A chat reply in this format (ChatGLM3, GLM-4): the metadata line, then the content.
    Reply(ChatFormat),
}

/// What a reply may be: an answer whose content matches `content` (any text when `None`),
/// or a call of one of `tools` (only a call when `call_required`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputSpec {
    pub content: Option<Grammar>,
    pub tools: Vec<ToolSpec>,
    pub call_required: bool,
}

impl OutputSpec {
    /// Whether anything is constrained at all.
    pub fn is_constrained(&self) -> bool {
        self.content.is_some() || self.call_required
    }
}

/// The grammar compiler of one vocabulary.
pub struct Grammars {
    factory: ParserFactory,
    /// The trie's end token (our `<eos>`): in a mask it means "the grammar is complete".
    eos: u32,
    sentencepiece: bool,
    /// SentencePiece: the ids whose text starts with a space the decoder keeps at the start of
    /// a reply (the byte token `<0x20>`; a piece's `▁` is dropped there). The grammar's
    /// optional leading space stands for the dropped `▁` only, so these are barred from the
    /// first step.
    kept_space: Vec<u32>,
}

/// llguidance's view of our tokenizer: the trie, and byte strings tokenized greedily over it
/// (used only for text forced by a grammar; we never ask llguidance for forced tokens).
struct TrieEnv {
    trie: TokTrie,
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.trie.greedy_tokenize(s)
    }
    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

impl Grammars {
    /// Builds the trie of `tok`'s vocabulary and llguidance's tables over it.
    pub fn new(tok: &Tokenizer) -> Result<Self, ConstraintError> {
        let words = tok.grammar_vocabulary();
        let kept_space = if tok.is_sentencepiece() {
            (0..words.len() as u32)
                .filter(|&id| {
                    words[id as usize].first() == Some(&b' ')
                        && !tok.token(id).is_some_and(|t| t.starts_with('\u{2581}'))
                })
                .collect()
        } else {
            Vec::new()
        };
        let eos = tok.special().eos;
        let info = TokRxInfo::new(words.len() as u32, eos);
        let trie = llguidance::panic_utils::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Ok(TokTrie::from(&info, &words))
        }))
        .map_err(|e| ConstraintError::Engine(format!("building the token trie: {e}")))?;
        let env: TokEnv = Arc::new(TrieEnv { trie });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Engine(format!("starting llguidance: {e}")))?;
        factory.quiet();
        Ok(Grammars {
            factory,
            eos,
            sentencepiece: tok.is_sentencepiece(),
            kept_space,
        })
    }

    /// The Lark grammar of `spec` in `shape` (what [`Self::compile`] gives llguidance).
    pub fn lark(&self, spec: &OutputSpec, shape: Shape) -> Result<String, ConstraintError> {
        let format = match shape {
            Shape::Reply(f @ (ChatFormat::Chatglm3 | ChatFormat::Glm4)) => Some(f),
            _ => None,
        };
        let Some(format) = format else {
            if spec.call_required || !spec.tools.is_empty() {
                return Err(unsupported(
                    "tool calls need a chat model with a tool protocol (ChatGLM3, GLM-4)",
                ));
            }
            let content = spec
                .content
                .as_ref()
                .ok_or_else(|| unsupported("no grammar"))?;
            // SentencePiece text starts with the dummy-prefix space the decoder drops
            let lead = if self.sentencepiece { "\" \"? " } else { "" };
            return Ok(format!(
                "start: {lead}content\n{}",
                content.lark_rules("content")?
            ));
        };
        let mut rules = String::new();
        let mut alternatives = Vec::new();
        if !spec.call_required {
            match &spec.content {
                Some(g) => rules.push_str(&g.lark_rules("content")?),
                None => rules.push_str("content: /(?s:.*)/\n"),
            }
            alternatives.push("\"\\n\" content".to_string());
        }
        if spec.call_required && spec.tools.is_empty() {
            return Err(unsupported(
                "a tool call is required but no tools are given",
            ));
        }
        if spec.call_required || spec.content.is_some() {
            for (i, tool) in spec.tools.iter().enumerate() {
                let name = format!("call_{i}");
                rules.push_str(&tools::call_rules(tool, format, &name)?);
                alternatives.push(name);
            }
        }
        // The reply follows `<|assistant|>`: SentencePiece's first piece may carry the dummy
        // prefix `▁`, which the decoder drops.
        let lead = if self.sentencepiece { "\" \"? " } else { "" };
        Ok(format!(
            "start: {lead}reply\nreply: {}\n{rules}",
            alternatives.join(" | ")
        ))
    }

    /// A constraint for one generation of `spec` in `shape`; `stop_ids` end the output (they
    /// are allowed exactly when the grammar is complete).
    pub fn compile(
        &self,
        spec: &OutputSpec,
        shape: Shape,
        stop_ids: &[u32],
    ) -> Result<Constraint, ConstraintError> {
        let lark = self.lark(spec, shape)?;
        self.from_lark(&lark, stop_ids)
    }

    /// A constraint from Lark text (llguidance's grammar syntax).
    pub fn from_lark(&self, lark: &str, stop_ids: &[u32]) -> Result<Constraint, ConstraintError> {
        let parser = self
            .factory
            .create_parser(TopLevelGrammar::from_lark(lark.to_string()))
            .map_err(|e| unsupported(clean_error(&e.to_string())))?;
        Ok(Constraint {
            matcher: Matcher::new(Ok(parser)),
            first_step_barred: self.kept_space.clone(),
            stop_ids: stop_ids.to_vec(),
            eos: self.eos,
            steps: 0,
            mask_seconds: 0.0,
        })
    }
}

/// llguidance's error text without the grammar dump it may append, and without its position
/// in the Lark text we generated (`at 3(10): `), which means nothing to the user.
fn clean_error(e: &str) -> String {
    let first = e.lines().next().unwrap_or(e).trim();
    let positioned = first
        .strip_prefix("at ")
        .and_then(|rest| rest.split_once("): "))
        .filter(|(pos, _)| pos.chars().all(|c| c.is_ascii_digit() || c == '('));
    match positioned {
        Some((_, msg)) => msg.to_string(),
        None => first.to_string(),
    }
}

/// One generation's grammar state.
pub struct Constraint {
    matcher: Matcher,
    /// Ids barred at the first step ([`Grammars::kept_space`]).
    first_step_barred: Vec<u32>,
    stop_ids: Vec<u32>,
    eos: u32,
    steps: usize,
    mask_seconds: f64,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stop_ids", &self.stop_ids)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// Sets the logit of every token the grammar does not allow next to `-inf`. The stop ids
    /// keep theirs only when the grammar is complete.
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        let t0 = Instant::now();
        let stops: Vec<(usize, f32)> = self
            .stop_ids
            .iter()
            .filter_map(|&s| logits.get(s as usize).map(|&l| (s as usize, l)))
            .collect();
        let complete = if self.matcher.is_stopped() {
            logits.fill(f32::NEG_INFINITY);
            true
        } else {
            let mask = self
                .matcher
                .compute_mask()
                .map_err(|e| ConstraintError::Engine(clean_error(&e.to_string())))?;
            for (i, l) in logits.iter_mut().enumerate() {
                if !mask.is_allowed(i as u32) {
                    *l = f32::NEG_INFINITY;
                }
            }
            mask.is_allowed(self.eos)
        };
        for (s, l) in stops {
            logits[s] = if complete { l } else { f32::NEG_INFINITY };
        }
        if self.steps == 0 {
            for &id in &self.first_step_barred {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        self.steps += 1;
        self.mask_seconds += t0.elapsed().as_secs_f64();
        Ok(())
    }

    /// Advances the grammar by the token that was picked (a stop id ends the output: no-op).
    pub fn accept(&mut self, id: u32) -> Result<(), ConstraintError> {
        if self.stop_ids.contains(&id) {
            return Ok(());
        }
        self.matcher
            .consume_token(id)
            .map_err(|e| ConstraintError::Engine(clean_error(&e.to_string())))
    }

    /// Whether the grammar can end here.
    pub fn is_complete(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }

    /// Masks computed so far and the seconds they took.
    pub fn mask_stats(&self) -> (usize, f64) {
        (self.steps, self.mask_seconds)
    }
}
