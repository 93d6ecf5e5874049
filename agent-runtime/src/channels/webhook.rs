//! `POST /channels/{name}/webhook`: a signed inbound message on a webhook
//! channel. Verified (HMAC over timestamp and body, timestamp within the
//! channel's tolerance, no replays), stored durably with an outbox row, and
//! answered `202 Accepted`; the answer is produced and delivered to the
//! channel's callback URL in the background (see [`super::delivery`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crds::runtime_config::ChannelType;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::auth::valid_id;
use crate::channel_registry::signing::{self, SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER};
use crate::conversation::{self, Participant, SessionRef};
use crate::db::NewDelivery;
use crate::error::{ApiError, ErrorBody, extract};
use crate::state::SharedState;

/// An inbound webhook message. Other fields are refused, not ignored: a
/// callback the runtime signed (same key, same scheme) sent back to it is not
/// taken for a message.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookMessage {
    /// The sender's conversation id: messages with the same id share a session.
    pub conversation_id: String,
    /// The sender's user id.
    pub user: String,
    /// The message text.
    pub text: String,
    /// The sender's own id for this message (optional, 1 to 256 printable
    /// characters): a message sent again with the same `user` and `messageId`
    /// (a retry after a lost answer, even signed anew) is taken once, and
    /// answered `200` with the first one's ids, for 3 hours after its answer
    /// was delivered.
    #[serde(default)]
    pub message_id: Option<String>,
}

/// The answer to an accepted message.
#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAccepted {
    /// Id of the answer's delivery (sent again as `X-Switchboard-Delivery`).
    pub delivery_id: String,
    /// The session the conversation maps to.
    pub session_id: String,
    /// The stored user message.
    pub message_id: String,
}

fn unauthorized(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// The replay key of an inbound message: its signature covers timestamp and body.
fn inbound_key(timestamp: i64, signature: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(timestamp.to_string().as_bytes());
    hasher.update(b".");
    hasher.update(signature.trim().to_ascii_lowercase().as_bytes());
    hex::encode(hasher.finalize())
}

/// The replay key of a message the sender named (`messageId`), per user.
fn message_key(user: &str, message_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"message\x1f");
    hasher.update(user.as_bytes());
    hasher.update(b"\x1f");
    hasher.update(message_id.as_bytes());
    hex::encode(hasher.finalize())
}

/// Receives a signed message.
#[utoipa::path(post, path = "/channels/{name}/webhook", tag = "channels",
    params(
        ("name" = String, Path, description = "The ChatChannel (type webhook)"),
        ("x-switchboard-timestamp" = String, Header, description = "Unix seconds when signed"),
        ("x-switchboard-signature" = String, Header, description = "sha256=<hex HMAC-SHA256 over \"<timestamp>.<raw body>\"> with the channel's signing key"),
    ),
    request_body = WebhookMessage,
    security(()),
    responses(
        (status = 202, description = "Stored; the answer will be POSTed to the channel's callback URL", body = WebhookAccepted),
        (status = 200, description = "A message with this `user` and `messageId` was taken before: its ids (nothing new is stored)", body = WebhookAccepted),
        (status = 400, body = ErrorBody), (status = 401, description = "Missing or bad signature, or a stale timestamp", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "This signed message was accepted before", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn receive(
    State(state): State<SharedState>,
    extract::Path(name): extract::Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else if let Some(stalled) = crate::error::find_source(&rejection) {
            ApiError::body_stalled(stalled)
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })?;
    let channel = state.channels.resolve(&name)?;
    let webhook = match (&channel.webhook, channel.channel_type) {
        (Some(webhook), ChannelType::Webhook) => webhook.clone(),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_a_webhook_channel",
                format!("channel {name:?} is not a webhook channel with webhook settings"),
            ));
        }
    };
    let key = state.webhooks.keys.key(&webhook.key).await.map_err(|err| {
        tracing::warn!(channel = %name, error = %err, "webhook signing key unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "signing_key_unavailable",
            "the channel's signing key cannot be read; try again later",
        )
    })?;
    let text_header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let signature = text_header(SIGNATURE_HEADER);
    let timestamp = signing::verify(
        &key,
        text_header(TIMESTAMP_HEADER),
        signature,
        &body,
        chrono::Utc::now().timestamp(),
        webhook.tolerance,
    )
    .map_err(|err| {
        tracing::info!(channel = %name, reason = %err, "webhook message refused");
        match err {
            SignatureError::Stale => unauthorized(
                "stale_timestamp",
                format!(
                    "timestamp is more than {}s from now: the message is replayed or stale; sign it again",
                    webhook.tolerance.as_secs()
                ),
            ),
            other => unauthorized("invalid_signature", other.to_string()),
        }
    })?;
    let message: WebhookMessage =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| {
                if e.inner().is_syntax() || e.inner().is_eof() {
                    ApiError::bad_request(
                        "invalid_json",
                        format!("body is not JSON: {}", e.inner()),
                    )
                } else {
                    ApiError::body_field(&e)
                }
            })?;
    let user = valid_id(&message.user, "`user`")?;
    let conversation = valid_id(&message.conversation_id, "`conversationId`")?;
    ApiError::refuse_nul("invalid_request", &message.text, || "text".to_owned())?;
    let chars = message.text.chars().count();
    if message.text.trim().is_empty() || chars > state.config.limits.max_message_chars {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "text must be 1 to {} characters",
                state.config.limits.max_message_chars
            ),
        ));
    }
    let participant = Participant {
        user: user.clone(),
        channel: name.clone(),
        language: channel.language.clone(),
        author: None,
    };
    let message_id = message
        .message_id
        .as_deref()
        .map(|id| valid_id(id, "`messageId`"))
        .transpose()?;
    let inbound = match &message_id {
        Some(id) => message_key(&user, id),
        None => inbound_key(timestamp, signature.unwrap_or_default()),
    };
    // The message's row first: a message taken before is answered without
    // counting against the sender's limits again.
    let delivery_id = uuid::Uuid::now_v7().to_string();
    let inserted = state
        .store
        .insert_delivery(&NewDelivery {
            id: delivery_id.clone(),
            channel: name.clone(),
            inbound_key: inbound.clone(),
            conversation_id: conversation.clone(),
            user_id: user,
            text: message.text.clone(),
            callback_url: webhook.callback_url.clone(),
            reply_to: None,
            interaction_token: None,
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await?;
    if !inserted {
        if message_id.is_some()
            && let Some(taken) = state.store.delivery_by_inbound_key(&name, &inbound).await?
            && let (Some(session_id), Some(message_id)) = (taken.session_id, taken.user_message_id)
        {
            tracing::info!(channel = %name, delivery = %taken.id, "webhook message taken before; its ids returned");
            return Ok((
                StatusCode::OK,
                Json(WebhookAccepted {
                    delivery_id: taken.id,
                    session_id,
                    message_id,
                }),
            )
                .into_response());
        }
        tracing::info!(channel = %name, "webhook message replayed; refused");
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "replayed",
            "this message was accepted before (replay refused); sign new messages with a new timestamp, \
             or give each its own messageId",
        ));
    }
    // Refused (a rate limit, the budget, a shutdown): the row goes, so the
    // sender's retry is taken afresh.
    let admitted = match conversation::admit(&state, participant).await {
        Ok(admitted) => admitted,
        Err(err) => {
            if let Err(e) = state.store.delete_delivery(&delivery_id).await {
                tracing::error!(delivery = %delivery_id, error = %e, "cannot drop a refused webhook message's row");
            }
            return Err(err.into());
        }
    };
    let recorded = super::delivery::record_for_delivery(
        &state,
        admitted.participant(),
        SessionRef::External(conversation),
        &message.text,
        &delivery_id,
        super::delivery::IfNotRecorded::DropRow,
    )
    .await?;
    tracing::info!(channel = %name, delivery = %delivery_id, session = %recorded.session_id, "webhook message accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookAccepted {
            delivery_id,
            session_id: recorded.session_id,
            message_id: recorded.message.id,
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keys_ignore_hex_case_but_not_the_timestamp() {
        assert_eq!(inbound_key(1, "sha256=AB"), inbound_key(1, "sha256=ab"));
        assert_ne!(inbound_key(1, "sha256=ab"), inbound_key(2, "sha256=ab"));
    }
}
