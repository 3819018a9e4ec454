//! SentencePiece `ModelProto` (tokenizer.model) reader and the ChatGLM3 GGUF vocabulary.
//!
//! The protobuf is parsed by hand: a small varint / length-delimited reader in which every
//! length is bounded by the bytes that remain, so a damaged file gives a one-line error
//! naming the file and what was expected, never a panic or a huge allocation.
//!
//! Only the fields a tokenizer needs are kept; every other field is skipped by wire type.
//! Field numbers follow `sentencepiece_model.proto`.

use std::path::Path;

/// SentencePiece piece types (`ModelProto.SentencePiece.Type`) are the GGUF token types.
pub use gguf::names::{
    CHATGLM3_SPECIALS, TOKEN_TYPE_BYTE, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN,
    TOKEN_TYPE_UNUSED, TOKEN_TYPE_USER_DEFINED,
};

/// `TrainerSpec.ModelType`.
pub const MODEL_TYPE_UNIGRAM: i32 = 1;
pub const MODEL_TYPE_BPE: i32 = 2;
pub const MODEL_TYPE_WORD: i32 = 3;
pub const MODEL_TYPE_CHAR: i32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum SpmError {
    #[error("{file}: cannot read: {err}")]
    Io { file: String, err: std::io::Error },
    #[error("{file}: truncated protobuf at byte {offset}: expected {expected}")]
    Truncated {
        file: String,
        offset: usize,
        expected: &'static str,
    },
    #[error("{file}: bad varint at byte {offset}: more than 10 bytes or over 64 bits")]
    BadVarint { file: String, offset: usize },
    #[error(
        "{file}: length {len} at byte {offset} exceeds the {remaining} bytes remaining in {context}"
    )]
    LengthTooLarge {
        file: String,
        offset: usize,
        len: u64,
        remaining: usize,
        context: &'static str,
    },
    #[error("{file}: bad protobuf key at byte {offset}: {detail}")]
    BadKey {
        file: String,
        offset: usize,
        detail: String,
    },
    #[error("{file}: {context} field {field} at byte {offset}: expected wire type {expected}, found {found}")]
    WrongWireType {
        file: String,
        offset: usize,
        context: &'static str,
        field: u32,
        expected: u8,
        found: u8,
    },
    #[error("{file}: {what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        file: String,
        offset: usize,
        what: &'static str,
    },
    #[error("{file}: model_type is {found} ({name}), expected BPE (2): only BPE SentencePiece models are supported")]
    WrongModelType {
        file: String,
        found: i32,
        name: &'static str,
    },
    #[error("{file}: piece {index} ({piece:?}) has unknown type {value}, expected 1..=6")]
    BadPieceType {
        file: String,
        index: usize,
        piece: String,
        value: i64,
    },
    #[error("{file}: piece {index} is empty")]
    EmptyPiece { file: String, index: usize },
    #[error("{file}: piece {index} ({piece:?}) is already defined as piece {first}")]
    DuplicatePiece {
        file: String,
        index: usize,
        first: usize,
        piece: String,
    },
    #[error("{file}: byte piece {index} ({piece:?}) is not of the form <0xXX>")]
    BadBytePiece {
        file: String,
        index: usize,
        piece: String,
    },
    #[error("{file}: has BYTE pieces but trainer_spec.byte_fallback is false")]
    BytePiecesWithoutFallback { file: String },
    #[error("{file}: no pieces")]
    NoPieces { file: String },
    #[error("{file}: padded_vocab_size {padded} is smaller than the {n_pieces} SentencePiece pieces + 9 ChatGLM3 special tokens ({needed})")]
    VocabTooSmall {
        file: String,
        padded: usize,
        n_pieces: usize,
        needed: usize,
    },
    #[error("{file}: unsupported normalizer for the ChatGLM3 tokenizer: {detail}")]
    UnsupportedNormalizer { file: String, detail: String },
}

/// One SentencePiece piece.
#[derive(Clone, Debug, PartialEq)]
pub struct SpmPiece {
    pub piece: String,
    pub score: f32,
    /// `TOKEN_TYPE_*` (1..=6).
    pub kind: i32,
}

/// The `TrainerSpec` fields that matter for encoding, with the proto defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerSpec {
    pub model_type: i32,
    pub vocab_size: i32,
    pub byte_fallback: bool,
    pub split_digits: bool,
    pub split_by_whitespace: bool,
    pub split_by_number: bool,
    pub split_by_unicode_script: bool,
    pub treat_whitespace_as_suffix: bool,
    pub allow_whitespace_only_pieces: bool,
    pub max_sentencepiece_length: i32,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
    pub unk_piece: String,
    pub bos_piece: String,
    pub eos_piece: String,
    pub pad_piece: String,
    pub unk_surface: String,
    pub control_symbols: Vec<String>,
    pub user_defined_symbols: Vec<String>,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        TrainerSpec {
            model_type: MODEL_TYPE_UNIGRAM,
            vocab_size: 8000,
            byte_fallback: false,
            split_digits: false,
            split_by_whitespace: true,
            split_by_number: true,
            split_by_unicode_script: true,
            treat_whitespace_as_suffix: false,
            allow_whitespace_only_pieces: false,
            max_sentencepiece_length: 16,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            unk_piece: "<unk>".into(),
            bos_piece: "<s>".into(),
            eos_piece: "</s>".into(),
            pad_piece: "<pad>".into(),
            unk_surface: " \u{2047} ".into(),
            control_symbols: Vec::new(),
            user_defined_symbols: Vec::new(),
        }
    }
}

/// `NormalizerSpec`, with the proto defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct NormalizerSpec {
    pub name: String,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
    pub normalization_rule_tsv: String,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        NormalizerSpec {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
            normalization_rule_tsv: String::new(),
        }
    }
}

/// A parsed SentencePiece BPE model.
#[derive(Clone, Debug)]
pub struct SpmModel {
    /// Name used in error messages (the file path as given).
    pub file: String,
    pub pieces: Vec<SpmPiece>,
    pub trainer: TrainerSpec,
    pub normalizer: NormalizerSpec,
    pub denormalizer: Option<NormalizerSpec>,
}

/// The GGUF tokenizer arrays (`tokenizer.ggml.tokens`, `.scores`, `.token_type`).
#[derive(Clone, Debug, PartialEq)]
pub struct GgufVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub token_types: Vec<i32>,
    /// SentencePiece's `add_dummy_prefix` (false only for CodeGeeX2 among the GLMs).
    pub add_space_prefix: bool,
}

// ----------------------------------------------------------------------------- protobuf reader

const WT_VARINT: u8 = 0;
const WT_FIXED64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_FIXED32: u8 = 5;

/// A cursor over one (sub)message. `base` is the absolute file offset of `data[0]`.
struct Reader<'a> {
    file: &'a str,
    data: &'a [u8],
    pos: usize,
    base: usize,
    context: &'static str,
}

impl<'a> Reader<'a> {
    fn new(file: &'a str, data: &'a [u8], base: usize, context: &'static str) -> Self {
        Reader {
            file,
            data,
            pos: 0,
            base,
            context,
        }
    }

    fn at(&self) -> usize {
        self.base + self.pos
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn truncated(&self, expected: &'static str) -> SpmError {
        SpmError::Truncated {
            file: self.file.to_string(),
            offset: self.at(),
            expected,
        }
    }

    fn varint(&mut self, expected: &'static str) -> Result<u64, SpmError> {
        let start = self.at();
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.data.get(self.pos) else {
                return Err(self.truncated(expected));
            };
            self.pos += 1;
            let bits = u64::from(b & 0x7f);
            if i == 9 && (b & 0x7f) > 1 {
                return Err(SpmError::BadVarint {
                    file: self.file.to_string(),
                    offset: start,
                });
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(SpmError::BadVarint {
            file: self.file.to_string(),
            offset: start,
        })
    }

    fn fixed32(&mut self, expected: &'static str) -> Result<u32, SpmError> {
        let b = self.take(4, expected)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn take(&mut self, n: usize, expected: &'static str) -> Result<&'a [u8], SpmError> {
        if self.data.len() - self.pos < n {
            return Err(self.truncated(expected));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads a length prefix and returns the bytes and their absolute offset.
    fn len_delimited(&mut self) -> Result<(&'a [u8], usize), SpmError> {
        let at = self.at();
        let len = self.varint("a length prefix")?;
        let remaining = self.data.len() - self.pos;
        if len > remaining as u64 {
            return Err(SpmError::LengthTooLarge {
                file: self.file.to_string(),
                offset: at,
                len,
                remaining,
                context: self.context,
            });
        }
        let start = self.at();
        let s = self.take(len as usize, "length-delimited bytes")?;
        Ok((s, start))
    }

    /// Reads a field key: (field number, wire type, offset of the key).
    fn key(&mut self) -> Result<(u32, u8, usize), SpmError> {
        let at = self.at();
        let k = self.varint("a field key")?;
        let field = k >> 3;
        let wt = (k & 7) as u8;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(SpmError::BadKey {
                file: self.file.to_string(),
                offset: at,
                detail: format!("field number {field} in {}", self.context),
            });
        }
        Ok((field as u32, wt, at))
    }

    fn skip(&mut self, field: u32, wt: u8, at: usize) -> Result<(), SpmError> {
        match wt {
            WT_VARINT => {
                self.varint("a varint value")?;
            }
            WT_FIXED64 => {
                self.take(8, "an 8-byte fixed64 value")?;
            }
            WT_LEN => {
                self.len_delimited()?;
            }
            WT_FIXED32 => {
                self.take(4, "a 4-byte fixed32 value")?;
            }
            _ => {
                return Err(SpmError::BadKey {
                    file: self.file.to_string(),
                    offset: at,
                    detail: format!(
                        "unsupported wire type {wt} for field {field} in {}",
                        self.context
                    ),
                })
            }
        }
        Ok(())
    }

    fn expect_wt(&self, field: u32, wt: u8, expected: u8, at: usize) -> Result<(), SpmError> {
        if wt != expected {
            return Err(SpmError::WrongWireType {
                file: self.file.to_string(),
                offset: at,
                context: self.context,
                field,
                expected,
                found: wt,
            });
        }
        Ok(())
    }

    fn string(&mut self, what: &'static str) -> Result<String, SpmError> {
        let (b, at) = self.len_delimited()?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(SpmError::InvalidUtf8 {
                file: self.file.to_string(),
                offset: at,
                what,
            }),
        }
    }

    fn int32(&mut self) -> Result<i32, SpmError> {
        // int32 / enum: negative values are sign-extended to 64 bits on the wire.
        Ok(self.varint("a varint value")? as i64 as i32)
    }

    fn boolean(&mut self) -> Result<bool, SpmError> {
        Ok(self.varint("a varint value")? != 0)
    }
}

// ----------------------------------------------------------------------------- messages

fn parse_piece(file: &str, data: &[u8], base: usize, index: usize) -> Result<SpmPiece, SpmError> {
    let mut r = Reader::new(file, data, base, "SentencePiece");
    let mut piece = SpmPiece {
        piece: String::new(),
        score: 0.0,
        kind: TOKEN_TYPE_NORMAL,
    };
    let mut raw_type: i64 = i64::from(TOKEN_TYPE_NORMAL);
    while !r.done() {
        let (field, wt, at) = r.key()?;
        match field {
            1 => {
                r.expect_wt(field, wt, WT_LEN, at)?;
                piece.piece = r.string("piece string")?;
            }
            2 => {
                r.expect_wt(field, wt, WT_FIXED32, at)?;
                piece.score = f32::from_bits(r.fixed32("a 4-byte float score")?);
            }
            3 => {
                r.expect_wt(field, wt, WT_VARINT, at)?;
                raw_type = r.varint("a varint piece type")? as i64;
            }
            _ => r.skip(field, wt, at)?,
        }
    }
    if !(1..=6).contains(&raw_type) {
        return Err(SpmError::BadPieceType {
            file: file.to_string(),
            index,
            piece: piece.piece,
            value: raw_type,
        });
    }
    piece.kind = raw_type as i32;
    Ok(piece)
}

fn parse_trainer(file: &str, data: &[u8], base: usize) -> Result<TrainerSpec, SpmError> {
    let mut r = Reader::new(file, data, base, "TrainerSpec");
    let mut t = TrainerSpec::default();
    while !r.done() {
        let (field, wt, at) = r.key()?;
        match field {
            // varint fields
            3 | 4 | 20 | 21 | 22 | 23 | 24 | 25 | 26 | 35 | 40 | 41 | 42 | 43 => {
                r.expect_wt(field, wt, WT_VARINT, at)?;
                match field {
                    3 => t.model_type = r.int32()?,
                    4 => t.vocab_size = r.int32()?,
                    20 => t.max_sentencepiece_length = r.int32()?,
                    21 => t.split_by_unicode_script = r.boolean()?,
                    22 => t.split_by_whitespace = r.boolean()?,
                    23 => t.split_by_number = r.boolean()?,
                    24 => t.treat_whitespace_as_suffix = r.boolean()?,
                    25 => t.split_digits = r.boolean()?,
                    26 => t.allow_whitespace_only_pieces = r.boolean()?,
                    35 => t.byte_fallback = r.boolean()?,
                    40 => t.unk_id = r.int32()?,
                    41 => t.bos_id = r.int32()?,
                    42 => t.eos_id = r.int32()?,
                    _ => t.pad_id = r.int32()?,
                }
            }
            // string fields
            30 | 31 | 44 | 45 | 46 | 47 | 48 => {
                r.expect_wt(field, wt, WT_LEN, at)?;
                let s = r.string("TrainerSpec string")?;
                match field {
                    30 => t.control_symbols.push(s),
                    31 => t.user_defined_symbols.push(s),
                    44 => t.unk_surface = s,
                    45 => t.unk_piece = s,
                    46 => t.bos_piece = s,
                    47 => t.eos_piece = s,
                    _ => t.pad_piece = s,
                }
            }
            _ => r.skip(field, wt, at)?,
        }
    }
    Ok(t)
}

fn parse_normalizer(file: &str, data: &[u8], base: usize) -> Result<NormalizerSpec, SpmError> {
    let mut r = Reader::new(file, data, base, "NormalizerSpec");
    let mut n = NormalizerSpec::default();
    while !r.done() {
        let (field, wt, at) = r.key()?;
        match field {
            1 => {
                r.expect_wt(field, wt, WT_LEN, at)?;
                n.name = r.string("normalizer name")?;
            }
            2 => {
                r.expect_wt(field, wt, WT_LEN, at)?;
                n.precompiled_charsmap = r.len_delimited()?.0.to_vec();
            }
            3 => {
                r.expect_wt(field, wt, WT_VARINT, at)?;
                n.add_dummy_prefix = r.boolean()?;
            }
            4 => {
                r.expect_wt(field, wt, WT_VARINT, at)?;
                n.remove_extra_whitespaces = r.boolean()?;
            }
            5 => {
                r.expect_wt(field, wt, WT_VARINT, at)?;
                n.escape_whitespaces = r.boolean()?;
            }
            6 => {
                r.expect_wt(field, wt, WT_LEN, at)?;
                n.normalization_rule_tsv = r.string("normalization_rule_tsv")?;
            }
            _ => r.skip(field, wt, at)?,
        }
    }
    Ok(n)
}

fn model_type_name(t: i32) -> &'static str {
    match t {
        MODEL_TYPE_UNIGRAM => "UNIGRAM",
        MODEL_TYPE_BPE => "BPE",
        MODEL_TYPE_WORD => "WORD",
        MODEL_TYPE_CHAR => "CHAR",
        _ => "unknown",
    }
}

pub use gguf::names::byte_piece_value;

impl SpmModel {
    /// Reads and parses a `tokenizer.model` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SpmError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|err| SpmError::Io {
            file: name.clone(),
            err,
        })?;
        Self::from_bytes(&bytes, &name)
    }

    /// Parses a serialized `ModelProto`; `file` names it in error messages.
    pub fn from_bytes(data: &[u8], file: &str) -> Result<Self, SpmError> {
        let mut r = Reader::new(file, data, 0, "ModelProto");
        let mut pieces = Vec::new();
        let mut trainer = TrainerSpec::default();
        let mut normalizer = NormalizerSpec::default();
        let mut denormalizer = None;
        while !r.done() {
            let (field, wt, at) = r.key()?;
            match field {
                1..=3 | 5 => {
                    r.expect_wt(field, wt, WT_LEN, at)?;
                    let (sub, base) = r.len_delimited()?;
                    match field {
                        1 => pieces.push(parse_piece(file, sub, base, pieces.len())?),
                        2 => trainer = parse_trainer(file, sub, base)?,
                        3 => normalizer = parse_normalizer(file, sub, base)?,
                        _ => denormalizer = Some(parse_normalizer(file, sub, base)?),
                    }
                }
                _ => r.skip(field, wt, at)?,
            }
        }

        if trainer.model_type != MODEL_TYPE_BPE {
            return Err(SpmError::WrongModelType {
                file: file.to_string(),
                found: trainer.model_type,
                name: model_type_name(trainer.model_type),
            });
        }
        if pieces.is_empty() {
            return Err(SpmError::NoPieces {
                file: file.to_string(),
            });
        }
        let mut seen = std::collections::HashMap::with_capacity(pieces.len());
        let mut has_bytes = false;
        for (index, p) in pieces.iter().enumerate() {
            if p.piece.is_empty() {
                return Err(SpmError::EmptyPiece {
                    file: file.to_string(),
                    index,
                });
            }
            if let Some(&first) = seen.get(p.piece.as_str()) {
                return Err(SpmError::DuplicatePiece {
                    file: file.to_string(),
                    index,
                    first,
                    piece: p.piece.clone(),
                });
            }
            seen.insert(p.piece.as_str(), index);
            if p.kind == TOKEN_TYPE_BYTE {
                has_bytes = true;
                if byte_piece_value(&p.piece).is_none() {
                    return Err(SpmError::BadBytePiece {
                        file: file.to_string(),
                        index,
                        piece: p.piece.clone(),
                    });
                }
            }
        }
        if has_bytes && !trainer.byte_fallback {
            return Err(SpmError::BytePiecesWithoutFallback {
                file: file.to_string(),
            });
        }
        Ok(SpmModel {
            file: file.to_string(),
            pieces,
            trainer,
            normalizer,
            denormalizer,
        })
    }

    /// Checks that the normalizer is the one glm-runtime's tokenizer implements (and that
    /// ChatGLM3 uses): no character map, a dummy `▁` prefix, spaces escaped as `▁`, extra
    /// whitespace kept, byte fallback on. The GGUF vocabulary does not record these settings.
    pub fn check_chatglm3_normalizer(&self) -> Result<(), SpmError> {
        let n = &self.normalizer;
        let bad = |detail: String| SpmError::UnsupportedNormalizer {
            file: self.file.clone(),
            detail,
        };
        if !n.precompiled_charsmap.is_empty() {
            return Err(bad(format!(
                "precompiled_charsmap of {} bytes (rule {:?}); expected none (identity)",
                n.precompiled_charsmap.len(),
                n.name
            )));
        }
        // add_dummy_prefix may be either: ChatGLM2/3 have it, CodeGeeX2 (the same model
        // otherwise) does not; GGUF's tokenizer.ggml.add_space_prefix carries it.
        if n.remove_extra_whitespaces {
            return Err(bad(
                "remove_extra_whitespaces is true, expected false".into()
            ));
        }
        if !n.escape_whitespaces {
            return Err(bad("escape_whitespaces is false, expected true".into()));
        }
        if self.trainer.treat_whitespace_as_suffix {
            return Err(bad(
                "treat_whitespace_as_suffix is true, expected false".into()
            ));
        }
        if !self.trainer.byte_fallback {
            return Err(bad("byte_fallback is false, expected true".into()));
        }
        if let Some(d) = &self.denormalizer {
            if !d.precompiled_charsmap.is_empty() {
                return Err(bad(
                    "a denormalizer character map is present; expected none".into(),
                ));
            }
        }
        Ok(())
    }
}

/// The ChatGLM3 GGUF vocabulary, as llama.cpp's `convert_hf_to_gguf.py` (`set_vocab_chatglm3`)
/// builds it: one entry per id below `padded_vocab_size`.
///
/// * ids `0..n_pieces`: the SentencePiece pieces with their scores; ids 0, 1, 2 are renamed
///   `<unk>`, `<bos>`, `<eos>`; types UNKNOWN / CONTROL / UNUSED / BYTE from the piece, every
///   other piece (USER_DEFINED included, as llama.cpp does) NORMAL;
/// * ids `n_pieces..n_pieces+9`: [`CHATGLM3_SPECIALS`], CONTROL, score 0;
/// * the rest: `[PAD{id}]`, UNUSED, score 0.
pub fn chatglm3_vocab(model: &SpmModel, padded_vocab_size: usize) -> Result<GgufVocab, SpmError> {
    spm_vocab(model, padded_vocab_size, &CHATGLM3_SPECIALS)
}

/// [`chatglm3_vocab`] with another list of specials after the pieces (ChatGLM2's five).
pub fn spm_vocab(
    model: &SpmModel,
    padded_vocab_size: usize,
    specials: &[&str],
) -> Result<GgufVocab, SpmError> {
    let n = model.pieces.len();
    let needed = n + specials.len();
    if padded_vocab_size < needed {
        return Err(SpmError::VocabTooSmall {
            file: model.file.clone(),
            padded: padded_vocab_size,
            n_pieces: n,
            needed,
        });
    }
    let mut v = GgufVocab {
        tokens: Vec::with_capacity(padded_vocab_size),
        scores: Vec::with_capacity(padded_vocab_size),
        token_types: Vec::with_capacity(padded_vocab_size),
        add_space_prefix: model.normalizer.add_dummy_prefix,
    };
    for (id, p) in model.pieces.iter().enumerate() {
        let name = match id {
            0 => "<unk>".to_string(),
            1 => "<bos>".to_string(),
            2 => "<eos>".to_string(),
            _ => p.piece.clone(),
        };
        let kind = match p.kind {
            TOKEN_TYPE_UNKNOWN | TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNUSED | TOKEN_TYPE_BYTE => p.kind,
            _ => TOKEN_TYPE_NORMAL,
        };
        v.tokens.push(name);
        v.scores.push(p.score);
        v.token_types.push(kind);
    }
    for s in specials {
        v.tokens.push(s.to_string());
        v.scores.push(0.0);
        v.token_types.push(TOKEN_TYPE_CONTROL);
    }
    for id in needed..padded_vocab_size {
        v.tokens.push(format!("[PAD{id}]"));
        v.scores.push(0.0);
        v.token_types.push(TOKEN_TYPE_UNUSED);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_model_path() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/reference/chatglm3/tokenizer.model")
    }

    // --- tiny protobuf writer for handcrafted models
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn key(field: u32, wt: u8, out: &mut Vec<u8>) {
        varint((u64::from(field) << 3) | u64::from(wt), out);
    }
    fn len_field(field: u32, payload: &[u8], out: &mut Vec<u8>) {
        key(field, WT_LEN, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    fn piece(s: &str, score: f32, kind: i32) -> Vec<u8> {
        let mut p = Vec::new();
        len_field(1, s.as_bytes(), &mut p);
        key(2, WT_FIXED32, &mut p);
        p.extend_from_slice(&score.to_le_bytes());
        key(3, WT_VARINT, &mut p);
        varint(kind as u64, &mut p);
        p
    }
    fn model(model_type: i32) -> Vec<u8> {
        let mut m = Vec::new();
        for (s, sc, k) in [
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("<0x00>", 0.0, 6),
            ("▁a", -1.0, 1),
            ("b", -2.0, 1),
        ] {
            len_field(1, &piece(s, sc, k), &mut m);
        }
        let mut t = Vec::new();
        key(3, WT_VARINT, &mut t);
        varint(model_type as u64, &mut t);
        key(35, WT_VARINT, &mut t);
        varint(1, &mut t);
        key(43, WT_VARINT, &mut t);
        varint(-1i64 as u64, &mut t); // pad_id = -1, 10-byte varint
        len_field(2, &t, &mut m);
        let mut n = Vec::new();
        len_field(1, b"identity", &mut n);
        key(4, WT_VARINT, &mut n);
        varint(0, &mut n);
        len_field(3, &n, &mut m);
        m
    }

    #[test]
    fn handcrafted_good_model() {
        let m = SpmModel::from_bytes(&model(2), "tiny.model").unwrap();
        assert_eq!(m.pieces.len(), 6);
        assert_eq!(
            m.pieces[4],
            SpmPiece {
                piece: "▁a".into(),
                score: -1.0,
                kind: 1
            }
        );
        assert_eq!(m.trainer.pad_id, -1);
        assert!(m.trainer.byte_fallback);
        assert_eq!(m.normalizer.name, "identity");
        assert!(m.normalizer.add_dummy_prefix);
        assert!(!m.normalizer.remove_extra_whitespaces);
        m.check_chatglm3_normalizer().unwrap();
        let v = chatglm3_vocab(&m, 20).unwrap();
        assert_eq!(v.tokens.len(), 20);
        assert_eq!(&v.tokens[..3], &["<unk>", "<bos>", "<eos>"]);
        assert_eq!(v.tokens[6], "[MASK]");
        assert_eq!(v.tokens[14], "<|observation|>");
        assert_eq!(v.tokens[15], "[PAD15]");
        assert_eq!(v.token_types[..7], [2, 3, 3, 6, 1, 1, 3]);
        assert_eq!(v.token_types[19], 5);
        let e = chatglm3_vocab(&m, 14).unwrap_err().to_string();
        assert_eq!(
            e,
            "tiny.model: padded_vocab_size 14 is smaller than the 6 SentencePiece pieces + 9 ChatGLM3 special tokens (15)"
        );
    }

    #[test]
    fn wrong_model_type() {
        let e = SpmModel::from_bytes(&model(1), "tokenizer.model")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tokenizer.model: model_type is 1 (UNIGRAM), expected BPE (2): only BPE SentencePiece models are supported"
        );
        // no trainer_spec at all: the proto default is UNIGRAM
        let mut m = Vec::new();
        len_field(1, &piece("<unk>", 0.0, 2), &mut m);
        let e = SpmModel::from_bytes(&m, "x.model").unwrap_err().to_string();
        assert!(
            e.starts_with("x.model: model_type is 1 (UNIGRAM), expected BPE (2)"),
            "{e}"
        );
    }

    #[test]
    fn truncated() {
        let full = model(2);
        let e = SpmModel::from_bytes(&full[..full.len() - 3], "tokenizer.model")
            .unwrap_err()
            .to_string();
        // the normalizer message claims more bytes than remain
        assert!(e.starts_with("tokenizer.model: length "), "{e}");
        assert!(e.contains("exceeds the"), "{e}");

        // cut inside a varint key
        let e = SpmModel::from_bytes(&[0x0a, 0x02, 0x0a], "tokenizer.model")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tokenizer.model: length 2 at byte 1 exceeds the 1 bytes remaining in ModelProto"
        );
        let e = SpmModel::from_bytes(&[0x80], "tokenizer.model")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tokenizer.model: truncated protobuf at byte 1: expected a field key"
        );
        // a score cut short inside a piece: pieces { piece: "a" score: <2 bytes> }
        let inner = [0x0a, 0x01, b'a', 0x15, 0x00, 0x00];
        let mut m = Vec::new();
        len_field(1, &inner, &mut m);
        let e = SpmModel::from_bytes(&m, "tokenizer.model")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tokenizer.model: truncated protobuf at byte 6: expected a 4-byte float score"
        );
    }

    #[test]
    fn bad_varint() {
        let mut m = vec![0x18]; // field 3 (normalizer_spec) would be LEN; use an unknown varint field 9
        m[0] = (9 << 3) as u8;
        m.extend_from_slice(&[0xff; 11]);
        let e = SpmModel::from_bytes(&m, "tokenizer.model")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tokenizer.model: bad varint at byte 1: more than 10 bytes or over 64 bits"
        );
        // 10th byte carrying bits above 64
        let mut m = vec![(9 << 3) as u8];
        m.extend_from_slice(&[0xff; 9]);
        m.push(0x02);
        let e = SpmModel::from_bytes(&m, "tokenizer.model")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tokenizer.model: bad varint at byte 1: more than 10 bytes or over 64 bits"
        );
    }

    #[test]
    fn huge_length() {
        let mut m = vec![0x0a];
        varint(u64::MAX >> 1, &mut m);
        let e = SpmModel::from_bytes(&m, "tokenizer.model")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tokenizer.model: length 9223372036854775807 at byte 1 exceeds the 0 bytes remaining in ModelProto"
        );
        // a huge piece string inside a piece message
        let mut inner = vec![0x0a];
        varint(1 << 40, &mut inner);
        let mut m = Vec::new();
        len_field(1, &inner, &mut m);
        let e = SpmModel::from_bytes(&m, "tokenizer.model")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tokenizer.model: length 1099511627776 at byte 3 exceeds the 0 bytes remaining in SentencePiece"
        );
    }

    #[test]
    fn other_errors() {
        // wrong wire type for pieces
        let e = SpmModel::from_bytes(&[0x08, 0x01], "t.model")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t.model: ModelProto field 1 at byte 0: expected wire type 2, found 0"
        );
        // field number 0
        let e = SpmModel::from_bytes(&[0x00], "t.model")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t.model: bad protobuf key at byte 0: field number 0 in ModelProto"
        );
        // group wire type
        let e = SpmModel::from_bytes(&[(7 << 3) | 3], "t.model")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.model: bad protobuf key at byte 0: unsupported wire type 3 for field 7 in ModelProto");
        // bad piece type
        let mut m = Vec::new();
        len_field(1, &piece("x", 0.0, 9), &mut m);
        let e = SpmModel::from_bytes(&m, "t.model").unwrap_err().to_string();
        assert_eq!(
            e,
            "t.model: piece 0 (\"x\") has unknown type 9, expected 1..=6"
        );
        // invalid UTF-8 piece
        let mut inner = Vec::new();
        len_field(1, &[0xff, 0xfe], &mut inner);
        let mut m = Vec::new();
        len_field(1, &inner, &mut m);
        let e = SpmModel::from_bytes(&m, "t.model").unwrap_err().to_string();
        assert_eq!(e, "t.model: piece string at byte 4 is not valid UTF-8");
        // missing file
        let e = SpmModel::from_file("/nonexistent/tokenizer.model")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/nonexistent/tokenizer.model: cannot read: "),
            "{e}"
        );
    }

    #[test]
    fn real_chatglm3_model() {
        let path = real_model_path();
        if !path.exists() {
            eprintln!("skipping: {} not found", path.display());
            return;
        }
        let m = SpmModel::from_file(&path).unwrap();
        assert_eq!(m.pieces.len(), 64789);
        assert_eq!(m.trainer.model_type, MODEL_TYPE_BPE);
        assert!(m.trainer.byte_fallback);
        assert!(m.trainer.split_digits);
        assert_eq!(m.normalizer.name, "identity");
        assert!(m.normalizer.add_dummy_prefix);
        assert!(!m.normalizer.remove_extra_whitespaces);
        assert!(m.normalizer.escape_whitespaces);
        assert!(m.normalizer.precompiled_charsmap.is_empty());
        m.check_chatglm3_normalizer().unwrap();

        let v = chatglm3_vocab(&m, 65024).unwrap();
        assert_eq!(v.tokens.len(), 65024);
        assert_eq!(v.scores.len(), 65024);
        assert_eq!(v.token_types.len(), 65024);
        assert_eq!(&v.tokens[..3], &["<unk>", "<bos>", "<eos>"]);
        assert_eq!(&v.token_types[..3], &[2, 3, 3]);
        for b in 0..256usize {
            assert_eq!(v.tokens[3 + b], format!("<0x{b:02X}>"));
            assert_eq!(v.token_types[3 + b], TOKEN_TYPE_BYTE);
        }
        assert_eq!(v.tokens[259], "▁t");
        assert_eq!(v.token_types[259], TOKEN_TYPE_NORMAL);
        assert_eq!(v.scores[260], -1.0);
        assert_eq!(v.tokens[30910], "▁");
        assert_eq!(v.scores[30910], -30652.0);
        for (i, s) in CHATGLM3_SPECIALS.iter().enumerate() {
            assert_eq!(v.tokens[64789 + i], *s);
            assert_eq!(v.token_types[64789 + i], TOKEN_TYPE_CONTROL);
            assert_eq!(v.scores[64789 + i], 0.0);
        }
        assert_eq!(v.tokens[64798], "[PAD64798]");
        assert_eq!(v.tokens[65023], "[PAD65023]");
        assert!(v.token_types[64798..]
            .iter()
            .all(|&t| t == TOKEN_TYPE_UNUSED));
        let normal = v
            .token_types
            .iter()
            .filter(|&&t| t == TOKEN_TYPE_NORMAL)
            .count();
        assert_eq!(normal, 64530);
        assert!(chatglm3_vocab(&m, 64797).is_err());
        assert_eq!(chatglm3_vocab(&m, 64798).unwrap().tokens.len(), 64798);
    }
}
