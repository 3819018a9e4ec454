//! One module per subcommand.
pub mod bench;
pub mod completions;
pub mod convert;
pub mod imatrix;
pub mod info;
pub mod perplexity;
pub mod quantize;
pub mod run;
#[cfg(feature = "server")]
pub mod serve;
pub mod tokenize;
