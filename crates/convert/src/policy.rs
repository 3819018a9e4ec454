//! Which ggml type each tensor gets — the one place that decides it, for `convert` and
//! `quantize` alike (llama.cpp's rules for the classic types): 1-D tensors (norms, biases) stay
//! f32; `output.weight` gets q8_0 when the target is a 4- or 5-bit type unless `--pure` or
//! `--output-type` says otherwise; everything else gets the target type. A matrix whose rows are
//! not a whole number of blocks falls back to f16.

use gguf::{names, GgmlType};

/// The user's choice of types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypePolicy {
    pub target: GgmlType,
    /// Overrides the type of `output.weight`.
    pub output_type: Option<GgmlType>,
    /// Quantize `output.weight` with the target type too.
    pub pure: bool,
}

impl TypePolicy {
    pub fn new(target: GgmlType) -> Self {
        TypePolicy {
            target,
            output_type: None,
            pure: false,
        }
    }

    /// The type of tensor `name` with ggml-order `dims`.
    pub fn tensor_type(&self, name: &str, dims: &[u64]) -> GgmlType {
        if dims.len() < 2 {
            return GgmlType::F32;
        }
        let want = if name == names::OUTPUT {
            match self.output_type {
                Some(t) => t,
                None if !self.pure && is_low_bit(self.target) => GgmlType::Q8_0,
                None => self.target,
            }
        } else {
            self.target
        };
        if want.row_bytes(dims[0]).is_some() {
            want
        } else {
            GgmlType::F16
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`) for the target type.
    pub fn file_type(&self) -> u32 {
        file_type(self.target)
    }
}

fn is_low_bit(t: GgmlType) -> bool {
    matches!(
        t,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1
    )
}

/// llama.cpp's `llama_ftype` number for a "mostly T" file.
pub fn file_type(t: GgmlType) -> u32 {
    match t {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::BF16 => 32,
        _ => 1024, // LLAMA_FTYPE_GUESSED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_head_gets_q8_0_for_low_bit_targets() {
        let p = TypePolicy::new(GgmlType::Q4_0);
        assert_eq!(p.tensor_type(names::OUTPUT, &[4096, 65024]), GgmlType::Q8_0);
        assert_eq!(
            p.tensor_type(names::TOKEN_EMBD, &[4096, 65024]),
            GgmlType::Q4_0
        );
        assert_eq!(p.tensor_type("blk.0.attn_qkv.bias", &[4608]), GgmlType::F32);
        let pure = TypePolicy { pure: true, ..p };
        assert_eq!(
            pure.tensor_type(names::OUTPUT, &[4096, 65024]),
            GgmlType::Q4_0
        );
        let over = TypePolicy {
            output_type: Some(GgmlType::F16),
            ..p
        };
        assert_eq!(
            over.tensor_type(names::OUTPUT, &[4096, 65024]),
            GgmlType::F16
        );
        let q8 = TypePolicy::new(GgmlType::Q8_0);
        assert_eq!(
            q8.tensor_type(names::OUTPUT, &[4096, 65024]),
            GgmlType::Q8_0
        );
        let f16 = TypePolicy::new(GgmlType::F16);
        assert_eq!(
            f16.tensor_type(names::OUTPUT, &[4096, 65024]),
            GgmlType::F16
        );
    }

    #[test]
    fn rows_that_are_not_whole_blocks_fall_back_to_f16() {
        let p = TypePolicy::new(GgmlType::Q4_0);
        assert_eq!(
            p.tensor_type("blk.0.ffn_down.weight", &[100, 64]),
            GgmlType::F16
        );
    }
}
