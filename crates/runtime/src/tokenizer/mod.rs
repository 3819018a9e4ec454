//! The GLM tokenizers built from the GGUF vocabulary arrays: THUDM's `SPTokenizer` for
//! ChatGLM2/3 (a SentencePiece BPE model with the special tokens after the pieces), and GLM-4's
//! tiktoken BPE (`tokenizer.ggml.model` = `gpt2`, see "GLM-4" below).
//!
//! Encoding (= `SentencePieceProcessor.encode` of the real `tokenizer.model`):
//! * normalization as SentencePiece does it with ChatGLM3's `normalizer_spec` (rule `identity`,
//!   no character map, `add_dummy_prefix`, `escape_whitespaces`, *not*
//!   `remove_extra_whitespaces`): a `▁` is prepended to non-empty text and every ASCII space
//!   becomes `▁`; nothing else changes (tabs, newlines, other Unicode spaces stay as they are);
//! * BPE by the `tokenizers` crate, with merges derived from the scores the way Hugging Face's
//!   `SentencePieceExtractor` does (every NORMAL piece that splits into two NORMAL pieces is a
//!   merge, ranked by the piece's score, best first), and byte fallback (`<0xXX>`) for
//!   characters that are not pieces;
//! * CONTROL, UNKNOWN and UNUSED entries (`<bos>`, `<eos>`, `[gMASK]`, `<|user|>`, `[PAD…]`) are
//!   not in the BPE vocabulary, so text never produces them; USER_DEFINED entries, if a GGUF has
//!   any, are matched greedily (longest first) before BPE, as SentencePiece does.
//!
//! Decoding (= `SPTokenizer.decode`): the nine ChatGLM3 specials decode to their own text and
//! split the ids into runs, each of which is decoded as `SentencePieceProcessor.decode` does:
//! `▁` -> space, the first `▁` of a run dropped (the dummy prefix), byte pieces joined into UTF-8
//! with U+FFFD for each byte of an invalid sequence, `<bos>`/`<eos>` invisible, `<unk>` -> " ⁇ ".
//!
//! GLM-4 (= `tiktoken` with THUDM's `ChatGLM4Tokenizer` pattern): the text is split with the
//! pre-tokenizer regex (`fancy-regex`, as tiktoken itself); a piece that is a token is that
//! token, any other goes through byte-level BPE by the `tokenizers` crate, with the merges
//! Hugging Face's tiktoken converter derives from the ranks (every split of a token into two
//! tokens, ranked by the token's rank). The NORMAL entries of the GGUF vocabulary are the ranks
//! in order, spelled with GPT-2's byte-level characters. Decoding joins the bytes and reads them
//! as UTF-8 with Python's `errors="replace"` (one U+FFFD per maximal invalid subsequence);
//! specials decode to their names.

use std::collections::HashMap;

use tokenizers::models::bpe::BPE;
use tokenizers::Model;

const SPACE_SYMBOL: char = '\u{2581}'; // ▁
const UNK_SURFACE: &str = " \u{2047} "; // SentencePiece's default trainer_spec.unk_surface
const REPLACEMENT: char = '\u{FFFD}';

mod byte_level;
mod decode;

use byte_level::encode_byte_level;
use decode::RunState;
pub use decode::StreamDecoder;

pub use gguf::names::{
    ChatFormat, CHATGLM2_SPECIALS, CHATGLM3_SPECIALS, GLM4_SPECIALS, TOKEN_TYPE_BYTE,
    TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_UNUSED,
    TOKEN_TYPE_USER_DEFINED,
};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer vocabulary: {tokens} tokens but {scores} scores and {types} token types")]
    LengthMismatch {
        tokens: usize,
        scores: usize,
        types: usize,
    },
    #[error(
        "tokenizer vocabulary: token {id} ({token:?}) has unknown type {kind}, expected 1..=6"
    )]
    BadType { id: usize, token: String, kind: i32 },
    #[error("tokenizer vocabulary: byte token {id} ({token:?}) is not of the form <0xXX>")]
    BadByteToken { id: usize, token: String },
    #[error("tokenizer vocabulary: token {token:?} appears twice (ids {first} and {second})")]
    Duplicate {
        token: String,
        first: usize,
        second: usize,
    },
    #[error("tokenizer vocabulary: special token {0:?} not found as a CONTROL token")]
    MissingSpecial(String),
    #[error("tokenizer vocabulary: {0}")]
    Vocab(String),
    #[error("token id {id} is out of range (vocabulary of {size})")]
    IdOutOfRange { id: u32, size: usize },
    #[error(
        "token id {id} ({token:?}) is a padding entry of the vocabulary, not a real token; it has no text"
    )]
    PaddingId { id: u32, token: String },
    #[error("tokenizer: {0}")]
    Bpe(String),
    #[error("{0}")]
    NoChat(String),
}

/// Ids of the special tokens, looked up by name in the vocabulary (ChatGLM3's `sop` is
/// GLM-4's `<sop>`, its `<eos>` GLM-4's `<|endoftext|>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatSpecials {
    pub gmask: u32,
    pub sop: u32,
    /// `<eos>` (SentencePiece's `</s>`, id 2 in ChatGLM3) or GLM-4's `<|endoftext|>`.
    pub eos: u32,
    /// `<|system|> <|user|> <|assistant|> <|observation|>`: absent in ChatGLM2's vocabulary.
    pub roles: Option<RoleTokens>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleTokens {
    pub system: u32,
    pub user: u32,
    pub assistant: u32,
    pub observation: u32,
}

/// How a token decodes.
#[derive(Clone, Debug)]
enum Piece {
    /// A SentencePiece piece (NORMAL / USER_DEFINED), as stored: `▁` becomes a space.
    Text(String),
    /// A byte-fallback piece.
    Byte(u8),
    /// A byte-level BPE token (GLM-4): its bytes.
    Bytes(Vec<u8>),
    /// `<bos>` / `<eos>` and other SentencePiece control pieces: invisible.
    Control,
    /// `<unk>`: " ⁇ ".
    Unknown,
    /// One of the GLM specials (`[gMASK]`, `<|user|>`…): decodes to its own name and splits
    /// runs.
    ChatSpecial(String),
    /// `[PAD…]` filler rows (UNUSED): not decodable.
    Padding,
}

/// How text becomes ids.
enum Encoder {
    /// ChatGLM2/3's SentencePiece BPE.
    SentencePiece {
        bpe: BPE,
        /// USER_DEFINED pieces (normalized form, with `▁`), matched before BPE.
        user_defined: HashMap<String, u32>,
        user_defined_max_len: usize,
        /// SentencePiece's `add_dummy_prefix` (false for CodeGeeX2).
        add_space_prefix: bool,
    },
    /// GLM-4's tiktoken BPE.
    ByteLevel {
        bpe: BPE,
        split: &'static fancy_regex::Regex,
        chars: Box<[char; 256]>,
    },
}

/// A GLM tokenizer on a GGUF vocabulary.
pub struct Tokenizer {
    tokens: Vec<String>,
    types: Vec<i32>,
    pieces: Vec<Piece>,
    by_name: HashMap<String, u32>,
    encoder: Encoder,
    specials: ChatSpecials,
    /// The prompt format of the model (from the GGUF).
    chat_format: ChatFormat,
    /// The prompt format the vocabulary supports (what `--chat` uses on a base model).
    vocab_format: ChatFormat,
    /// The grammar compiler over this vocabulary, built on first use (constrained decoding).
    grammars: std::sync::OnceLock<Result<std::sync::Arc<crate::constraint::Grammars>, String>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("specials", &self.specials)
            .finish_non_exhaustive()
    }
}

/// Names of every token (for token_id / specials): the first occurrence wins, except that a
/// CONTROL token wins over a non-control one of the same name.
fn names_index(tokens: &[String], types: &[i32]) -> HashMap<String, u32> {
    let mut by_name: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        match by_name.get(t.as_str()) {
            Some(&prev)
                if types[prev as usize] == TOKEN_TYPE_CONTROL
                    || types[id] != TOKEN_TYPE_CONTROL => {}
            _ => {
                by_name.insert(t.clone(), id as u32);
            }
        }
    }
    by_name
}

/// The special tokens of a ChatGLM2/3 (`byte_level` false) or GLM-4 vocabulary, and a test for
/// the names that decode as themselves.
#[allow(clippy::type_complexity)]
fn find_specials(
    by_name: &HashMap<String, u32>,
    types: &[i32],
    byte_level: bool,
) -> Result<(ChatSpecials, Box<dyn Fn(&str) -> bool>), TokenizerError> {
    let control = |name: &str| -> Option<u32> {
        by_name
            .get(name)
            .copied()
            .filter(|&id| types[id as usize] == TOKEN_TYPE_CONTROL)
    };
    let need =
        |name: &str| control(name).ok_or_else(|| TokenizerError::MissingSpecial(name.into()));
    let (sop, eos) = if byte_level {
        (need("<sop>")?, need("<|endoftext|>")?)
    } else {
        (need("sop")?, need("<eos>").or_else(|_| need("</s>"))?)
    };
    let roles = match (
        control("<|system|>"),
        control("<|user|>"),
        control("<|assistant|>"),
        control("<|observation|>"),
    ) {
        (Some(system), Some(user), Some(assistant), Some(observation)) => Some(RoleTokens {
            system,
            user,
            assistant,
            observation,
        }),
        _ if byte_level => {
            let missing = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
                .into_iter()
                .find(|n| control(n).is_none())
                .unwrap_or("<|user|>");
            return Err(TokenizerError::MissingSpecial(missing.into()));
        }
        _ => None,
    };
    let specials = ChatSpecials {
        gmask: need("[gMASK]")?,
        sop,
        eos,
        roles,
    };
    let names: &'static [&'static str] = if byte_level {
        &GLM4_SPECIALS
    } else {
        &CHATGLM3_SPECIALS
    };
    Ok((specials, Box::new(move |t: &str| names.contains(&t))))
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.tokens`, `.scores` and `.token_type`.
    pub fn from_vocab(
        tokens: &[String],
        scores: &[f32],
        types: &[i32],
    ) -> Result<Self, TokenizerError> {
        if tokens.len() != scores.len() || tokens.len() != types.len() {
            return Err(TokenizerError::LengthMismatch {
                tokens: tokens.len(),
                scores: scores.len(),
                types: types.len(),
            });
        }
        if tokens.is_empty() {
            return Err(TokenizerError::Vocab("no tokens".into()));
        }
        if tokens.len() > u32::MAX as usize {
            return Err(TokenizerError::Vocab(format!(
                "{} tokens is too many",
                tokens.len()
            )));
        }

        let by_name = names_index(tokens, types);

        let (specials, is_special) = find_specials(&by_name, types, false)?;
        // Per-token decode behaviour, and the BPE vocabulary (NORMAL, BYTE and UNKNOWN entries).
        let mut pieces = Vec::with_capacity(tokens.len());
        let mut bpe_vocab: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
        let mut normal: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
        let mut user_defined = HashMap::new();
        let mut unk_name: Option<String> = None;
        for (id, (t, &kind)) in tokens.iter().zip(types).enumerate() {
            let piece = match kind {
                TOKEN_TYPE_NORMAL => Piece::Text(t.clone()),
                TOKEN_TYPE_USER_DEFINED => {
                    if !t.is_empty() {
                        user_defined.entry(t.clone()).or_insert(id as u32);
                    }
                    Piece::Text(t.clone())
                }
                TOKEN_TYPE_BYTE => match gguf::names::byte_piece_value(t) {
                    Some(b) => Piece::Byte(b),
                    None => {
                        return Err(TokenizerError::BadByteToken {
                            id,
                            token: t.clone(),
                        })
                    }
                },
                TOKEN_TYPE_UNKNOWN => {
                    unk_name.get_or_insert_with(|| t.clone());
                    Piece::Unknown
                }
                TOKEN_TYPE_CONTROL => {
                    if is_special(t) {
                        Piece::ChatSpecial(t.clone())
                    } else {
                        Piece::Control
                    }
                }
                TOKEN_TYPE_UNUSED => Piece::Padding,
                _ => {
                    return Err(TokenizerError::BadType {
                        id,
                        token: t.clone(),
                        kind,
                    })
                }
            };
            pieces.push(piece);
            if matches!(
                kind,
                TOKEN_TYPE_NORMAL | TOKEN_TYPE_BYTE | TOKEN_TYPE_UNKNOWN
            ) {
                if let Some(&first) = bpe_vocab.get(t.as_str()) {
                    return Err(TokenizerError::Duplicate {
                        token: t.clone(),
                        first: first as usize,
                        second: id,
                    });
                }
                bpe_vocab.insert(t.clone(), id as u32);
            }
            if kind == TOKEN_TYPE_NORMAL {
                normal.insert(t.as_str(), id as u32);
            }
        }

        // Merges, as transformers' SentencePieceExtractor derives them: for every piece (in id
        // order) each split into two pieces, sorted by (left id, right id); then all of them
        // sorted by the piece's score, best first (stable).
        let mut merges: Vec<(f32, u32, u32, u32)> = Vec::new(); // (score, piece, left, right)
        for (id, (t, &kind)) in tokens.iter().zip(types).enumerate() {
            if kind != TOKEN_TYPE_NORMAL {
                continue;
            }
            let start = merges.len();
            for (k, _) in t.char_indices().skip(1) {
                if let (Some(&l), Some(&r)) = (normal.get(&t[..k]), normal.get(&t[k..])) {
                    merges.push((scores[id], id as u32, l, r));
                }
            }
            merges[start..].sort_by_key(|&(_, _, l, r)| (l, r));
        }
        // -0.0 and 0.0 compare equal, as in Python.
        let key = |s: f32| if s == 0.0 { 0.0 } else { s };
        merges.sort_by(|a, b| key(b.0).total_cmp(&key(a.0)));
        let merges: Vec<(String, String)> = merges
            .into_iter()
            .map(|(_, _, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone()))
            .collect();

        let mut builder = BPE::builder()
            .vocab_and_merges(bpe_vocab, merges)
            .byte_fallback(true)
            .fuse_unk(true);
        if let Some(unk) = unk_name {
            builder = builder.unk_token(unk);
        }
        let bpe = builder
            .build()
            .map_err(|e| TokenizerError::Bpe(e.to_string()))?;

        let user_defined_max_len = user_defined
            .keys()
            .map(|k: &String| k.len())
            .max()
            .unwrap_or(0);
        let vocab_format = if specials.roles.is_some() {
            ChatFormat::Chatglm3
        } else {
            ChatFormat::Chatglm2
        };
        Ok(Tokenizer {
            tokens: tokens.to_vec(),
            types: types.to_vec(),
            pieces,
            by_name,
            encoder: Encoder::SentencePiece {
                bpe,
                user_defined,
                user_defined_max_len,
                add_space_prefix: true,
            },
            specials,
            chat_format: vocab_format,
            vocab_format,
            grammars: Default::default(),
        })
    }

    /// Reads the vocabulary from a GGUF file's `tokenizer.ggml.*` arrays, and the prompt
    /// format from [`gguf::names::GLMTOOL_CHAT_FORMAT`] or, without it, from the vocabulary and
    /// `general.name` ([`ChatFormat::implied`]).
    pub fn from_gguf(file: &gguf::GgufFile) -> Result<Self, TokenizerError> {
        use gguf::names;
        let get = |e: gguf::GgufError| TokenizerError::Vocab(e.to_string());
        let model = file
            .get(names::TOKENIZER_MODEL)
            .and_then(|v| v.as_str())
            .unwrap_or(names::TOKENIZER_MODEL_LLAMA)
            .to_string();
        let tokens = file.get_str_array(names::TOKENIZER_TOKENS).map_err(get)?;
        let types = file
            .get_i32_array(names::TOKENIZER_TOKEN_TYPE)
            .map_err(get)?;
        let mut tok = match model.as_str() {
            names::TOKENIZER_MODEL_GPT2 => Self::from_byte_level_vocab(&tokens, &types)?,
            names::TOKENIZER_MODEL_LLAMA => {
                let scores = file.get_f32_array(names::TOKENIZER_SCORES).map_err(get)?;
                Self::from_vocab(&tokens, &scores, &types)?
            }
            other => {
                return Err(TokenizerError::Vocab(format!(
                    "{} is {other:?}; glmtool reads \"llama\" (ChatGLM2/3) and \"gpt2\" (GLM-4)",
                    names::TOKENIZER_MODEL
                )))
            }
        };
        if let Some(false) = file
            .get(names::TOKENIZER_ADD_SPACE_PREFIX)
            .and_then(|v| v.as_bool())
        {
            tok = tok.with_add_space_prefix(false);
        }
        let name = file
            .get(names::GENERAL_NAME)
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        tok.chat_format = match file.get(names::GLMTOOL_CHAT_FORMAT) {
            Some(v) => v.as_str().and_then(ChatFormat::from_name).ok_or_else(|| {
                TokenizerError::Vocab(format!(
                    "{} is {v}; expected one of: {}",
                    names::GLMTOOL_CHAT_FORMAT,
                    ChatFormat::ALL.map(|f| f.as_str()).join(", ")
                ))
            })?,
            None => ChatFormat::implied(&model, tok.specials.roles.is_some(), name),
        };
        if tok.chat_format == ChatFormat::Glm4 && tok.vocab_format != ChatFormat::Glm4
            || tok.chat_format == ChatFormat::Chatglm3 && tok.specials.roles.is_none()
        {
            return Err(TokenizerError::Vocab(format!(
                "the prompt format {} does not fit this vocabulary",
                tok.chat_format.as_str()
            )));
        }
        Ok(tok)
    }

    /// SentencePiece's `add_dummy_prefix` (`tokenizer.ggml.add_space_prefix`): without it
    /// (CodeGeeX2) text gets no leading `▁` and decoding keeps a leading space. No effect on
    /// GLM-4's tokenizer.
    pub fn with_add_space_prefix(mut self, on: bool) -> Self {
        if let Encoder::SentencePiece {
            add_space_prefix, ..
        } = &mut self.encoder
        {
            *add_space_prefix = on;
        }
        self
    }

    fn run_state(&self) -> RunState {
        let strip = !matches!(
            self.encoder,
            Encoder::SentencePiece {
                add_space_prefix: false,
                ..
            }
        );
        RunState::new(strip)
    }

    /// The model's prompt format.
    pub fn chat_format(&self) -> ChatFormat {
        self.chat_format
    }

    /// The chat format the vocabulary can build even when the model is a completion model
    /// (ChatGLM3's for a ChatGLM3-6B-base).
    pub fn vocab_chat_format(&self) -> ChatFormat {
        self.vocab_format
    }

    /// Overrides the prompt format (tests, and files converted before the key existed).
    pub fn set_chat_format(&mut self, f: ChatFormat) {
        self.chat_format = f;
    }

    /// Text -> ids, exactly as `SPTokenizer.encode` (no special tokens; special-token text such
    /// as `<|user|>` is tokenized as ordinary text).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let (bpe, user_defined, user_defined_max_len, prefix) = match &self.encoder {
            Encoder::ByteLevel { bpe, split, chars } => {
                return encode_byte_level(bpe, split, chars, text)
            }
            Encoder::SentencePiece {
                bpe,
                user_defined,
                user_defined_max_len,
                add_space_prefix,
            } => (bpe, user_defined, *user_defined_max_len, *add_space_prefix),
        };
        let mut normalized = String::with_capacity(text.len() + 3 + text.len() / 4);
        if prefix {
            normalized.push(SPACE_SYMBOL);
        }
        for c in text.chars() {
            normalized.push(if c == ' ' { SPACE_SYMBOL } else { c });
        }
        let mut ids = Vec::with_capacity(text.len() / 2 + 1);
        if user_defined.is_empty() {
            bpe_into(bpe, &normalized, &mut ids)?;
            return Ok(ids);
        }
        // Longest user-defined match at each character, frozen; BPE runs between them.
        let mut seg_start = 0;
        let mut i = 0;
        while i < normalized.len() {
            let mut found = None;
            let max = user_defined_max_len.min(normalized.len() - i);
            for len in (1..=max).rev() {
                if let Some(s) = normalized.get(i..i + len) {
                    if let Some(&id) = user_defined.get(s) {
                        found = Some((id, len));
                        break;
                    }
                }
            }
            match found {
                Some((id, len)) => {
                    bpe_into(bpe, &normalized[seg_start..i], &mut ids)?;
                    ids.push(id);
                    i += len;
                    seg_start = i;
                }
                None => i += normalized[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        bpe_into(bpe, &normalized[seg_start..], &mut ids)?;
        Ok(ids)
    }

    /// Ids -> text, exactly as `SPTokenizer.decode`: specials decode to their names, the runs
    /// between them as `SentencePieceProcessor.decode`. Out-of-range ids and `[PAD…]` rows are
    /// errors (THUDM's tokenizer raises on them too).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut out = String::new();
        let mut run = self.run_state();
        for &id in ids {
            let Some(piece) = self.pieces.get(id as usize) else {
                return Err(TokenizerError::IdOutOfRange {
                    id,
                    size: self.tokens.len(),
                });
            };
            if let Piece::Padding = piece {
                return Err(TokenizerError::PaddingId {
                    id,
                    token: self.tokens[id as usize].clone(),
                });
            }
            run.push(piece, &mut out);
        }
        run.flush(&mut out);
        Ok(out)
    }

    /// A decoder that turns ids into text one at a time.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self, self.run_state())
    }

    /// The id of a vocabulary entry, by its exact GGUF name (e.g. `"<|user|>"`, `"▁Hello"`).
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.by_name.get(piece).copied()
    }

    /// The bytes one token stands for on its own (a piece's `▁` as a space, a byte token's
    /// byte, a special's name; nothing for padding): OpenAI's `logprobs` `bytes`.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        match self.pieces.get(id as usize) {
            Some(Piece::Text(t)) => t.replace(SPACE_SYMBOL, " ").into_bytes(),
            Some(Piece::Byte(b)) => vec![*b],
            Some(Piece::Bytes(b)) => b.clone(),
            Some(Piece::ChatSpecial(name)) => name.clone().into_bytes(),
            Some(Piece::Unknown) => UNK_SURFACE.as_bytes().to_vec(),
            _ => Vec::new(),
        }
    }

    /// What each id stands for in generated text, for constrained decoding
    /// ([`crate::constraint`]): a piece's bytes (`▁` as a space), a byte token's byte, GLM-4's
    /// bytes; control, unknown and chat special tokens as `0xFF` + their name (llguidance's
    /// mark of a special token, which grammar text never matches); padding rows (and the
    /// `[PAD…]` ids past ChatGLM3's real vocabulary) as nothing, so no grammar allows them.
    pub fn grammar_vocabulary(&self) -> Vec<Vec<u8>> {
        let special = |name: &str| {
            let mut b = vec![0xFF];
            b.extend_from_slice(name.as_bytes());
            b
        };
        self.pieces
            .iter()
            .zip(&self.tokens)
            .map(|(piece, name)| match piece {
                Piece::Text(t) => t.replace(SPACE_SYMBOL, " ").into_bytes(),
                Piece::Byte(b) => vec![*b],
                Piece::Bytes(b) => b.clone(),
                Piece::Control | Piece::Unknown | Piece::ChatSpecial(_) => special(name),
                Piece::Padding => Vec::new(),
            })
            .collect()
    }

    /// The grammar compiler over this vocabulary (built once, on first use: a token trie and
    /// llguidance's tables, tens of milliseconds).
    pub fn grammars(
        &self,
    ) -> Result<std::sync::Arc<crate::constraint::Grammars>, crate::constraint::ConstraintError>
    {
        self.grammars
            .get_or_init(|| {
                crate::constraint::Grammars::new(self)
                    .map(std::sync::Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(crate::constraint::ConstraintError::Engine)
    }

    /// Whether the vocabulary is SentencePiece's (ChatGLM2/3): the first piece of a decoded
    /// run loses its leading `▁` (the dummy prefix).
    pub fn is_sentencepiece(&self) -> bool {
        matches!(self.encoder, Encoder::SentencePiece { .. })
    }

    /// The GGUF name of an id.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The GGUF token type of an id (1 NORMAL .. 6 BYTE).
    pub fn token_type(&self, id: u32) -> Option<i32> {
        self.types.get(id as usize).copied()
    }

    /// Makes the ids no text can come from unsampleable: padding entries (ChatGLM3's `[PAD…]`
    /// rows, GLM-4's head padded past its 151,343 real tokens) and logits past the vocabulary
    /// get `-inf`, so neither the sampler nor greedy decoding can pick them.
    pub fn mask_unsampleable(&self, logits: &mut [f32]) {
        for (l, piece) in logits.iter_mut().zip(&self.pieces) {
            if let Piece::Padding = piece {
                *l = f32::NEG_INFINITY;
            }
        }
        if let Some(rest) = logits.get_mut(self.pieces.len()..) {
            rest.fill(f32::NEG_INFINITY);
        }
    }

    /// Number of vocabulary entries (padding included: 65024 for ChatGLM3).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn special(&self) -> &ChatSpecials {
        &self.specials
    }
}

fn bpe_into(bpe: &BPE, s: &str, ids: &mut Vec<u32>) -> Result<(), TokenizerError> {
    if s.is_empty() {
        return Ok(());
    }
    let toks = bpe
        .tokenize(s)
        .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
    ids.extend(toks.iter().map(|t| t.id));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary in the GGUF ChatGLM3 layout.
    fn toy() -> Tokenizer {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<bos>".into(), "<eos>".into()];
        let mut scores = vec![0.0f32; 3];
        let mut types = vec![2, 3, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            types.push(6);
        }
        for (i, p) in ["▁", "a", "b", "c", "ab", "▁ab", "abc", "▁▁", "x"]
            .iter()
            .enumerate()
        {
            tokens.push(p.to_string());
            scores.push(-(i as f32));
            types.push(1);
        }
        for s in CHATGLM3_SPECIALS {
            tokens.push(s.into());
            scores.push(0.0);
            types.push(3);
        }
        let n = tokens.len();
        tokens.push(format!("[PAD{n}]"));
        scores.push(0.0);
        types.push(5);
        Tokenizer::from_vocab(&tokens, &scores, &types).unwrap()
    }

    fn pieces(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| t.token(i).unwrap().to_string())
            .collect()
    }

    #[test]
    fn toy_encode_decode() {
        let t = toy();
        assert_eq!(t.encode("").unwrap(), Vec::<u32>::new());
        assert_eq!(pieces(&t, &t.encode("ab").unwrap()), ["▁ab"]);
        assert_eq!(pieces(&t, &t.encode("abc").unwrap()), ["▁ab", "c"]);
        // "ab" (score -4) merges before "abc" (-6), then "▁ab" (-5) takes it: "▁▁" never forms.
        assert_eq!(pieces(&t, &t.encode(" abc").unwrap()), ["▁", "▁ab", "c"]);
        assert_eq!(pieces(&t, &t.encode(" x").unwrap()), ["▁▁", "x"]);
        assert_eq!(pieces(&t, &t.encode("a\n").unwrap()), ["▁", "a", "<0x0A>"]);
        assert_eq!(
            pieces(&t, &t.encode("[gMASK]").unwrap())[..2],
            ["▁", "<0x5B>"]
        );
        assert_eq!(
            pieces(&t, &t.encode("é").unwrap()),
            ["▁", "<0xC3>", "<0xA9>"]
        );
        for s in ["ab", "abc", " abc", "a\n", "é x", "  ", "\n a"] {
            assert_eq!(t.decode(&t.encode(s).unwrap()).unwrap(), s);
        }
        let s = t.special();
        assert_eq!(s.eos, 2);
        assert_eq!(t.token_id("[MASK]"), Some(268));
        let r = s.roles.unwrap();
        assert_eq!(r.observation, 276);
        assert_eq!(t.token_id("sop"), Some(s.sop));
        let ab = t.token_id("▁ab").unwrap();
        assert_eq!(
            t.decode(&[s.gmask, s.sop, r.user, ab, r.assistant])
                .unwrap(),
            "[gMASK]sop<|user|>ab<|assistant|>"
        );
        assert_eq!(t.decode(&[1, ab, 2]).unwrap(), "ab");
        assert_eq!(t.decode(&[0, ab]).unwrap(), " ⁇  ab");
        assert!(t
            .decode(&[277])
            .unwrap_err()
            .to_string()
            .contains("padding"));
        assert_eq!(
            t.decode(&[9999]).unwrap_err().to_string(),
            "token id 9999 is out of range (vocabulary of 278)"
        );
        // a padded head: the padding row and the rows past the vocabulary score highest, yet
        // neither greedy decoding nor sampling can pick them
        let mut logits = vec![0.0f32; 300];
        logits[277] = 50.0;
        logits[290] = 60.0;
        logits[ab as usize] = 1.0;
        t.mask_unsampleable(&mut logits);
        assert_eq!(crate::sampler::argmax(&logits), ab);
        assert!(logits[277] == f32::NEG_INFINITY && logits[278..].iter().all(|l| *l < -1e30));
        let mut s = crate::sampler::Sampler::new(crate::sampler::SamplerOptions {
            temperature: 5.0,
            ..Default::default()
        });
        for _ in 0..200 {
            let id = s.sample(&logits, &[]).unwrap();
            assert!(t.decode(&[id]).is_ok(), "sampled {id}");
        }
    }

    #[test]
    fn invalid_bytes_and_streaming() {
        let t = toy();
        let b = |x: u8| 3 + u32::from(x);
        let a = t.token_id("a").unwrap();
        // 你 = E4 BD A0; a lone E4 before it is one U+FFFD.
        let ids = [b(0xE4), b(0xE4), b(0xBD), b(0xA0), a, b(0xE4), b(0xBD)];
        assert_eq!(t.decode(&ids).unwrap(), "\u{FFFD}你a\u{FFFD}\u{FFFD}");
        let mut d = t.stream_decoder();
        let parts: Vec<String> = ids.iter().map(|&i| d.push(i)).collect();
        // The first E4 is known to be invalid once the next two bytes are there.
        assert_eq!(parts, ["", "", "\u{FFFD}", "你", "a", "", ""]);
        assert_eq!(d.finish(), "\u{FFFD}\u{FFFD}");
        // Surrogates and overlong forms are invalid byte by byte.
        assert_eq!(
            t.decode(&[b(0xED), b(0xA0), b(0x80)]).unwrap(),
            "\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        assert_eq!(t.decode(&[b(0xC0), b(0x80)]).unwrap(), "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn bad_vocabularies() {
        let e = Tokenizer::from_vocab(&["a".into()], &[], &[1])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tokenizer vocabulary: 1 tokens but 0 scores and 1 token types"
        );
        let e = Tokenizer::from_vocab(&["a".into()], &[0.0], &[1])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tokenizer vocabulary: special token \"sop\" not found as a CONTROL token"
        );
    }
}
