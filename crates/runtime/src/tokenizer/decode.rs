//! Ids → text: SentencePiece's run decoding (ChatGLM2/3) and byte-level UTF-8 (GLM-4), whole or
//! streamed.

use super::*;

/// Decoding state of one run of SentencePiece ids (between ChatGLM3 specials), following
/// `SentencePieceProcessor::Decode`: `is_bos_ws` (a leading `▁` is still to be dropped) ends
/// after the first piece that dropped one or after any text; bytes are collected and turned
/// into characters, U+FFFD for each byte that does not start a valid UTF-8 sequence.
/// Characters are emitted as soon as they are complete, which gives the same text as
/// decoding the whole run at once.
#[derive(Debug)]
pub(super) struct RunState {
    is_bos_ws: bool,
    bos_ws_seen: bool,
    has_text: bool,
    bytes: Vec<u8>,
    /// What `is_bos_ws` starts as in each run (false without `add_dummy_prefix`).
    start_bos_ws: bool,
    /// The pending bytes are byte-level BPE bytes (GLM-4): decoded as Python's
    /// `bytes.decode("utf-8", errors="replace")`, not SentencePiece's byte by byte.
    lossy: bool,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            is_bos_ws: true,
            bos_ws_seen: false,
            has_text: false,
            bytes: Vec::new(),
            start_bos_ws: true,
            lossy: false,
        }
    }
}

/// Length of the UTF-8 sequence a lead byte announces (1 for bytes that cannot lead one).
fn utf8_need(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// SentencePiece's `DecodeUTF8`: the length of the valid character at the start of `b`.
fn utf8_char_len(b: &[u8]) -> Option<usize> {
    let n = utf8_need(b[0]);
    if b[0] < 0x80 {
        return Some(1);
    }
    if n == 1 || b.len() < n {
        return None;
    }
    std::str::from_utf8(&b[..n]).ok().map(|_| n)
}

impl RunState {
    /// A run's state; `strip` drops the first `▁` of each run (SentencePiece's dummy prefix).
    pub(super) fn new(strip: bool) -> Self {
        RunState {
            is_bos_ws: strip,
            start_bos_ws: strip,
            ..RunState::default()
        }
    }

    /// Emits the complete characters among the pending bytes; all of them when `all`.
    fn emit_bytes(&mut self, all: bool, out: &mut String) {
        let mut i = 0;
        while i < self.bytes.len() {
            let rest = &self.bytes[i..];
            if !all && rest.len() < utf8_need(rest[0]) {
                break;
            }
            match utf8_char_len(rest) {
                Some(n) => {
                    // Valid by construction.
                    out.push_str(std::str::from_utf8(&rest[..n]).unwrap_or("\u{FFFD}"));
                    i += n;
                }
                None => {
                    out.push(REPLACEMENT);
                    i += 1;
                }
            }
            self.has_text = true;
        }
        self.bytes.drain(..i);
    }

    /// Emits the pending byte-level bytes as UTF-8, one U+FFFD per maximal invalid
    /// subsequence; an incomplete character at the end waits unless `all`.
    fn emit_lossy(&mut self, all: bool, out: &mut String) {
        loop {
            match std::str::from_utf8(&self.bytes) {
                Ok(text) => {
                    out.push_str(text);
                    self.bytes.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.bytes[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(REPLACEMENT);
                            self.bytes.drain(..valid + n);
                        }
                        None if all => {
                            out.push(REPLACEMENT);
                            self.bytes.clear();
                            return;
                        }
                        None => {
                            self.bytes.drain(..valid);
                            return;
                        }
                    }
                }
            }
        }
    }

    pub(super) fn push(&mut self, piece: &Piece, out: &mut String) {
        match piece {
            Piece::Byte(b) => {
                self.bytes.push(*b);
                self.emit_bytes(false, out);
            }
            Piece::Bytes(b) => {
                self.lossy = true;
                self.bytes.extend_from_slice(b);
                self.emit_lossy(false, out);
            }
            Piece::ChatSpecial(name) => {
                self.flush(out);
                out.push_str(name);
                *self = RunState {
                    is_bos_ws: self.start_bos_ws,
                    start_bos_ws: self.start_bos_ws,
                    ..RunState::default()
                };
            }
            Piece::Padding => {}
            _ => {
                self.flush(out);
                if self.bos_ws_seen || self.has_text {
                    self.is_bos_ws = false;
                }
                let (surface, seen): (&str, bool) = match piece {
                    Piece::Control => ("", false),
                    Piece::Unknown => (UNK_SURFACE, false),
                    Piece::Text(t) => match t.strip_prefix(SPACE_SYMBOL) {
                        Some(rest) if self.is_bos_ws => (rest, true),
                        _ => (t.as_str(), false),
                    },
                    _ => ("", false),
                };
                self.bos_ws_seen = seen;
                if !surface.is_empty() {
                    for c in surface.chars() {
                        out.push(if c == SPACE_SYMBOL { ' ' } else { c });
                    }
                    self.has_text = true;
                }
            }
        }
    }

    pub(super) fn flush(&mut self, out: &mut String) {
        if self.lossy {
            self.emit_lossy(true, out);
        } else {
            self.emit_bytes(true, out);
        }
    }
}

/// Incremental decoding for streaming output: `push` one id at a time and get back only
/// complete text; byte-fallback pieces of one character (`<0xE4><0xBD><0xA0>`) are held until
/// the character is complete. The concatenation of everything returned (including `finish`)
/// equals [`Tokenizer::decode`] of the same ids. Ids that `decode` rejects (out of range,
/// `[PAD…]`) produce no text here.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    run: RunState,
}

impl<'a> StreamDecoder<'a> {
    pub(super) fn new(tok: &'a Tokenizer, run: RunState) -> Self {
        StreamDecoder { tok, run }
    }

    pub fn push(&mut self, id: u32) -> String {
        let mut out = String::new();
        if let Some(piece) = self.tok.pieces.get(id as usize) {
            self.run.push(piece, &mut out);
        }
        out
    }

    /// Flushes held bytes (an incomplete character becomes U+FFFD per byte, as in `decode`).
    pub fn finish(mut self) -> String {
        let mut out = String::new();
        self.run.flush(&mut out);
        out
    }
}
