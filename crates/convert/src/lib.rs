//! Hugging Face ChatGLM checkpoint -> GGUF.
pub mod quant;
