//! `glmtool serve`: the OpenAI-compatible HTTP server (crate::server).

pub use crate::server::{run, Args};
