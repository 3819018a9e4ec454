#![no_main]
//! ChatGLM3 reply splitter, tool_call(...) parser, code extraction.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| glm_runtime::fuzz::reply_parsers(data));
