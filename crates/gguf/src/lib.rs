//! GGUF v3: types, reader, writer, and the chatglm key / tensor-name tables.
pub mod types;
pub use types::GgmlType;
