//! The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`
//! (whole or streamed). Clients resend the whole history every turn; each
//! request is mapped to one session (by a conversation id when the client sends
//! one, else by recognising the history it continues) and only messages not
//! stored yet are stored: the conversation service does both.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::api::openai_options::{
    self, OptionFields, StopSequences, ToolCallItem, ToolDefinition, image_part,
};
use crate::api::sse::{self, ChunkFormat, usage_json};
use crate::auth::{Caller, valid_id};
use crate::conversation::{self, Input, Reply, ReplyMode, Sampling, SessionRef, TurnRequest};
use crate::domain::Role;
use crate::error::{ApiError, ErrorBody, extract};
use crate::live::LiveUser;
use crate::providers::{ImagePart, PromptMessage};
use crate::state::SharedState;

/// Headers a client may name its conversation with, in order of preference.
pub const CONVERSATION_HEADERS: [&str; 3] =
    ["x-conversation-id", "x-session-id", "x-openwebui-chat-id"];
/// `metadata` keys a client may name its conversation with.
pub const CONVERSATION_METADATA_KEYS: [&str; 3] = ["conversation_id", "session_id", "chat_id"];

/// `GET /v1/models` answer.
#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    object: &'static str,
    /// The agent, as the one model it serves.
    data: Vec<ModelCard>,
}

/// One model.
#[derive(Serialize, ToSchema)]
pub struct ModelCard {
    /// Model id: the channel's `modelAlias`, else the agent's name.
    id: String,
    /// Always `model`.
    object: &'static str,
    /// Unix time the runtime started.
    created: i64,
    /// Always `switchboard`.
    owned_by: &'static str,
}

/// The model id a channel shows: its alias, else the agent's name.
fn model_id(state: &SharedState, caller: &Caller) -> String {
    caller
        .model_alias
        .clone()
        .unwrap_or_else(|| state.config.agent.name.clone())
}

/// Lists the agent as a model, named by the channel's `modelAlias` (else the
/// agent's name).
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody),
        (status = 404, description = "No default channel is declared (root route)", body = ErrorBody)))]
pub async fn list_models(State(state): State<SharedState>, caller: Caller) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: model_id(&state, &caller),
            object: "model",
            created: state.started_at,
            owned_by: "switchboard",
        }],
    })
}

/// The agent as a model, when `model` is its id on this channel (what
/// `GET /v1/models` lists); else 404 `model_not_found` naming `model`.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    params(("model" = String, Path, description = "The model id `GET /v1/models` lists")),
    responses((status = 200, body = ModelCard), (status = 401, body = ErrorBody),
        (status = 404, description = "No such model on this channel (or no default channel is declared, root route)", body = ErrorBody)))]
pub async fn retrieve_model(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(model): extract::Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    let id = model_id(&state, &caller);
    if model != id {
        return Err(ApiError {
            param: Some("model".to_owned()),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("the model {model:?} does not exist here; this channel serves {id:?}"),
            )
        });
    }
    Ok(Json(ModelCard {
        id,
        object: "model",
        created: state.started_at,
        owned_by: "switchboard",
    }))
}

/// Message content: text, or a list of text and image parts.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(untagged)]
pub enum InputContent {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Deserialize, ToSchema, Debug)]
pub struct ContentPart {
    /// Part type: `text` or `image_url` (others are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
    /// The image of an `image_url` part.
    pub image_url: Option<ImageUrl>,
}

/// An image part's image.
#[derive(Deserialize, ToSchema, Debug)]
pub struct ImageUrl {
    /// `https:`/`http:` URL, or a base64 `data:image/...` URL.
    pub url: String,
    /// `low`, `high` or `auto`.
    pub detail: Option<String>,
}

/// One message of the history.
#[derive(Deserialize, ToSchema, Debug)]
pub struct InputMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Content; may be null for an assistant message that calls tools.
    pub content: Option<InputContent>,
    /// The tools an assistant message called.
    pub tool_calls: Option<Vec<ToolCallItem>>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
    /// The author's name (accepted, not sent upstream).
    pub name: Option<String>,
}

/// `stream_options`.
#[derive(Deserialize, ToSchema, Debug, Default)]
pub struct StreamOptions {
    /// Send a usage chunk before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/chat/completions` body. Documented OpenAI fields the runtime
/// does not carry (`logprobs`, `audio`, ...) are refused when set; fields
/// OpenAI does not document are ignored.
#[derive(Deserialize, ToSchema, Debug)]
pub struct ChatCompletionRequest {
    /// Model name; echoed back (the agent decides which model answers). Absent:
    /// the channel's model id (its `modelAlias`, else the agent's name).
    pub model: Option<String>,
    /// The whole conversation so far, newest last.
    pub messages: Vec<InputMessage>,
    /// Stream the answer as server-sent events (`null` is `false`).
    pub stream: Option<bool>,
    /// Streaming options; only with `stream: true`.
    pub stream_options: Option<StreamOptions>,
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f64>,
    /// Answer length cap.
    #[serde(default, deserialize_with = "crate::api::whole_u32")]
    pub max_tokens: Option<u32>,
    /// Answer length cap (newer name).
    #[serde(default, deserialize_with = "crate::api::whole_u32")]
    pub max_completion_tokens: Option<u32>,
    /// Number of answers; only 1 is supported.
    #[serde(default, deserialize_with = "crate::api::whole_u32")]
    pub n: Option<u32>,
    /// End-user id, used when the trusted user header is absent; sent upstream.
    pub user: Option<String>,
    /// Free-form metadata; `conversation_id` (or `session_id`, `chat_id`) names the conversation.
    pub metadata: Option<HashMap<String, Value>>,
    /// Function tools the model may call (client-side: the client runs them).
    pub tools: Option<Vec<ToolDefinition>>,
    /// `none`, `auto`, `required`, or `{"type": "function", "function": {"name": ...}}`.
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<Value>,
    /// Whether the model may call several tools in one answer.
    pub parallel_tool_calls: Option<bool>,
    /// `{"type": "text" | "json_object"}` or `{"type": "json_schema", "json_schema": {...}}`.
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<Value>,
    /// Up to 4 stop sequences.
    pub stop: Option<StopSequences>,
    /// Nucleus sampling, 0 to 1.
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[serde(default, deserialize_with = "crate::api::whole_i64")]
    pub seed: Option<i64>,
    /// Presence penalty, -2 to 2.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty, -2 to 2.
    pub frequency_penalty: Option<f64>,
    /// Bias per token id, -100 to 100.
    #[schema(value_type = Option<HashMap<String, f64>>)]
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    /// Every other field: documented OpenAI ones the runtime does not carry
    /// are refused when set, the rest ignored.
    #[serde(flatten)]
    #[schema(ignore)]
    pub other: BTreeMap<String, Value>,
}

/// The answer, non-streamed.
#[derive(Serialize, ToSchema)]
pub struct ChatCompletion {
    id: String,
    object: &'static str,
    created: i64,
    model: String,
    choices: Vec<Value>,
    usage: Value,
    system_fingerprint: Option<String>,
}

/// The message roles accepted (`developer` is read as `system`, `function` as `tool`).
pub const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn role_of(raw: &str, index: usize) -> Result<Role, ApiError> {
    match raw {
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "system" | "developer" => Ok(Role::System),
        "tool" | "function" => Ok(Role::Tool),
        other => Err(ApiError::bad_field(
            "invalid_request",
            format!("messages[{index}].role"),
            format!("unknown message role {other:?}; use system, user, assistant or tool"),
        )),
    }
}

/// A message's text, and its images.
fn content_of(
    content: Option<InputContent>,
    index: usize,
) -> Result<(String, Vec<ImagePart>), ApiError> {
    match content {
        None => Ok((String::new(), Vec::new())),
        Some(InputContent::Text(text)) => Ok((text, Vec::new())),
        Some(InputContent::Parts(parts)) => {
            let mut text = String::new();
            let mut images = Vec::new();
            for (p, part) in parts.into_iter().enumerate() {
                let field = format!("messages[{index}].content[{p}]");
                match (part.kind.as_str(), part.text, part.image_url) {
                    ("text", Some(t), _) => text.push_str(&t),
                    ("image_url", _, Some(image)) => {
                        images.push(image_part(image.url, image.detail, p, &field)?);
                    }
                    (kind, _, _) => {
                        return Err(ApiError::bad_field(
                            "unsupported_content",
                            field,
                            format!(
                                "a {kind:?} part is not supported; send text or image_url parts"
                            ),
                        ));
                    }
                }
            }
            Ok((text, images))
        }
    }
}

/// Validates the request's messages against the limits.
fn prompt_messages(
    state: &SharedState,
    input: Vec<InputMessage>,
) -> Result<Vec<PromptMessage>, ApiError> {
    let limits = &state.config.limits;
    if input.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`messages` must not be empty",
        ));
    }
    if input.len() > limits.max_messages {
        return Err(ApiError::bad_request(
            "too_many_messages",
            format!(
                "{} messages sent; at most {} are accepted",
                input.len(),
                limits.max_messages
            ),
        ));
    }
    input
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = role_of(&m.role, i)?;
            let (content, images) = content_of(m.content, i)?;
            ApiError::refuse_nul("invalid_request", &content, || {
                format!("messages[{i}].content")
            })?;
            for (c, call) in m.tool_calls.iter().flatten().enumerate() {
                ApiError::refuse_nul("invalid_request", &call.function.arguments, || {
                    format!("messages[{i}].tool_calls[{c}].function.arguments")
                })?;
            }
            let chars = content.chars().count();
            if chars > limits.max_message_chars {
                return Err(ApiError::bad_field(
                    "message_too_long",
                    format!("messages[{i}].content"),
                    format!(
                        "messages[{i}] has {chars} characters; at most {} are accepted",
                        limits.max_message_chars
                    ),
                ));
            }
            let tool_calls = m.tool_calls.unwrap_or_default();
            Ok(PromptMessage {
                role,
                content,
                tool_calls: tool_calls.into_iter().map(Into::into).collect(),
                tool_call_id: m.tool_call_id,
                images,
            })
        })
        .collect()
}

fn conversation_id(
    headers: &HeaderMap,
    metadata: Option<&HashMap<String, Value>>,
) -> Result<Option<String>, ApiError> {
    // Every id the metadata sends is checked, even when a header wins.
    let mut from_metadata = None;
    for key in CONVERSATION_METADATA_KEYS {
        if let Some(value) = metadata.and_then(|m| m.get(key)) {
            let text = value.as_str().ok_or_else(|| {
                ApiError::bad_field(
                    "invalid_request",
                    format!("metadata.{key}"),
                    format!("metadata.{key} must be a string"),
                )
            })?;
            let id = valid_id(text, &format!("metadata.{key}"))?;
            from_metadata.get_or_insert(id);
        }
    }
    for name in CONVERSATION_HEADERS {
        if let Some(value) = headers.get(name) {
            let text = value.to_str().map_err(|_| {
                ApiError::bad_request("invalid_header", format!("header {name} is not text"))
            })?;
            return valid_id(text, name).map(Some);
        }
    }
    Ok(from_metadata)
}

/// The stored answer as OpenAI's message: its text (`null` when it only
/// calls tools) and its tool calls.
fn answer_message(message: &crate::db::Message) -> Value {
    let calls: Vec<ToolCallItem> = message.tool_calls().iter().map(Into::into).collect();
    if calls.is_empty() {
        return json!({"role": "assistant", "content": message.content, "refusal": null});
    }
    let content = (!message.content.is_empty()).then_some(message.content.as_str());
    json!({"role": "assistant", "content": content, "refusal": null, "tool_calls": calls})
}

/// Answers a chat, OpenAI style.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = ChatCompletionRequest,
    params(
        ("x-conversation-id" = Option<String>, Header, description = "Conversation id; maps the request to one session"),
    ),
    responses(
        (status = 200, description = "The answer: JSON, or (`stream` true) server-sent events of chat.completion.chunk",
            content((ChatCompletion = "application/json"), (String = "text/event-stream")),
            headers(("x-session-id" = String, description = "The session the conversation maps to"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "`stream` on a channel that does not stream", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 504, body = ErrorBody),
    ))]
pub async fn chat_completions(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    extract::Json(request): extract::Json<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let stream = request.stream.unwrap_or(false);
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_field(
            "invalid_request",
            "n",
            "only n = 1 is supported",
        ));
    }
    if let Some(t) = request.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::bad_field(
            "invalid_request",
            "temperature",
            "temperature must be between 0 and 2",
        ));
    }
    if request.stream_options.is_some() && !stream {
        return Err(ApiError::bad_field(
            "invalid_request",
            "stream_options",
            "stream_options is only allowed with stream: true",
        ));
    }
    if stream && !caller.features.streaming {
        return Err(ApiError::forbidden(
            "feature_disabled",
            format!(
                "channel {:?} does not stream; send stream: false",
                caller.channel
            ),
        ));
    }
    let user = caller.user(request.user.as_deref())?;
    let session = match conversation_id(&headers, request.metadata.as_ref())? {
        Some(id) => SessionRef::External(id),
        None => SessionRef::Recognised,
    };
    let model = request
        .model
        .clone()
        .unwrap_or_else(|| model_id(&state, &caller));
    let messages = prompt_messages(&state, request.messages)?;
    let options = openai_options::request_options(OptionFields {
        tools: request.tools,
        tool_choice: request.tool_choice,
        parallel_tool_calls: request.parallel_tool_calls,
        response_format: request.response_format,
        stop: request.stop,
        top_p: request.top_p,
        seed: request.seed,
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        logit_bias: request.logit_bias,
        user: request.user,
        max_completion_tokens: request.max_completion_tokens.is_some(),
        other: request.other,
    })?;
    // Admitted (counted against the rate limits) once the request is known
    // to be valid: a refused one costs the caller nothing.
    let participant = conversation::admit(&state, caller.participant(user.clone())).await?;
    let turn = TurnRequest {
        participant,
        session,
        input: Input::History(messages),
        sampling: Sampling {
            temperature: request.temperature,
            max_output_tokens: request.max_completion_tokens.or(request.max_tokens),
            options,
        },
        mode: if stream {
            ReplyMode::Stream
        } else {
            ReplyMode::Whole
        },
    };
    let created = chrono::Utc::now().timestamp();
    // Boxed: the turn's future is large, and the handler's future is moved
    // by every layer it passes through.
    let turn = Box::pin(conversation::take_turn(&state, turn)).await?;
    let answer = match turn.reply {
        Reply::Stream(stream) => {
            let format = ChunkFormat {
                id: format!("chatcmpl-{}", stream.message_id),
                model,
                created,
                include_usage: request.stream_options.is_some_and(|o| o.include_usage),
            };
            let mut response = sse::response(stream, format, &turn.session_id);
            response.extensions_mut().insert(LiveUser(user));
            return Ok(response);
        }
        Reply::Whole(answer) => *answer,
    };
    let body = ChatCompletion {
        id: format!("chatcmpl-{}", answer.message.id),
        object: "chat.completion",
        created,
        model,
        choices: vec![json!({
            "index": 0,
            "message": answer_message(&answer.message),
            "logprobs": null,
            "finish_reason": answer.finish_reason,
        })],
        usage: usage_json(
            answer.usage.prompt_tokens as i64,
            answer.usage.completion_tokens as i64,
        ),
        system_fingerprint: None,
    };
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&turn.session_id) {
        response.headers_mut().insert("x-session-id", value);
    }
    response.extensions_mut().insert(LiveUser(user));
    Ok(response)
}
