//! The OpenAI API layer of `glmtool serve`, without HTTP and without a model: what a request
//! body means ([`request`]) and how OpenAI chat messages map onto ChatGLM3's ([`messages`]).
//! Every error is a one-line message naming the field, answered by the server as a 400.

pub mod fields;
pub mod fuzz;
pub mod messages;
pub mod request;
pub mod wire;

pub use messages::{openai_messages, openai_messages_as, ToolChoice};
pub use request::{BadRequest, ChatRequest, CompletionRequest, Params, Structured};
