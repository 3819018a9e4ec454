//! GLM-4's tokenizer: tiktoken's byte-level BPE on the GGUF vocabulary (see the parent module).

use super::*;

/// tiktoken's `pat_str` of THUDM's `ChatGLM4Tokenizer` (the cl100k pattern).
const GLM4_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer {
    /// Builds GLM-4's tokenizer from `tokenizer.ggml.tokens` and `.token_type` (`gpt2` model):
    /// the NORMAL entries are the tiktoken ranks in order, in byte-level spelling.
    pub fn from_byte_level_vocab(tokens: &[String], types: &[i32]) -> Result<Self, TokenizerError> {
        if tokens.len() != types.len() {
            return Err(TokenizerError::Vocab(format!(
                "{} tokens but {} token types",
                tokens.len(),
                types.len()
            )));
        }
        if tokens.is_empty() || tokens.len() > u32::MAX as usize {
            return Err(TokenizerError::Vocab(format!(
                "{} tokens is not a vocabulary",
                tokens.len()
            )));
        }
        let chars = gguf::names::byte_level_chars();
        let mut byte_of: HashMap<char, u8> = HashMap::with_capacity(256);
        for (b, &c) in chars.iter().enumerate() {
            byte_of.insert(c, b as u8);
        }
        let by_name = names_index(tokens, types);
        let (specials, is_special) = find_specials(&by_name, types, true)?;
        let mut pieces = Vec::with_capacity(tokens.len());
        let mut vocab: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
        let mut ranks: HashMap<Vec<u8>, u32> = HashMap::with_capacity(tokens.len());
        let mut normal: Vec<(u32, Vec<u8>)> = Vec::with_capacity(tokens.len());
        for (id, (t, &kind)) in tokens.iter().zip(types).enumerate() {
            let piece = match kind {
                TOKEN_TYPE_NORMAL | TOKEN_TYPE_USER_DEFINED => {
                    let bytes: Option<Vec<u8>> =
                        t.chars().map(|c| byte_of.get(&c).copied()).collect();
                    let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
                        return Err(TokenizerError::Vocab(format!(
                            "token {id} ({t:?}) is not in byte-level spelling"
                        )));
                    };
                    if let Some(&first) = vocab.get(t.as_str()) {
                        return Err(TokenizerError::Duplicate {
                            token: t.clone(),
                            first: first as usize,
                            second: id,
                        });
                    }
                    vocab.insert(t.clone(), id as u32);
                    ranks.insert(bytes.clone(), id as u32);
                    normal.push((id as u32, bytes.clone()));
                    Piece::Bytes(bytes)
                }
                TOKEN_TYPE_CONTROL if is_special(t) => Piece::ChatSpecial(t.clone()),
                TOKEN_TYPE_CONTROL => Piece::Control,
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
        }
        if let Some(b) = (0..=255u8).find(|b| !ranks.contains_key(&vec![*b])) {
            return Err(TokenizerError::Vocab(format!(
                "byte 0x{b:02X} has no token; a byte-level vocabulary has all 256"
            )));
        }
        // Hugging Face's tiktoken converter: every split of a token into two tokens is a
        // merge with the token's rank; within a token by the parts' ranks; all by rank.
        let mut merges: Vec<(u32, u32, u32)> = Vec::new(); // (rank, left, right)
        for (rank, bytes) in &normal {
            let start = merges.len();
            for i in 1..bytes.len() {
                if let (Some(&l), Some(&r)) = (ranks.get(&bytes[..i]), ranks.get(&bytes[i..])) {
                    merges.push((*rank, l, r));
                }
            }
            merges[start..].sort_by_key(|&(_, l, r)| (l, r));
        }
        merges.sort_by_key(|&(rank, _, _)| rank);
        let merges: Vec<(String, String)> = merges
            .into_iter()
            .map(|(_, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone()))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
        // compiled once per process: its Unicode classes make a large automaton
        static SPLIT: std::sync::OnceLock<Result<fancy_regex::Regex, String>> =
            std::sync::OnceLock::new();
        let split = SPLIT
            .get_or_init(|| fancy_regex::Regex::new(GLM4_PATTERN).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| TokenizerError::Bpe(e.clone()))?;
        Ok(Tokenizer {
            tokens: tokens.to_vec(),
            types: types.to_vec(),
            pieces,
            by_name,
            encoder: Encoder::ByteLevel {
                bpe,
                split,
                chars: Box::new(chars),
            },
            specials,
            chat_format: ChatFormat::Glm4,
            vocab_format: ChatFormat::Glm4,
            grammars: Default::default(),
        })
    }
}

/// tiktoken's `encode_ordinary`: split by the pattern; a piece that is a token is that token,
/// the others go through BPE.
pub(super) fn encode_byte_level(
    bpe: &BPE,
    split: &fancy_regex::Regex,
    chars: &[char; 256],
    text: &str,
) -> Result<Vec<u32>, TokenizerError> {
    let mut ids = Vec::with_capacity(text.len() / 3 + 1);
    let mut piece = String::new();
    for m in split.find_iter(text) {
        let m = m.map_err(|e| TokenizerError::Bpe(format!("pre-tokenizer: {e}")))?;
        piece.clear();
        piece.extend(m.as_str().bytes().map(|b| chars[b as usize]));
        match bpe.token_to_id(&piece) {
            Some(id) => ids.push(id),
            None => bpe_into(bpe, &piece, &mut ids)?,
        }
    }
    Ok(ids)
}
