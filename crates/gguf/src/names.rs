//! The GGUF contract of the `chatglm` architecture, as llama.cpp defines it: metadata keys and
//! tensor names, plus the mapping from THUDM's Hugging Face tensor names. Converter, quantizer
//! and runtime all use these tables; no other file spells a key or tensor name.

pub const ARCH: &str = "chatglm";

// general.*
pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
pub const GENERAL_NAME: &str = "general.name";
pub const GENERAL_FILE_TYPE: &str = "general.file_type";
pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";
/// ggml quantization format version written by this ggml (GGML_QNT_VERSION).
pub const QUANTIZATION_VERSION: u32 = 2;

// chatglm.* hyperparameters
pub const CONTEXT_LENGTH: &str = "chatglm.context_length";
pub const EMBEDDING_LENGTH: &str = "chatglm.embedding_length";
pub const FEED_FORWARD_LENGTH: &str = "chatglm.feed_forward_length";
pub const BLOCK_COUNT: &str = "chatglm.block_count";
pub const HEAD_COUNT: &str = "chatglm.attention.head_count";
pub const HEAD_COUNT_KV: &str = "chatglm.attention.head_count_kv";
pub const LAYER_NORM_RMS_EPS: &str = "chatglm.attention.layer_norm_rms_epsilon";
pub const ROPE_DIMENSION_COUNT: &str = "chatglm.rope.dimension_count";
pub const ROPE_FREQ_BASE: &str = "chatglm.rope.freq_base";

/// Upper bounds of the integer hyperparameters: (GGUF key, THUDM config.json key, maximum).
/// Far above any GLM model (GLM-4-9B: 40 layers, 4096 wide, 151,552 tokens, 1M context), and
/// low enough that nothing sized by them (name tables, plans, caches) allocates absurdly before
/// the file's own size is checked.
pub const HPARAM_BOUNDS: [(&str, &str, u64); 8] = [
    (CONTEXT_LENGTH, "seq_length", 1 << 24),
    (EMBEDDING_LENGTH, "hidden_size", 1 << 16),
    (FEED_FORWARD_LENGTH, "ffn_hidden_size", 1 << 18),
    (BLOCK_COUNT, "num_layers", 1024),
    (HEAD_COUNT, "num_attention_heads", 1024),
    (HEAD_COUNT_KV, "multi_query_group_num", 1024),
    (ROPE_DIMENSION_COUNT, "kv_channels", 1024),
    ("", "padded_vocab_size", 1 << 22),
];

/// The bound of a hyperparameter named by its GGUF or config.json key (`u32::MAX` if none).
pub fn max_hparam(key: &str) -> u64 {
    HPARAM_BOUNDS
        .iter()
        .find(|(g, h, _)| *g == key || *h == key)
        .map_or(u32::MAX as u64, |b| b.2)
}

// tokenizer.ggml.*
pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
pub const TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
pub const TOKENIZER_MODEL_LLAMA: &str = "llama";
/// GLM-4's byte-level BPE (llama.cpp's name for tiktoken-style vocabularies).
pub const TOKENIZER_MODEL_GPT2: &str = "gpt2";
pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
/// SentencePiece's `add_dummy_prefix` (llama.cpp's name); absent means true.
pub const TOKENIZER_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
pub const TOKENIZER_EOT_ID: &str = "tokenizer.ggml.eot_token_id";
pub const TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
pub const TOKENIZER_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
/// glmtool's own key: the prompt format, written only where the vocabulary does not imply it
/// (see [`ChatFormat::implied`]), so ChatGLM3 and GLM-4 files stay identical to llama.cpp's.
pub const GLMTOOL_CHAT_FORMAT: &str = "glmtool.chat_format";

/// `tokenizer.ggml.token_type` values (the same numbers as SentencePiece's piece types).
pub const TOKEN_TYPE_NORMAL: i32 = 1;
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
pub const TOKEN_TYPE_CONTROL: i32 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
pub const TOKEN_TYPE_UNUSED: i32 = 5;
pub const TOKEN_TYPE_BYTE: i32 = 6;

/// The byte value of a SentencePiece byte piece `<0xXX>` (upper-case hex, as SentencePiece
/// writes them), or None for any other piece.
pub fn byte_piece_value(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2
        || !hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
    {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// ChatGLM3's special tokens, in id order right after the SentencePiece pieces (ids
/// `n_pieces + 0 .. n_pieces + 8`, 64789..64797 for the real model), as THUDM's `SPTokenizer`
/// assigns them.
pub const CHATGLM3_SPECIALS: [&str; 9] = [
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "sop",
    "eop",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
];
pub const TOKENIZER_PRE_CHATGLM: &str = "chatglm-spm";
/// llama.cpp's pre-tokenizer name for GLM-4.
pub const TOKENIZER_PRE_CHATGLM_BPE: &str = "chatglm-bpe";

/// ChatGLM2's (and CodeGeeX2's) specials, after the SentencePiece pieces: no role tokens.
pub const CHATGLM2_SPECIALS: [&str; 5] = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"];

/// GLM-4's specials, after the 151,329 tiktoken ranks, in THUDM's order.
pub const GLM4_SPECIALS: [&str; 14] = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
];

/// GPT-2's byte → printable character map (`bytes_to_unicode`), with which byte-level BPE
/// vocabularies (GLM-4's in GGUF) store token bytes as strings: printable Latin-1 bytes map to
/// themselves, the other 68 to U+0100 onwards in byte order.
pub fn byte_level_chars() -> [char; 256] {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

/// Whether a model name (a `general.name`, or the last part of `_name_or_path`) is one of the
/// family's base or code models: `…-base` (chatglm3-6b-base), `glm-4-9b` without `-chat`,
/// `codegeex2-…`. (CodeGeeX4 is a chat model; "database" is not "-base".)
pub fn is_completion_name(name: &str) -> bool {
    let n = name
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(name)
        .to_ascii_lowercase();
    n.ends_with("-base")
        || n.contains("-base-")
        || n.ends_with("glm-4-9b")
        || n.starts_with("codegeex2")
}

/// How a model's prompts are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChatFormat {
    /// ChatGLM3-6B (and -32k): `[gMASK]sop<|role|>metadata\ncontent…<|assistant|>`.
    Chatglm3,
    /// GLM-4-9B-chat: `[gMASK]<sop><|role|>metadata\ncontent…<|assistant|>` (tiktoken).
    Glm4,
    /// ChatGLM2-6B: `[gMASK]sop[Round 1]\n\n问：…\n\n答：`.
    Chatglm2,
    /// Base and code models (ChatGLM3-6B-base, CodeGeeX2-6B, GLM-4-9B): plain completion.
    Completion,
}

impl ChatFormat {
    pub const ALL: [ChatFormat; 4] = [
        ChatFormat::Chatglm3,
        ChatFormat::Glm4,
        ChatFormat::Chatglm2,
        ChatFormat::Completion,
    ];

    /// The value of [`GLMTOOL_CHAT_FORMAT`].
    pub fn as_str(self) -> &'static str {
        match self {
            ChatFormat::Chatglm3 => "chatglm3",
            ChatFormat::Glm4 => "glm4",
            ChatFormat::Chatglm2 => "chatglm2",
            ChatFormat::Completion => "completion",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// What a file without [`GLMTOOL_CHAT_FORMAT`] (llama.cpp's, or ours for ChatGLM3 and GLM-4)
    /// is: GLM-4's tokenizer means GLM-4; a SentencePiece vocabulary with the role tokens is
    /// ChatGLM3, without them ChatGLM2; a base or code model's name ([`is_completion_name`]) means
    /// completion only.
    pub fn implied(tokenizer_model: &str, has_role_tokens: bool, name: &str) -> Self {
        if is_completion_name(name) {
            ChatFormat::Completion
        } else if tokenizer_model == TOKENIZER_MODEL_GPT2 {
            ChatFormat::Glm4
        } else if has_role_tokens {
            ChatFormat::Chatglm3
        } else {
            ChatFormat::Chatglm2
        }
    }
}

// Importance matrices (llama.cpp 2026's GGUF imatrix: tools/imatrix/imatrix.cpp,
// common/imatrix-loader.h) and the keys llama-quantize records in a file quantized with one
// (tools/quantize/quantize.cpp).
pub const GENERAL_TYPE: &str = "general.type";
/// `general.type` of an imatrix file.
pub const GENERAL_TYPE_IMATRIX: &str = "imatrix";
/// Array of strings: the calibration text files, in the order they were used.
pub const IMATRIX_DATASETS: &str = "imatrix.datasets";
/// u32: chunks of `imatrix.chunk_size` tokens collected (the largest token count / chunk size).
pub const IMATRIX_CHUNK_COUNT: &str = "imatrix.chunk_count";
/// u32: tokens per chunk (llama-imatrix's `-c`).
pub const IMATRIX_CHUNK_SIZE: &str = "imatrix.chunk_size";
/// Tensor `NAME.in_sum2`: Σ x² per input column of matrix NAME (f32, `[columns, matrices]`).
pub const IMATRIX_SUMS_SUFFIX: &str = ".in_sum2";
/// Tensor `NAME.counts`: tokens behind those sums (f32, `[1, matrices]`).
pub const IMATRIX_COUNTS_SUFFIX: &str = ".counts";
pub const QUANTIZE_IMATRIX_FILE: &str = "quantize.imatrix.file";
pub const QUANTIZE_IMATRIX_DATASET: &str = "quantize.imatrix.dataset";
pub const QUANTIZE_IMATRIX_ENTRIES: &str = "quantize.imatrix.entries_count";
pub const QUANTIZE_IMATRIX_CHUNKS: &str = "quantize.imatrix.chunks_count";

// Tensor names.
pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
pub const OUTPUT: &str = "output.weight";

/// Per-layer tensors, `blk.{N}.` + suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerTensor {
    AttnNorm,
    AttnQkv,
    AttnQkvBias,
    AttnOutput,
    FfnNorm,
    FfnUp,
    FfnDown,
}

impl LayerTensor {
    pub const ALL: [LayerTensor; 7] = [
        Self::AttnNorm,
        Self::AttnQkv,
        Self::AttnQkvBias,
        Self::AttnOutput,
        Self::FfnNorm,
        Self::FfnUp,
        Self::FfnDown,
    ];
    pub fn suffix(self) -> &'static str {
        match self {
            Self::AttnNorm => "attn_norm.weight",
            Self::AttnQkv => "attn_qkv.weight",
            Self::AttnQkvBias => "attn_qkv.bias",
            Self::AttnOutput => "attn_output.weight",
            Self::FfnNorm => "ffn_norm.weight",
            Self::FfnUp => "ffn_up.weight",
            Self::FfnDown => "ffn_down.weight",
        }
    }
    /// THUDM's name inside `transformer.encoder.layers.{N}.`.
    pub fn hf_suffix(self) -> &'static str {
        match self {
            Self::AttnNorm => "input_layernorm.weight",
            Self::AttnQkv => "self_attention.query_key_value.weight",
            Self::AttnQkvBias => "self_attention.query_key_value.bias",
            Self::AttnOutput => "self_attention.dense.weight",
            Self::FfnNorm => "post_attention_layernorm.weight",
            Self::FfnUp => "mlp.dense_h_to_4h.weight",
            Self::FfnDown => "mlp.dense_4h_to_h.weight",
        }
    }
    /// GGUF name for layer `il`.
    pub fn name(self, il: usize) -> String {
        format!("blk.{il}.{}", self.suffix())
    }
    /// Hugging Face name for layer `il`.
    pub fn hf_name(self, il: usize) -> String {
        format!("transformer.encoder.layers.{il}.{}", self.hf_suffix())
    }
}

/// The layer number of a per-layer tensor name (`blk.{N}.…`).
pub fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("blk.")?;
    let (n, _) = rest.split_once('.')?;
    n.parse().ok()
}

/// Global tensors: (GGUF name, THUDM name).
pub const GLOBAL_TENSORS: [(&str, &str); 3] = [
    (TOKEN_EMBD, "transformer.embedding.word_embeddings.weight"),
    (OUTPUT_NORM, "transformer.encoder.final_layernorm.weight"),
    (OUTPUT, "transformer.output_layer.weight"),
];

/// THUDM tensors that carry no weights the GGUF needs (recomputed buffers).
pub const HF_IGNORED_SUFFIXES: [&str; 1] = ["rotary_pos_emb.inv_freq"];

/// Maps a THUDM tensor name to its GGUF name (`None` for names that are not model weights of
/// this architecture).
pub fn hf_to_gguf(hf: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_TENSORS.iter().find(|(_, h)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("transformer.encoder.layers.")?;
    let (n, suffix) = rest.split_once('.')?;
    let il: usize = n.parse().ok()?;
    LayerTensor::ALL
        .iter()
        .find(|t| t.hf_suffix() == suffix)
        .map(|t| t.name(il))
}

/// The dimensions that determine a `chatglm` model's tensor shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatglmDims {
    pub n_embd: u64,
    pub n_ff: u64,
    pub n_layer: u64,
    pub n_vocab: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim: u64,
}

/// One tensor of a `chatglm` model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub hf_name: String,
    /// ggml order (innermost first); PyTorch's shape is the reverse.
    pub dims: Vec<u64>,
}

/// Every tensor of a `chatglm` model in file order (`token_embd`, the blocks, `output_norm`,
/// `output`): the one shape table converter and runtime both check against.
pub fn chatglm_tensors(d: &ChatglmDims) -> Vec<TensorEntry> {
    let (h, v, ff) = (d.n_embd, d.n_vocab, d.n_ff);
    let qkv = (d.n_head + 2 * d.n_head_kv) * d.head_dim;
    let entry = |name: String, hf_name: String, dims: Vec<u64>| TensorEntry {
        name,
        hf_name,
        dims,
    };
    let mut out = vec![entry(
        TOKEN_EMBD.into(),
        GLOBAL_TENSORS[0].1.into(),
        vec![h, v],
    )];
    for il in 0..d.n_layer as usize {
        for t in LayerTensor::ALL {
            let dims = match t {
                LayerTensor::AttnNorm | LayerTensor::FfnNorm => vec![h],
                LayerTensor::AttnQkv => vec![h, qkv],
                LayerTensor::AttnQkvBias => vec![qkv],
                LayerTensor::AttnOutput => vec![d.n_head * d.head_dim, h],
                LayerTensor::FfnUp => vec![h, 2 * ff],
                LayerTensor::FfnDown => vec![ff, h],
            };
            out.push(entry(t.name(il), t.hf_name(il), dims));
        }
    }
    out.push(entry(
        OUTPUT_NORM.into(),
        GLOBAL_TENSORS[1].1.into(),
        vec![h],
    ));
    out.push(entry(OUTPUT.into(), GLOBAL_TENSORS[2].1.into(), vec![h, v]));
    out
}
