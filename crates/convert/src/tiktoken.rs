//! GLM-4's `tokenizer.model`: a tiktoken vocabulary (one `base64(bytes) rank` line per token,
//! ranks 0, 1, 2, … in order) → the byte-level BPE vocabulary llama.cpp writes for GLM-4:
//!
//! * ids `0..n_ranks`: each token's bytes as GPT-2 byte-level characters, NORMAL;
//! * ids `n_ranks..n_ranks+14`: [`GLM4_SPECIALS`], CONTROL;
//! * the rest up to `padded_vocab_size`: `[PAD{id}]`, UNUSED;
//! * merges: for each token of two or more bytes, the parts that tiktoken's own merging of
//!   its bytes stops at below its rank, joined by spaces (llama.cpp's `ChatGLMModel.bpe`).

use crate::ConvertError;
use base64::Engine;
use gguf::names::{GLM4_SPECIALS, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNUSED};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A parsed tiktoken vocabulary: `ranks[r]` is the byte string of rank `r`.
pub struct TiktokenModel {
    pub path: PathBuf,
    pub ranks: Vec<Vec<u8>>,
}

/// The GGUF vocabulary of a byte-level BPE model.
pub struct BpeVocab {
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
}

/// Whether `data` looks like a tiktoken file (its first line is `base64 rank`), as opposed to
/// a SentencePiece protobuf.
pub fn looks_like_tiktoken(data: &[u8]) -> bool {
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    match line.trim_end().split_once(' ') {
        Some((b64, rank)) => {
            !b64.is_empty()
                && b64
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
                && !rank.is_empty()
                && rank.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

impl TiktokenModel {
    pub fn from_file(path: &Path) -> Result<Self, ConvertError> {
        let data = std::fs::read(path).map_err(|e| ConvertError::io(path, e))?;
        Self::from_bytes(&data, path)
    }

    pub fn from_bytes(data: &[u8], path: &Path) -> Result<Self, ConvertError> {
        let bad = |what: String| ConvertError::Input {
            path: path.to_path_buf(),
            what,
        };
        let text = std::str::from_utf8(data)
            .map_err(|e| bad(format!("not a tiktoken vocabulary (not UTF-8 text: {e})")))?;
        let mut ranks = Vec::new();
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let (b64, rank) = line
                .split_once(' ')
                .ok_or_else(|| bad(format!("line {}: expected `base64 rank`", i + 1)))?;
            let token = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(format!("line {}: bad base64 ({e})", i + 1)))?;
            let rank: usize = rank
                .trim()
                .parse()
                .map_err(|_| bad(format!("line {}: rank {rank:?} is not a number", i + 1)))?;
            if rank != ranks.len() {
                return Err(bad(format!(
                    "line {}: rank {rank}, expected {} (ranks must count up from 0)",
                    i + 1,
                    ranks.len()
                )));
            }
            if token.is_empty() {
                return Err(bad(format!("line {}: empty token", i + 1)));
            }
            if let Some(first) = seen.insert(token.clone(), rank) {
                return Err(bad(format!(
                    "line {}: token of rank {rank} repeats rank {first}",
                    i + 1
                )));
            }
            ranks.push(token);
        }
        // Every byte must be a token of its own, or some text could not be encoded.
        if let Some(b) = (0..=255u8).find(|b| !seen.contains_key(&vec![*b])) {
            return Err(bad(format!(
                "byte 0x{b:02X} is not a token; a byte-level vocabulary has all 256"
            )));
        }
        Ok(TiktokenModel {
            path: path.to_path_buf(),
            ranks,
        })
    }

    /// The parts tiktoken's merging of `token`'s bytes ends with when only merges of rank
    /// below `max_rank` may apply (the lowest-ranked adjacent pair first, leftmost on ties).
    fn bpe_parts<'a>(
        &self,
        index: &HashMap<&'a [u8], usize>,
        token: &'a [u8],
        max_rank: usize,
    ) -> Vec<&'a [u8]> {
        let mut parts: Vec<&[u8]> = (0..token.len()).map(|i| &token[i..i + 1]).collect();
        // parts are always contiguous slices of `token`
        let offset = |p: &[u8]| p.as_ptr() as usize - token.as_ptr() as usize;
        loop {
            let mut best: Option<(usize, usize)> = None; // (rank, index)
            for i in 0..parts.len().saturating_sub(1) {
                let start = offset(parts[i]);
                let end = offset(parts[i + 1]) + parts[i + 1].len();
                if let Some(&r) = index.get(&token[start..end]) {
                    if r < max_rank && best.is_none_or(|(br, _)| r < br) {
                        best = Some((r, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            let start = offset(parts[i]);
            let end = offset(parts[i + 1]) + parts[i + 1].len();
            parts[i] = &token[start..end];
            parts.remove(i + 1);
        }
        parts
    }
}

/// GLM-4's GGUF vocabulary (see the module comment).
pub fn glm4_vocab(m: &TiktokenModel, padded_vocab_size: usize) -> Result<BpeVocab, ConvertError> {
    let n = m.ranks.len();
    let needed = n + GLM4_SPECIALS.len();
    if padded_vocab_size < needed {
        return Err(ConvertError::Input {
            path: m.path.clone(),
            what: format!(
                "{n} tokens + {} specials do not fit in padded_vocab_size {padded_vocab_size} \
                 of config.json",
                GLM4_SPECIALS.len()
            ),
        });
    }
    let chars = gguf::names::byte_level_chars();
    let to_string = |b: &[u8]| -> String { b.iter().map(|&x| chars[x as usize]).collect() };
    let index: HashMap<&[u8], usize> = m
        .ranks
        .iter()
        .enumerate()
        .map(|(r, t)| (t.as_slice(), r))
        .collect();
    let mut v = BpeVocab {
        tokens: Vec::with_capacity(padded_vocab_size),
        token_types: Vec::with_capacity(padded_vocab_size),
        merges: Vec::with_capacity(n),
    };
    for (rank, token) in m.ranks.iter().enumerate() {
        v.tokens.push(to_string(token));
        v.token_types.push(TOKEN_TYPE_NORMAL);
        if token.len() > 1 {
            let parts = m.bpe_parts(&index, token, rank);
            v.merges.push(
                parts
                    .iter()
                    .map(|p| to_string(p))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    for s in GLM4_SPECIALS {
        v.tokens.push(s.to_string());
        v.token_types.push(TOKEN_TYPE_CONTROL);
    }
    for id in needed..padded_vocab_size {
        v.tokens.push(format!("[PAD{id}]"));
        v.token_types.push(TOKEN_TYPE_UNUSED);
    }
    Ok(v)
}
