//! HTTP handlers: the OpenAI-compatible API, the sessions API, and the
//! operational endpoints.

pub mod openai;
pub mod ops;
pub mod sessions;
pub mod sse;
