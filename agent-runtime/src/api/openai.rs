//! The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`
//! (whole or streamed). Clients resend the whole history every turn; each
//! request is mapped to one session (by a conversation id when the client sends
//! one, else by recognising the history it continues) and only messages not
//! stored yet are stored.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::api::sse::{self, ChunkFormat, usage_json};
use crate::app::SharedState;
use crate::auth::{Caller, valid_id};
use crate::chat::{self, Anchor, Turn, chain_hash};
use crate::db::{Message, NewMessage, NewSession, Session};
use crate::domain::Role;
use crate::error::{ApiError, ErrorBody, extract};
use crate::providers::PromptMessage;

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
    /// Model id: the agent's name.
    id: String,
    /// Always `model`.
    object: &'static str,
    /// Unix time the runtime started.
    created: i64,
    /// Always `switchboard`.
    owned_by: &'static str,
}

/// Lists the agent as a model.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody)))]
pub async fn list_models(State(state): State<SharedState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: state.config.agent.name.clone(),
            object: "model",
            created: state.started_at,
            owned_by: "switchboard",
        }],
    })
}

/// Message content: text, or a list of parts of which only text is accepted.
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
    /// Part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: Option<String>,
}

/// One message of the history.
#[derive(Deserialize, ToSchema, Debug)]
pub struct InputMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Content; may be null for an assistant message.
    pub content: Option<InputContent>,
}

/// `stream_options`.
#[derive(Deserialize, ToSchema, Debug, Default)]
pub struct StreamOptions {
    /// Send a usage chunk before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/chat/completions` body (unknown fields are ignored).
#[derive(Deserialize, ToSchema, Debug)]
pub struct ChatCompletionRequest {
    /// Model name; echoed back (the agent decides which model answers).
    pub model: Option<String>,
    /// The whole conversation so far, newest last.
    pub messages: Vec<InputMessage>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
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
    /// End-user id, used when the trusted user header is absent.
    pub user: Option<String>,
    /// Free-form metadata; `conversation_id` (or `session_id`, `chat_id`) names the conversation.
    pub metadata: Option<HashMap<String, Value>>,
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

fn role_of(raw: &str) -> Result<Role, ApiError> {
    match raw {
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "system" | "developer" => Ok(Role::System),
        "tool" | "function" => Ok(Role::Tool),
        other => Err(ApiError::bad_request(
            "invalid_request",
            format!("unknown message role {other:?}; use system, user, assistant or tool"),
        )),
    }
}

fn text_of(content: Option<InputContent>, index: usize) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(InputContent::Text(text)) => Ok(text),
        Some(InputContent::Parts(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(t)) => text.push_str(&t),
                    (kind, _) => {
                        return Err(ApiError::bad_request(
                            "unsupported_content",
                            format!(
                                "messages[{index}] has a {kind:?} part; only text is supported"
                            ),
                        ));
                    }
                }
            }
            Ok(text)
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
            let role = role_of(&m.role)?;
            let content = text_of(m.content, i)?;
            let chars = content.chars().count();
            if chars > limits.max_message_chars {
                return Err(ApiError::bad_request(
                    "message_too_long",
                    format!(
                        "messages[{i}] has {chars} characters; at most {} are accepted",
                        limits.max_message_chars
                    ),
                ));
            }
            Ok(PromptMessage { role, content })
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
                ApiError::bad_request(
                    "invalid_request",
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

/// The session a request belongs to, and the newest stored message of its
/// history after storing the messages not seen before (durably, before the
/// model is called).
pub async fn sync_conversation(
    state: &SharedState,
    user: &str,
    channel: &str,
    conversation: Option<&str>,
    messages: &[PromptMessage],
) -> Result<(Session, Anchor), ApiError> {
    let mut hashes = Vec::with_capacity(messages.len());
    let mut parent = String::new();
    for m in messages {
        parent = chain_hash(&parent, m.role, &m.content);
        hashes.push(parent.clone());
    }
    let n = messages.len();
    let (session, matched): (Session, Option<(usize, Message)>) = match conversation {
        Some(conversation) => {
            let session = state
                .store
                .session_for_conversation(user, channel, conversation)
                .await?;
            let found = state
                .store
                .find_by_chain_hash(user, Some(&session.id), &hashes)
                .await?;
            (session.clone(), longest_match(&hashes, found))
        }
        None => {
            // Without an id, continue a session only when the history's newest
            // message, or the one before it, is already stored: a fresh one-message
            // chat always starts a new session.
            let candidates = if n >= 2 {
                hashes[n - 2..].to_vec()
            } else {
                Vec::new()
            };
            let found = state
                .store
                .find_by_chain_hash(user, None, &candidates)
                .await?;
            match longest_match(&hashes, found) {
                Some((index, message)) => {
                    let session = state.store.get_session(user, &message.session_id).await?;
                    (session, Some((index, message)))
                }
                None => {
                    // A new conversation: the session and its messages in one commit.
                    let session_id = uuid::Uuid::now_v7().to_string();
                    let records = new_records(state, &session_id, messages, &hashes, 0, None);
                    let (session, stored) = state
                        .store
                        .create_session_with_messages(
                            &session_id,
                            NewSession {
                                user_id: user.to_owned(),
                                channel: channel.to_owned(),
                                external_id: None,
                                title: None,
                            },
                            &records,
                        )
                        .await?;
                    let last = stored.last().ok_or_else(ApiError::internal)?;
                    let anchor = Anchor {
                        id: last.id.clone(),
                        hash: last.chain_hash.clone(),
                    };
                    return Ok((session, anchor));
                }
            }
        }
    };
    let (start, parent) = match matched {
        Some((index, message)) => (
            index + 1,
            Some(Anchor {
                id: message.id,
                hash: message.chain_hash,
            }),
        ),
        None => (0, None),
    };
    let records = new_records(state, &session.id, messages, &hashes, start, parent.clone());
    let anchor = match records.last() {
        Some(last) => Anchor {
            id: last.id.clone(),
            hash: last.chain_hash.clone(),
        },
        None => parent.ok_or_else(ApiError::internal)?,
    };
    if !records.is_empty() {
        state.store.append_messages(&records).await?;
    }
    Ok((session, anchor))
}

/// Records for `messages[start..]`, chained from `parent`.
fn new_records(
    state: &SharedState,
    session_id: &str,
    messages: &[PromptMessage],
    hashes: &[String],
    start: usize,
    parent: Option<Anchor>,
) -> Vec<NewMessage> {
    let mut parent_id = parent.map(|a| a.id);
    let mut records = Vec::with_capacity(messages.len().saturating_sub(start));
    for (i, m) in messages.iter().enumerate().skip(start) {
        let id = NewMessage::new_id();
        records.push(NewMessage {
            id: id.clone(),
            session_id: session_id.to_owned(),
            parent_id: parent_id.replace(id),
            role: m.role,
            content: m.content.clone(),
            model: None,
            tokens_in: state.tokenizer.count(&m.content) as i64,
            tokens_out: 0,
            latency_ms: None,
            error: None,
            chain_hash: hashes[i].clone(),
        });
    }
    records
}

/// The stored message matching the longest prefix of `hashes`, with its index.
fn longest_match(hashes: &[String], found: Vec<Message>) -> Option<(usize, Message)> {
    found
        .into_iter()
        .filter_map(|m| {
            hashes
                .iter()
                .rposition(|h| *h == m.chain_hash)
                .map(|i| (i, m))
        })
        .max_by_key(|(i, _)| *i)
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
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "only n = 1 is supported",
        ));
    }
    if let Some(t) = request.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "temperature must be between 0 and 2",
        ));
    }
    if request.stream && !caller.features.streaming {
        return Err(ApiError::forbidden(
            "feature_disabled",
            format!(
                "channel {:?} does not stream; send stream: false",
                caller.channel
            ),
        ));
    }
    let user = caller.user(request.user.as_deref())?;
    chat::admit(&state, &caller.channel, &user)?;
    let conversation = conversation_id(&headers, request.metadata.as_ref())?;
    let model = request
        .model
        .clone()
        .unwrap_or_else(|| state.config.agent.name.clone());
    let messages = prompt_messages(&state, request.messages)?;
    let (session, anchor) = sync_conversation(
        &state,
        &user,
        &caller.channel,
        conversation.as_deref(),
        &messages,
    )
    .await?;
    state
        .channels
        .activity
        .record_message(&caller.channel, &session.id);
    tracing::debug!(session = %session.id, %user, stream = request.stream, "chat completion");
    let turn = Turn {
        session_id: session.id.clone(),
        anchor,
        history: messages,
        temperature: request.temperature,
        max_output_tokens: request.max_completion_tokens.or(request.max_tokens),
        language: caller.language.clone(),
        channel: caller.channel.clone(),
    };
    let created = chrono::Utc::now().timestamp();
    if request.stream {
        let stream = chat::stream(&state, turn).await?;
        let format = ChunkFormat {
            id: format!("chatcmpl-{}", stream.message_id),
            model,
            created,
            include_usage: request.stream_options.is_some_and(|o| o.include_usage),
        };
        return Ok(sse::response(stream, format, &session.id));
    }
    let answer = chat::complete(&state, &turn).await?;
    let body = ChatCompletion {
        id: format!("chatcmpl-{}", answer.message.id),
        object: "chat.completion",
        created,
        model,
        choices: vec![json!({
            "index": 0,
            "message": {"role": "assistant", "content": answer.message.content, "refusal": null},
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
    if let Ok(value) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert("x-session-id", value);
    }
    Ok(response)
}
