//! HTTP handlers: the OpenAI-compatible API, the sessions API, tenant
//! administration, and the operational endpoints.

pub mod admin;
pub mod dto;
pub mod openai;
pub mod ops;
pub mod sessions;
pub mod sse;
