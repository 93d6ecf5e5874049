//! `POST /channels/{name}/discord/interactions`: a Discord application's
//! Interactions Endpoint URL. Every request is verified with the application's
//! Ed25519 public key (`X-Signature-Ed25519` over `X-Signature-Timestamp` and
//! the raw body; a missing or wrong signature is a 401, as Discord requires);
//! `PING` is answered with `PONG`; the channel's slash command (`/ask
//! question:…`) is stored with an outbox row keyed by the interaction id and
//! answered at once with a deferred response (type 5, "thinking…", well inside
//! Discord's 3 seconds). The outbox worker ([`super::delivery`]) then has the
//! conversation service answer it and edits the deferred response with the
//! answer through the interaction's follow-up webhook.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crds::runtime_config::ChannelType;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::channel_registry::DiscordSettings;
use crate::conversation::{self, Participant, SessionRef};
use crate::db::NewDelivery;
use crate::error::{ApiError, ErrorBody, extract};
use crate::state::SharedState;

/// The signature header (hex Ed25519 signature).
pub const SIGNATURE_HEADER: &str = "x-signature-ed25519";
/// The timestamp header (signed together with the body).
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";

/// Interaction types (Discord's `type`).
const PING: u8 = 1;
const APPLICATION_COMMAND: u8 = 2;
/// Response types.
const PONG: u8 = 1;
const CHANNEL_MESSAGE: u8 = 4;
const DEFERRED_CHANNEL_MESSAGE: u8 = 5;
/// Message flag: only the user who asked sees it.
const EPHEMERAL: u32 = 1 << 6;

/// Why an interaction's signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InteractionSignatureError {
    /// A header is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The signature is not 128 hex digits.
    #[error("{SIGNATURE_HEADER} must be 128 hexadecimal digits (an Ed25519 signature)")]
    Malformed,
    /// The signature does not verify.
    #[error(
        "{SIGNATURE_HEADER} does not verify over {TIMESTAMP_HEADER} and the body with the application's public key"
    )]
    Mismatch,
    /// A signed interaction whose timestamp is not within [`FRESH`] of now: a
    /// captured request sent again after its id left the outbox.
    #[error(
        "{TIMESTAMP_HEADER} is not within 10 minutes of now: the interaction is replayed or stale"
    )]
    Stale,
}

/// How far an interaction's signed timestamp may be from the runtime's
/// clock. Discord sends an interaction once, at once; its id is remembered
/// for 3 hours (the outbox's finished rows), well past this.
pub const FRESH: std::time::Duration = std::time::Duration::from_secs(600);

/// Refuses a signed timestamp (Unix seconds) further than [`FRESH`] from
/// `now` (Unix seconds), or one that is not a number.
pub fn fresh(timestamp: &str, now: i64) -> Result<(), InteractionSignatureError> {
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| InteractionSignatureError::Stale)?;
    if at.abs_diff(now) > FRESH.as_secs() {
        return Err(InteractionSignatureError::Stale);
    }
    Ok(())
}

/// The configured public key is not a valid Ed25519 key.
#[derive(Debug, thiserror::Error)]
#[error("the channel's Discord public key is not 64 hex digits of a valid Ed25519 key")]
pub struct BadPublicKey;

/// Parses a public key given as 64 hex digits.
pub fn public_key(hex_key: &[u8]) -> Result<VerifyingKey, BadPublicKey> {
    let text = std::str::from_utf8(hex_key).map_err(|_| BadPublicKey)?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(BadPublicKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| BadPublicKey)
}

/// Checks Discord's signature: Ed25519 over the timestamp followed by the body.
pub fn verify(
    key: &VerifyingKey,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), InteractionSignatureError> {
    let timestamp = timestamp.ok_or(InteractionSignatureError::Missing(TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(InteractionSignatureError::Missing(SIGNATURE_HEADER))?;
    let bytes: [u8; 64] = hex::decode(signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(InteractionSignatureError::Malformed)?;
    let signature = Signature::from_bytes(&bytes);
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    key.verify_strict(&message, &signature)
        .map_err(|_| InteractionSignatureError::Mismatch)
}

/// The fields used of an interaction.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct Interaction {
    #[serde(rename = "type")]
    kind: u8,
    id: String,
    token: String,
    guild_id: Option<String>,
    channel_id: Option<String>,
    channel: Option<IdOnly>,
    member: Option<Member>,
    user: Option<IdOnly>,
    data: Option<CommandData>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct Member {
    user: Option<IdOnly>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct CommandData {
    name: String,
    options: Vec<CommandOption>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct CommandOption {
    name: String,
    value: Option<Value>,
}

/// A slash command this channel answers.
#[derive(Debug, PartialEq, Eq)]
struct Asked {
    user: String,
    channel: String,
    text: String,
}

/// What to do with an application command (pure): the question asked, or the
/// ephemeral note to answer with.
fn asked(settings: &DiscordSettings, interaction: &Interaction) -> Result<Asked, &'static str> {
    let data = interaction
        .data
        .as_ref()
        .ok_or("This command is not known here.")?;
    if data.name != settings.slash_command {
        return Err("This command is not known here.");
    }
    let user = interaction
        .member
        .as_ref()
        .and_then(|m| m.user.as_ref())
        .or(interaction.user.as_ref())
        .map(|u| u.id.clone())
        .ok_or("This command needs a user.")?;
    let channel = interaction
        .channel_id
        .clone()
        .or_else(|| interaction.channel.as_ref().map(|c| c.id.clone()))
        .ok_or("This command needs a channel.")?;
    match &interaction.guild_id {
        None if !settings.direct_messages => return Err("I do not answer direct messages."),
        Some(guild) if !settings.guild_ids.is_empty() && !settings.guild_ids.contains(guild) => {
            return Err("I do not answer in this server.");
        }
        Some(_) if !settings.channel_ids.is_empty() && !settings.channel_ids.contains(&channel) => {
            return Err("I do not answer in this channel.");
        }
        _ => {}
    }
    // The `question` option, else every string option.
    let strings = |only: Option<&str>| {
        data.options
            .iter()
            .filter(|o| only.is_none_or(|n| o.name == n))
            .filter_map(|o| o.value.as_ref().and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut text = strings(Some("question"));
    if text.trim().is_empty() {
        text = strings(None);
    }
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err("Ask a question, e.g. /ask question: what are your opening hours?");
    }
    Ok(Asked {
        user,
        channel,
        text,
    })
}

fn reply(kind: u8) -> Response {
    Json(json!({ "type": kind })).into_response()
}

fn note(content: &str) -> Response {
    Json(json!({"type": CHANNEL_MESSAGE, "data": {"content": content, "flags": EPHEMERAL}}))
        .into_response()
}

fn unavailable(code: &'static str, message: &'static str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
}

/// Receives one interaction.
#[utoipa::path(post, path = "/channels/{name}/discord/interactions", tag = "channels", operation_id = "receive_discord_interaction",
    params(
        ("name" = String, Path, description = "The ChatChannel (type discord, with publicKey or publicKeyRef)"),
        ("x-signature-ed25519" = String, Header, description = "Hex Ed25519 signature over X-Signature-Timestamp followed by the raw body, with the application's key"),
        ("x-signature-timestamp" = String, Header, description = "The timestamp Discord signed with the body"),
    ),
    request_body(content = serde_json::Value, description = "A Discord interaction: PING (type 1) or APPLICATION_COMMAND (type 2)"),
    security(()),
    responses(
        (status = 200, description = "PONG (`{\"type\":1}`) for PING; a deferred response (`{\"type\":5}`) for the slash command, whose answer then edits it; an ephemeral note (`type` 4) for a command not answered here", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 401, description = "Missing or bad X-Signature-Ed25519 / X-Signature-Timestamp", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn receive(
    State(state): State<SharedState>,
    extract::Path(name): extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let channel = state.channels.resolve(&name)?;
    let (discord, key_source) = match (&channel.discord, channel.channel_type) {
        (Some(d), ChannelType::Discord) if d.public_key.is_some() && d.application_id.is_some() => {
            (d.clone(), d.public_key.clone())
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_a_discord_interactions_channel",
                format!(
                    "channel {name:?} is not a discord channel with an Interactions endpoint (it needs spec.discord.applicationId and publicKey or publicKeyRef)"
                ),
            ));
        }
    };
    let Some(key_source) = key_source else {
        unreachable!("checked above")
    };
    let key = state.webhooks.keys.key(&key_source).await.map_err(|err| {
        tracing::warn!(channel = %name, error = %err, "Discord public key unavailable");
        unavailable(
            "public_key_unavailable",
            "the channel's Discord public key cannot be read; try again later",
        )
    })?;
    let key = public_key(&key).map_err(|err| {
        tracing::warn!(channel = %name, error = %err, "Discord public key invalid");
        unavailable(
            "public_key_invalid",
            "the channel's Discord public key (spec.discord.publicKey) is not a valid Ed25519 key",
        )
    })?;
    let text_header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    verify(
        &key,
        text_header(TIMESTAMP_HEADER),
        text_header(SIGNATURE_HEADER),
        &body,
    )
    .and_then(|()| {
        fresh(
            text_header(TIMESTAMP_HEADER).unwrap_or_default(),
            chrono::Utc::now().timestamp(),
        )
    })
    .map_err(|err| {
        tracing::info!(channel = %name, reason = %err, "Discord interaction refused");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            err.to_string(),
        )
    })?;
    let interaction: Interaction = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("body must be a Discord interaction (JSON with `type`): {e}"),
        )
    })?;
    match interaction.kind {
        PING => return Ok(reply(PONG)),
        APPLICATION_COMMAND => {}
        other => {
            tracing::debug!(channel = %name, kind = other, "Discord interaction ignored");
            return Ok(note("This interaction is not answered here."));
        }
    }
    let asked = match asked(&discord, &interaction) {
        Ok(asked) => asked,
        Err(why) => return Ok(note(why)),
    };
    let participant = Participant {
        user: asked.user.clone(),
        channel: name.clone(),
        language: channel.language.clone(),
        author: None,
    };
    let admitted = match conversation::admit(&state, participant).await {
        Ok(admitted) => admitted,
        Err(err) => {
            tracing::info!(channel = %name, error = %err, "Discord slash command not admitted");
            return Ok(note(&err.to_string()));
        }
    };
    let delivery_id = uuid::Uuid::now_v7().to_string();
    let inserted = state
        .store
        .insert_delivery(&NewDelivery {
            id: delivery_id.clone(),
            channel: name.clone(),
            inbound_key: format!("discord-interaction:{}", interaction.id),
            conversation_id: asked.channel.clone(),
            user_id: asked.user.clone(),
            text: asked.text.clone(),
            callback_url: String::new(),
            reply_to: None,
            interaction_token: Some(interaction.token.clone()),
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await?;
    if !inserted {
        tracing::info!(channel = %name, interaction = %interaction.id, "Discord interaction seen before");
        return Ok(reply(DEFERRED_CHANNEL_MESSAGE));
    }
    // Discord does not send an interaction again: when it cannot be recorded
    // now, the row stays and the delivery worker records and answers it.
    if let Err(err) = super::delivery::record_for_delivery(
        &state,
        admitted.participant(),
        SessionRef::External(asked.channel),
        &asked.text,
        &delivery_id,
        super::delivery::IfNotRecorded::KeepRow,
    )
    .await
    {
        tracing::warn!(channel = %name, delivery = %delivery_id, error = %err,
            "Discord slash command stored; recording it is left to the delivery worker");
    }
    tracing::info!(channel = %name, delivery = %delivery_id, "Discord slash command accepted");
    Ok(reply(DEFERRED_CHANNEL_MESSAGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel_registry::SigningKeySource;
    use crds::RespondTo;
    use ed25519_dalek::{Signer, SigningKey};

    fn settings() -> DiscordSettings {
        DiscordSettings {
            bot_token: SigningKeySource::Env("T".into()),
            guild_ids: vec!["10".into()],
            channel_ids: Vec::new(),
            respond_to: RespondTo::Mentions,
            direct_messages: false,
            application_id: Some("1".into()),
            public_key: Some(SigningKeySource::Inline("k".into())),
            slash_command: "ask".into(),
        }
    }

    fn command(value: Value) -> Interaction {
        serde_json::from_value(value).expect("interaction")
    }

    #[test]
    fn signatures_verify_over_timestamp_and_body() {
        let signing = SigningKey::from_bytes(&[7; 32]);
        let hex_key = hex::encode(signing.verifying_key().as_bytes());
        let key = public_key(hex_key.as_bytes()).expect("key");
        let body = br#"{"type":1}"#;
        let mut signed = b"1700000000".to_vec();
        signed.extend_from_slice(body);
        let signature = hex::encode(signing.sign(&signed).to_bytes());
        assert_eq!(
            verify(&key, Some("1700000000"), Some(&signature), body),
            Ok(())
        );
        assert_eq!(
            verify(&key, Some("1700000001"), Some(&signature), body),
            Err(InteractionSignatureError::Mismatch)
        );
        assert_eq!(
            verify(&key, Some("1700000000"), Some(&signature), b"{}"),
            Err(InteractionSignatureError::Mismatch)
        );
        assert_eq!(
            verify(&key, None, Some(&signature), body),
            Err(InteractionSignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            verify(&key, Some("1"), None, body),
            Err(InteractionSignatureError::Missing(SIGNATURE_HEADER))
        );
        assert_eq!(
            verify(&key, Some("1"), Some("zz"), body),
            Err(InteractionSignatureError::Malformed)
        );
        assert!(public_key(b"00").is_err());
    }

    #[test]
    fn a_timestamp_far_from_now_is_stale() {
        let now = 1_700_000_000;
        assert_eq!(fresh("1700000000", now), Ok(()));
        assert_eq!(fresh("1699999500", now), Ok(()));
        assert_eq!(fresh("1700000590", now), Ok(()));
        assert_eq!(
            fresh("1699999000", now),
            Err(InteractionSignatureError::Stale)
        );
        assert_eq!(
            fresh("1700000700", now),
            Err(InteractionSignatureError::Stale)
        );
        assert_eq!(fresh("soon", now), Err(InteractionSignatureError::Stale));
    }

    #[test]
    fn the_slash_command_is_asked_where_the_channel_answers() {
        let ok = command(json!({"type": 2, "id": "5", "token": "t", "guild_id": "10",
            "channel_id": "20", "member": {"user": {"id": "30"}},
            "data": {"name": "ask", "options": [{"name": "question", "type": 3, "value": " hours? "}]}}));
        assert_eq!(
            asked(&settings(), &ok),
            Ok(Asked {
                user: "30".into(),
                channel: "20".into(),
                text: "hours?".into()
            })
        );
        let other_guild = command(json!({"type": 2, "guild_id": "11", "channel_id": "20",
            "member": {"user": {"id": "30"}}, "data": {"name": "ask", "options": [{"name": "question", "value": "x"}]}}));
        assert!(asked(&settings(), &other_guild).is_err());
        let dm = command(json!({"type": 2, "channel_id": "20", "user": {"id": "30"},
            "data": {"name": "ask", "options": [{"name": "question", "value": "x"}]}}));
        assert!(asked(&settings(), &dm).is_err(), "no DMs");
        let dms = DiscordSettings {
            direct_messages: true,
            ..settings()
        };
        assert_eq!(asked(&dms, &dm).map(|a| a.user), Ok("30".into()));
        let unknown = command(json!({"type": 2, "guild_id": "10", "channel_id": "20",
            "member": {"user": {"id": "30"}}, "data": {"name": "other"}}));
        assert!(asked(&settings(), &unknown).is_err());
        let empty = command(json!({"type": 2, "guild_id": "10", "channel_id": "20",
            "member": {"user": {"id": "30"}}, "data": {"name": "ask", "options": []}}));
        assert!(asked(&settings(), &empty).is_err());
    }
}
