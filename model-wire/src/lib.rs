//! The wire formats of the model APIs Switchboard speaks, as typed serde
//! structs: OpenAI Chat Completions ([`openai`]) and Anthropic Messages
//! ([`anthropic`]): requests, whole answers, streamed chunks and events, error
//! bodies. The agent runtime's providers send the requests and read the
//! answers; the mock LLM reads the requests and sends the answers.
//!
//! Conventions:
//! - Text is `Cow<'a, str>`: a request is serialised straight from the caller's
//!   strings without copying them, and a streamed chunk decoded from a buffer
//!   borrows its identifiers from it where it can.
//! - Inputs tolerate unknown fields, and fields the APIs document but a
//!   compatible server may leave out default to empty.
//! - Outputs skip optional fields that are `None`; fields the APIs document as
//!   always present but nullable (a chunk's `finish_reason`, a message's
//!   `stop_reason`) are written as `null`.
//! - Variant sets (message content, content blocks, stream events) are enums,
//!   so tool calls, images and the like are added as variants later; a kind
//!   not modelled yet is read as `Other` and skipped.

pub mod anthropic;
pub mod openai;
