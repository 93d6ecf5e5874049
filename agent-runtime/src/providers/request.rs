//! What a client may ask of a model beyond the prompt and its sampling
//! temperature: tools and the choice among them, the answer's format, stop
//! sequences and the other sampling options of OpenAI's request; and the
//! [`Refusal`] a provider gives for an option its wire format cannot honour
//! (answered as a 400 naming the field, never dropped in silence).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A function tool the client offers the model (client-side: the client
/// runs it and sends the result back in the next request's history).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    /// The function's name.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its arguments, as a JSON Schema object.
    pub parameters: Option<Value>,
    /// Whether the arguments must follow the schema exactly.
    pub strict: Option<bool>,
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// No tool.
    None,
    /// The model decides.
    Auto,
    /// Some tool.
    Required,
    /// This function.
    Function(String),
}

/// The answer's format.
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Plain text (the default; honoured everywhere).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The format's name.
        name: String,
        /// What it is for.
        description: Option<String>,
        /// The JSON Schema.
        schema: Option<Value>,
        /// Whether the answer must follow it exactly.
        strict: Option<bool>,
    },
}

/// An image part of a user message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePart {
    /// `https:` or `data:` URL.
    pub url: String,
    /// `low`, `high` or `auto`.
    pub detail: Option<String>,
    /// Its position among the message's content parts, as the client sent them
    /// (names the part when no model of the agent accepts images).
    pub part: usize,
}

/// The client's options beyond the prompt, temperature and length cap. Every
/// field is either sent upstream (as is or translated) or refused.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestOptions {
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Whether and which tool it must call.
    pub tool_choice: Option<ToolChoice>,
    /// Whether it may call several tools in one answer.
    pub parallel_tool_calls: Option<bool>,
    /// The answer's format.
    pub response_format: Option<ResponseFormat>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// Presence penalty.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// Bias per token id.
    pub logit_bias: Option<Map<String, Value>>,
    /// The end user's id as the client names it.
    pub user: Option<String>,
    /// The client set its length cap as `max_completion_tokens` (OpenAI's
    /// newer name, the only one its reasoning models take): sent upstream
    /// under that name; else as `max_tokens`, which every compatible server
    /// reads.
    pub max_completion_tokens: bool,
    /// Documented OpenAI fields with no counterpart elsewhere
    /// ([`crate::api::openai_options::PASSED_FIELDS`]: `reasoning_effort`,
    /// `service_tier`, ...), as the client sent them: added to the body of an
    /// OpenAI-compatible model's request, refused by other providers.
    pub passed: BTreeMap<String, Value>,
}

/// A request option (or message part) the model in use cannot honour.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` is not supported by {provider} model {model}: {reason}")]
pub struct Refusal {
    /// The request field, as the client named it (`response_format`,
    /// `messages[2].content`, ...).
    pub field: String,
    /// The provider (`openai`, `anthropic`).
    pub provider: String,
    /// The model.
    pub model: String,
    /// Why, and what to do instead.
    pub reason: String,
}
