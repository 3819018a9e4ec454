//! The order of the keys and tensors in the files glmtool writes: the order of the llama.cpp
//! tool that makes that file type, so that the whole file, not only each tensor, is
//! byte-identical to what a llama.cpp user gets.
//!
//! * `convert_hf_to_gguf.py` writes f32, f16, bf16 and q8_0 files itself: keys in its order
//!   ([`crate::convert::model_metadata`]), tensors in checkpoint order.
//! * Every other type is made from such a file by `llama-quantize` (src/llama-quant.cpp). It
//!   copies the keys, then sets `general.quantization_version` and `general.file_type` — and
//!   ggml's `gguf_set_val_*` removes a key that exists and appends it, so these two end up last,
//!   in that order — then the `quantize.imatrix.*` keys. It writes the tensors in the order of
//!   the model loader's weight map (`weight_name_comparer`): tensors outside the blocks first,
//!   then block by block, by name (bytewise) within each.

use crate::policy::FileType;
use gguf::{names, Value};

/// Whether `convert_hf_to_gguf.py` writes files of this type itself (`--outtype`), rather than
/// `llama-quantize`.
pub fn written_by_converter(ft: FileType) -> bool {
    matches!(
        ft,
        FileType::F32 | FileType::F16 | FileType::BF16 | FileType::Q8_0
    )
}

/// Sets `key` as ggml's `gguf_set_val_*` does: an existing key is removed and the new value
/// appended.
pub fn set_key(metadata: &mut Vec<(String, Value)>, key: &str, value: Value) {
    metadata.retain(|(k, _)| k != key);
    metadata.push((key.to_string(), value));
}

/// The keys of a file `llama-quantize` writes from `metadata` (the input's keys): the file
/// type keys last, then `extra` (the `quantize.imatrix.*` keys), each set in turn.
pub fn quantized_metadata(
    mut metadata: Vec<(String, Value)>,
    file_type: u32,
    extra: &[(String, Value)],
) -> Vec<(String, Value)> {
    set_key(
        &mut metadata,
        names::GENERAL_QUANTIZATION_VERSION,
        Value::U32(names::QUANTIZATION_VERSION),
    );
    set_key(
        &mut metadata,
        names::GENERAL_FILE_TYPE,
        Value::U32(file_type),
    );
    for (key, value) in extra {
        set_key(&mut metadata, key, value.clone());
    }
    metadata
}

/// The block number llama.cpp's `weight_name_comparer` reads (`sscanf(name, "blk.%d.")`), or
/// -1 for a tensor outside the blocks.
fn block_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else {
        return -1;
    };
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    rest[..digits].parse().unwrap_or(-1)
}

/// The order `llama-quantize` writes tensors with these names in: indices into `names`.
pub fn quantized_tensor_order<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    let names: Vec<&str> = names.into_iter().collect();
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        (block_of(names[a]), names[a].as_bytes()).cmp(&(block_of(names[b]), names[b].as_bytes()))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_sort_as_llama_cpps_weight_map() {
        let names = [
            "token_embd.weight",
            "blk.0.attn_norm.weight",
            "blk.0.attn_qkv.weight",
            "blk.0.attn_qkv.bias",
            "blk.10.ffn_up.weight",
            "blk.2.ffn_down.weight",
            "output_norm.weight",
            "output.weight",
        ];
        let order: Vec<&str> = quantized_tensor_order(names)
            .into_iter()
            .map(|i| names[i])
            .collect();
        assert_eq!(
            order,
            [
                "output.weight",
                "output_norm.weight",
                "token_embd.weight",
                "blk.0.attn_norm.weight",
                "blk.0.attn_qkv.bias",
                "blk.0.attn_qkv.weight",
                "blk.2.ffn_down.weight",
                "blk.10.ffn_up.weight",
            ]
        );
        assert_eq!(block_of("blk.x.weight"), -1);
    }

    #[test]
    fn file_type_keys_move_last_then_the_extra_keys() {
        let md = vec![
            ("general.architecture".to_string(), Value::U32(0)),
            (names::GENERAL_FILE_TYPE.to_string(), Value::U32(1)),
            (
                names::GENERAL_QUANTIZATION_VERSION.to_string(),
                Value::U32(2),
            ),
            ("tokenizer.ggml.model".to_string(), Value::U32(3)),
        ];
        let extra = [("quantize.imatrix.file".to_string(), Value::U32(9))];
        let keys: Vec<String> = quantized_metadata(md, 15, &extra)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "general.architecture",
                "tokenizer.ggml.model",
                names::GENERAL_QUANTIZATION_VERSION,
                names::GENERAL_FILE_TYPE,
                "quantize.imatrix.file"
            ]
        );
    }
}
