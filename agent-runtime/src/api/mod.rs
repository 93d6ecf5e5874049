//! HTTP handlers: the OpenAI-compatible API, the sessions API, tenant
//! administration, and the operational endpoints, with the API's own types
//! ([`dto`]). Each handler turns its wire format into a call of the
//! conversation service (or a storage read) and the result back.

pub mod admin;
pub mod dto;
pub mod openai;
pub mod ops;
pub mod sessions;
pub mod sse;
