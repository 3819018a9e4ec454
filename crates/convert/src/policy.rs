//! Which ggml type each tensor gets — the one place that decides it, for `convert` and
//! `quantize` alike. The rules are llama.cpp 2026's `llama_tensor_get_type`
//! (src/llama-quant.cpp), restricted to what can happen in a ChatGLM-architecture file
//! (one fused `attn_qkv`, one `attn_output`, one fused gate+up `ffn_up` and one `ffn_down`
//! per layer; no experts, no 70B special case, not Falcon):
//!
//! 1. Only matrices whose name ends in `weight` (and not `_norm.weight`) are quantized; 1-D
//!    tensors stay f32.
//! 2. `--token-embedding-type` / `--output-tensor-type` win outright for `token_embd.weight` /
//!    `output.weight`.
//! 3. A non-quantized target (f32, f16, bf16) applies to every matrix as it is.
//! 4. Otherwise, unless `--pure`, the file type's mix bumps some tensors ([`FileType`]'s rules
//!    below, e.g. Q4_K_M gives `use_more_bits` layers' `attn_qkv` and `ffn_down` q6_K).
//! 5. A type whose block does not divide the row falls back as llama.cpp's
//!    `tensor_type_fallback` does (q4_K → q5_0, q5_K → q5_1, q6_K → q8_0, q2_K/q3_K → q4_0,
//!    iq4_xs → iq4_nl), and to f16 if the fallback does not divide it either. ChatGLM3's and
//!    GLM-4's ffn width 13696 is 53.5 super-blocks, so their `ffn_down` always falls back.
//!
//! llama.cpp counts `attn_v`-like tensors and `ffn_down` tensors in the order it visits them
//! (layer number first, then name); with one of each per layer that count is the layer number,
//! which is what [`TypePolicy::tensor_type`] reads from the name.

use gguf::{names, GgmlType};
use std::fmt;

/// llama.cpp's `llama_ftype`: the file type a user asks for (`Q4_K_M`), which is more than the
/// type of most of its tensors (a mix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q2_K_S,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
}

/// Name (as llama-quantize prints it), `llama_ftype` number, and the type of most tensors.
const FILE_TYPES: [(FileType, &str, u32, GgmlType); 20] = [
    (FileType::F32, "F32", 0, GgmlType::F32),
    (FileType::F16, "F16", 1, GgmlType::F16),
    (FileType::Q4_0, "Q4_0", 2, GgmlType::Q4_0),
    (FileType::Q4_1, "Q4_1", 3, GgmlType::Q4_1),
    (FileType::Q8_0, "Q8_0", 7, GgmlType::Q8_0),
    (FileType::Q5_0, "Q5_0", 8, GgmlType::Q5_0),
    (FileType::Q5_1, "Q5_1", 9, GgmlType::Q5_1),
    (FileType::Q2_K, "Q2_K", 10, GgmlType::Q2K),
    (FileType::Q3_K_S, "Q3_K_S", 11, GgmlType::Q3K),
    (FileType::Q3_K_M, "Q3_K_M", 12, GgmlType::Q3K),
    (FileType::Q3_K_L, "Q3_K_L", 13, GgmlType::Q3K),
    (FileType::Q4_K_S, "Q4_K_S", 14, GgmlType::Q4K),
    (FileType::Q4_K_M, "Q4_K_M", 15, GgmlType::Q4K),
    (FileType::Q5_K_S, "Q5_K_S", 16, GgmlType::Q5K),
    (FileType::Q5_K_M, "Q5_K_M", 17, GgmlType::Q5K),
    (FileType::Q6_K, "Q6_K", 18, GgmlType::Q6K),
    (FileType::Q2_K_S, "Q2_K_S", 21, GgmlType::Q2K),
    (FileType::IQ4_NL, "IQ4_NL", 25, GgmlType::IQ4NL),
    (FileType::IQ4_XS, "IQ4_XS", 30, GgmlType::IQ4XS),
    (FileType::BF16, "BF16", 32, GgmlType::BF16),
];

/// llama-quantize's aliases: the bare k-quant names mean the `_M` mix.
const ALIASES: [(&str, FileType); 3] = [
    ("Q3_K", FileType::Q3_K_M),
    ("Q4_K", FileType::Q4_K_M),
    ("Q5_K", FileType::Q5_K_M),
];

impl FileType {
    /// Every file type, in llama.cpp's numbering order.
    pub fn all() -> impl Iterator<Item = FileType> {
        let mut v: Vec<_> = FILE_TYPES.iter().map(|e| (e.2, e.0)).collect();
        v.sort_by_key(|e| e.0);
        v.into_iter().map(|e| e.1)
    }

    fn entry(self) -> &'static (FileType, &'static str, u32, GgmlType) {
        FILE_TYPES
            .iter()
            .find(|e| e.0 == self)
            .expect("every FileType has a table row")
    }

    /// llama-quantize's name: `Q4_K_M`.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// llama.cpp's `llama_ftype` number, written as `general.file_type`.
    pub fn number(self) -> u32 {
        self.entry().2
    }

    /// The type of most tensors (llama.cpp's `llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        self.entry().3
    }

    /// A name as llama-quantize takes it (any case, `Q4_K` = `Q4_K_M`) or its number.
    pub fn parse(s: &str) -> Option<FileType> {
        let up = s.trim().to_ascii_uppercase();
        if let Some(e) = FILE_TYPES.iter().find(|e| e.1 == up) {
            return Some(e.0);
        }
        if let Some(a) = ALIASES.iter().find(|a| a.0 == up) {
            return Some(a.1);
        }
        let n: u32 = up.parse().ok()?;
        FILE_TYPES.iter().find(|e| e.2 == n).map(|e| e.0)
    }

    /// The "mostly T" file type of a tensor type, for callers that think in tensor types
    /// (`q4_K` → `Q4_K_M`, as llama-quantize reads `Q4_K`).
    pub fn mostly(t: GgmlType) -> Option<FileType> {
        match t {
            GgmlType::Q3K => Some(FileType::Q3_K_M),
            GgmlType::Q4K => Some(FileType::Q4_K_M),
            GgmlType::Q5K => Some(FileType::Q5_K_M),
            _ => FILE_TYPES.iter().find(|e| e.3 == t).map(|e| e.0),
        }
    }

    /// Whether llama-quantize refuses this file type without an importance matrix (for the
    /// tensors [`TypePolicy::requires_imatrix`] names).
    pub fn needs_imatrix(self) -> bool {
        self == FileType::Q2_K_S
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The user's choice of types, plus the two model facts the mixes depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypePolicy {
    pub ftype: FileType,
    /// `--output-tensor-type`: the type of `output.weight`.
    pub output_type: Option<GgmlType>,
    /// `--token-embedding-type`: the type of `token_embd.weight`.
    pub token_embd_type: Option<GgmlType>,
    /// `--pure`: no mix, every matrix gets the default type (fallbacks still apply).
    pub pure: bool,
    /// Whether an importance matrix is used (it changes a few choices, as in llama.cpp).
    pub has_imatrix: bool,
    /// Number of layers (`chatglm.block_count`).
    pub n_layer: u32,
    /// Query heads per key/value head (`head_count / head_count_kv`).
    pub n_gqa: u32,
}

impl TypePolicy {
    /// The policy of a "mostly `target`" file (`q4_K` → Q4_K_M); a tensor type with no file
    /// type of its own gets F16's. Set the model with [`TypePolicy::for_model`].
    pub fn new(target: GgmlType) -> Self {
        Self::of(FileType::mostly(target).unwrap_or(FileType::F16))
    }

    /// The policy of file type `ftype` (set the model with [`TypePolicy::for_model`]).
    pub fn of(ftype: FileType) -> Self {
        TypePolicy {
            ftype,
            output_type: None,
            token_embd_type: None,
            pure: false,
            has_imatrix: false,
            n_layer: 1,
            n_gqa: 1,
        }
    }

    /// The same policy for a model with `n_layer` layers, `n_head` query heads and
    /// `n_head_kv` key/value heads.
    pub fn for_model(self, n_layer: u64, n_head: u64, n_head_kv: u64) -> Self {
        TypePolicy {
            n_layer: u32::try_from(n_layer.max(1)).unwrap_or(u32::MAX),
            n_gqa: u32::try_from(n_head / n_head_kv.max(1)).unwrap_or(u32::MAX),
            ..self
        }
    }

    /// The type of tensor `name` with ggml-order `dims`.
    pub fn tensor_type(&self, name: &str, dims: &[u64]) -> GgmlType {
        if !allows_quantization(name, dims) {
            return if dims.len() < 2 {
                GgmlType::F32
            } else {
                GgmlType::F16
            };
        }
        if name == names::TOKEN_EMBD {
            if let Some(t) = self.token_embd_type {
                return fit(t, dims[0]);
            }
        }
        if name == names::OUTPUT {
            if let Some(t) = self.output_type {
                return fit(t, dims[0]);
            }
        }
        let default = self.ftype.default_type();
        if !default.is_quantized() {
            return default;
        }
        let want = if self.pure {
            default
        } else {
            self.mix(name, dims[0], default)
        };
        fallback(want, dims[0])
    }

    /// `llama_tensor_get_type_impl` for this architecture.
    fn mix(&self, name: &str, ncols: u64, default: GgmlType) -> GgmlType {
        use FileType as F;
        use GgmlType as T;
        let ft = self.ftype;
        let layer = layer_of(name);
        let (i, n) = (layer.unwrap_or(0), self.n_layer);
        if name == names::OUTPUT {
            // not tied: ChatGLM always has its own output.weight
            return if !ncols.is_multiple_of(default.block_size() as u64) {
                T::Q8_0
            } else if default != T::Q8_0 {
                T::Q6K
            } else {
                default
            };
        }
        if name == names::TOKEN_EMBD {
            return default;
        }
        let gqa4 = self.n_gqa >= 4;
        if name.ends_with("attn_qkv.weight") || name.ends_with("attn_v.weight") {
            return match ft {
                F::Q2_K if gqa4 => T::Q4K,
                F::Q2_K => T::Q3K,
                F::Q2_K_S if gqa4 => T::Q4K,
                F::Q3_K_M if i < 2 => T::Q5K,
                F::Q3_K_M => T::Q4K,
                F::Q3_K_L => T::Q5K,
                F::IQ4_NL | F::IQ4_XS if gqa4 => T::Q5K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => T::Q6K,
                F::Q4_K_S if i < 4 => T::Q5K,
                _ => default,
            };
        }
        if name.contains("ffn_down") {
            return match ft {
                F::Q2_K => T::Q3K,
                F::Q2_K_S if i < n / 8 => T::Q4K,
                F::Q3_K_M if i < n / 16 => T::Q5K,
                F::Q3_K_M => T::Q4K,
                F::Q3_K_L => T::Q5K,
                F::Q4_K_M if use_more_bits(i, n) => T::Q6K,
                F::IQ4_NL | F::IQ4_XS if i < n / 8 && !self.has_imatrix => T::Q5K,
                F::Q5_K_M if use_more_bits(i, n) => T::Q6K,
                F::Q4_K_S if i < n / 8 => T::Q5K,
                F::Q4_0 if self.has_imatrix && i < n / 8 => T::Q4_1,
                F::Q5_0 if self.has_imatrix && i < n / 8 => T::Q5_1,
                _ => default,
            };
        }
        if name.contains("attn_output.weight") {
            return match ft {
                F::Q2_K => T::Q3K,
                F::Q3_K_M => T::Q4K,
                F::Q3_K_L => T::Q5K,
                _ => default,
            };
        }
        default
    }

    /// Whether llama-quantize would refuse this tensor without an importance matrix
    /// (`tensor_requires_imatrix`): q2_K tensors of a Q2_K_S file, except the embeddings and
    /// the head.
    pub fn requires_imatrix(&self, name: &str, ty: GgmlType) -> bool {
        name != names::TOKEN_EMBD
            && name != names::OUTPUT
            && ty == GgmlType::Q2K
            && self.ftype.needs_imatrix()
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn file_type(&self) -> u32 {
        self.ftype.number()
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third one
/// between them.
fn use_more_bits(i: u32, n: u32) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// `blk.N.` → N.
fn layer_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("blk.")?;
    rest[..rest.find('.')?].parse().ok()
}

/// `tensor_allows_quantization` for this architecture.
pub fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    dims.len() >= 2 && name.ends_with("weight") && !name.contains("_norm.weight")
}

/// `tensor_type_fallback`: a type whose block does not divide the row is replaced.
fn fallback(t: GgmlType, ncols: u64) -> GgmlType {
    use GgmlType as T;
    if ncols.is_multiple_of(t.block_size() as u64) {
        return t;
    }
    let alt = match t {
        T::IQ4XS => T::IQ4NL,
        T::Q2K | T::Q3K => T::Q4_0,
        T::Q4K => T::Q5_0,
        T::Q5K => T::Q5_1,
        T::Q6K => T::Q8_0,
        other => other,
    };
    if ncols.is_multiple_of(alt.block_size() as u64) {
        alt
    } else {
        T::F16
    }
}

/// An explicitly requested type, or f16 if its block does not divide the row (llama.cpp would
/// stop with a ggml assertion here).
fn fit(t: GgmlType, ncols: u64) -> GgmlType {
    if ncols.is_multiple_of(t.block_size() as u64) {
        t
    } else {
        GgmlType::F16
    }
}

/// llama.cpp's `llama_ftype` number for a "mostly T" file (1024, "guessed", for a type with
/// no file type of its own).
pub fn file_type(t: GgmlType) -> u32 {
    FileType::mostly(t).map_or(1024, FileType::number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chatglm3(ft: FileType) -> TypePolicy {
        TypePolicy::of(ft).for_model(28, 32, 2)
    }

    fn types(p: &TypePolicy, layer: u32) -> [GgmlType; 4] {
        let t = |s: &str, d0: u64, d1: u64| p.tensor_type(&format!("blk.{layer}.{s}"), &[d0, d1]);
        [
            t("attn_qkv.weight", 4096, 4608),
            t("attn_output.weight", 4096, 4096),
            t("ffn_up.weight", 4096, 27392),
            t("ffn_down.weight", 13696, 4096),
        ]
    }

    #[test]
    fn names_and_numbers_are_llama_quantizes() {
        assert_eq!(FileType::parse("q4_k_m"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("Q4_K"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("15"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("iq4_xs"), Some(FileType::IQ4_XS));
        assert_eq!(FileType::parse("2"), Some(FileType::Q4_0));
        assert_eq!(FileType::parse("32"), Some(FileType::BF16));
        assert_eq!(FileType::parse("Q4_3"), None);
        assert_eq!(FileType::parse("4"), None);
        for ft in FileType::all() {
            assert_eq!(FileType::parse(ft.name()), Some(ft));
            assert_eq!(FileType::parse(&ft.number().to_string()), Some(ft));
        }
    }

    #[test]
    fn q4_k_m_on_chatglm3_is_llama_quantizes_mix() {
        // use_more_bits(i, 28): i < 3, i >= 24, or (i - 3) % 3 == 2
        let p = chatglm3(FileType::Q4_K_M);
        let more: Vec<u32> = (0..28).filter(|&i| use_more_bits(i, 28)).collect();
        assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]);
        use GgmlType as T;
        assert_eq!(types(&p, 0), [T::Q6K, T::Q4K, T::Q4K, T::Q8_0]);
        assert_eq!(types(&p, 3), [T::Q4K, T::Q4K, T::Q4K, T::Q5_0]);
        assert_eq!(p.tensor_type(names::OUTPUT, &[4096, 65024]), T::Q6K);
        assert_eq!(p.tensor_type(names::TOKEN_EMBD, &[4096, 65024]), T::Q4K);
        assert_eq!(p.tensor_type("blk.0.attn_qkv.bias", &[4608]), T::F32);
        assert_eq!(p.tensor_type("blk.0.attn_norm.weight", &[4096]), T::F32);
    }

    #[test]
    fn other_mixes_on_chatglm3() {
        use GgmlType as T;
        let t = |ft, l| types(&chatglm3(ft), l);
        assert_eq!(t(FileType::Q5_K_M, 0), [T::Q6K, T::Q5K, T::Q5K, T::Q8_0]);
        assert_eq!(t(FileType::Q5_K_M, 4), [T::Q5K, T::Q5K, T::Q5K, T::Q5_1]);
        assert_eq!(t(FileType::Q4_K_S, 2), [T::Q5K, T::Q4K, T::Q4K, T::Q5_1]);
        assert_eq!(t(FileType::Q4_K_S, 3), [T::Q5K, T::Q4K, T::Q4K, T::Q5_0]);
        assert_eq!(t(FileType::Q4_K_S, 4), [T::Q4K, T::Q4K, T::Q4K, T::Q5_0]);
        assert_eq!(t(FileType::Q3_K_M, 0), [T::Q5K, T::Q4K, T::Q3K, T::Q5_1]);
        assert_eq!(t(FileType::Q3_K_M, 1), [T::Q5K, T::Q4K, T::Q3K, T::Q5_0]);
        assert_eq!(t(FileType::Q3_K_M, 2), [T::Q4K, T::Q4K, T::Q3K, T::Q5_0]);
        assert_eq!(t(FileType::Q3_K_L, 9), [T::Q5K, T::Q5K, T::Q3K, T::Q5_1]);
        assert_eq!(t(FileType::Q2_K, 9), [T::Q4K, T::Q3K, T::Q2K, T::Q4_0]);
        assert_eq!(t(FileType::Q6_K, 9), [T::Q6K, T::Q6K, T::Q6K, T::Q8_0]);
        assert_eq!(
            t(FileType::IQ4_XS, 0),
            [T::Q5K, T::IQ4XS, T::IQ4XS, T::Q5_1]
        );
        assert_eq!(
            t(FileType::IQ4_XS, 9),
            [T::Q5K, T::IQ4XS, T::IQ4XS, T::IQ4NL]
        );
        assert_eq!(
            t(FileType::IQ4_NL, 9),
            [T::Q5K, T::IQ4NL, T::IQ4NL, T::IQ4NL]
        );
        assert_eq!(t(FileType::Q4_0, 0), [T::Q4_0; 4]);
        let imx = TypePolicy {
            has_imatrix: true,
            ..chatglm3(FileType::Q4_0)
        };
        assert_eq!(types(&imx, 0)[3], T::Q4_1);
        assert_eq!(types(&imx, 3)[3], T::Q4_0);
        let imx = TypePolicy {
            has_imatrix: true,
            ..chatglm3(FileType::IQ4_XS)
        };
        assert_eq!(types(&imx, 0)[3], T::IQ4NL);
    }

    #[test]
    fn output_head_and_overrides() {
        use GgmlType as T;
        for (ft, want) in [
            (FileType::Q4_0, T::Q6K),
            (FileType::Q5_1, T::Q6K),
            (FileType::Q8_0, T::Q8_0),
            (FileType::IQ4_XS, T::Q6K),
            (FileType::F16, T::F16),
            (FileType::BF16, T::BF16),
            (FileType::F32, T::F32),
        ] {
            let p = chatglm3(ft);
            assert_eq!(p.tensor_type(names::OUTPUT, &[4096, 65024]), want, "{ft}");
        }
        let p = chatglm3(FileType::Q4_0);
        let pure = TypePolicy { pure: true, ..p };
        assert_eq!(pure.tensor_type(names::OUTPUT, &[4096, 65024]), T::Q4_0);
        let over = TypePolicy {
            output_type: Some(T::F16),
            token_embd_type: Some(T::Q8_0),
            ..p
        };
        assert_eq!(over.tensor_type(names::OUTPUT, &[4096, 65024]), T::F16);
        assert_eq!(over.tensor_type(names::TOKEN_EMBD, &[4096, 65024]), T::Q8_0);
        // a head whose width is no whole number of 256-blocks gets q8_0 in a k-quant file
        let k = chatglm3(FileType::Q4_K_M);
        assert_eq!(k.tensor_type(names::OUTPUT, &[4000, 65024]), T::Q8_0);
    }

    #[test]
    fn rows_that_fit_no_block_fall_back() {
        use GgmlType as T;
        let p = chatglm3(FileType::Q4_0);
        assert_eq!(p.tensor_type("blk.0.ffn_down.weight", &[100, 64]), T::F16);
        let p = TypePolicy {
            pure: true,
            ..chatglm3(FileType::Q4_K_M)
        };
        assert_eq!(
            p.tensor_type("blk.0.ffn_down.weight", &[13696, 64]),
            T::Q5_0
        );
        assert_eq!(p.tensor_type("blk.0.ffn_down.weight", &[100, 64]), T::F16);
        assert_eq!(fallback(T::IQ4XS, 13696), T::IQ4NL);
        assert_eq!(fallback(T::Q3K, 96), T::Q4_0);
    }

    #[test]
    fn q2_k_s_needs_an_imatrix_for_its_layers_only() {
        let p = chatglm3(FileType::Q2_K_S);
        assert!(p.requires_imatrix("blk.3.ffn_up.weight", GgmlType::Q2K));
        assert!(!p.requires_imatrix(names::TOKEN_EMBD, GgmlType::Q2K));
        assert!(!p.requires_imatrix("blk.3.ffn_down.weight", GgmlType::Q4_0));
        assert!(!chatglm3(FileType::Q2_K).requires_imatrix("blk.3.ffn_up.weight", GgmlType::Q2K));
    }
}
