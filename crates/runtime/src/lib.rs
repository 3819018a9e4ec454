//! ChatGLM inference on ggml.
