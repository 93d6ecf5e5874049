//! `POST /channels/{name}/slack/events`: a Slack app's Events API Request URL.
//! Requests are verified (v0 signature with the signing secret, timestamp
//! within 5 minutes), `url_verification` is answered with its challenge, and an
//! `app_mention` or direct message is stored with an outbox row keyed by its
//! `event_id` before the `200` (well inside Slack's 3 seconds); Slack's retries
//! of the same event find the row and are acknowledged without a second
//! answer. The answer is produced and posted in the thread through
//! `chat.postMessage` by the outbox worker ([`super::delivery`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crds::RespondTo;
use crds::runtime_config::ChannelType;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::channel_registry::{ChannelSettings, SlackSettings};
use crate::conversation::{self, Participant, SessionRef};
use crate::db::NewDelivery;
use crate::error::{ApiError, ErrorBody, extract};
use crate::state::SharedState;

/// Slack's signature header (`v0=<hex>`).
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// Slack's timestamp header (unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// How far a request's timestamp may be from now (Slack's recommendation).
const WINDOW_SECONDS: u64 = 300;
/// Separates the Slack conversation id from the thread's `ts` in a stored
/// conversation id (`C0123ABCD:1700000000.000100`).
const THREAD_SEPARATOR: char = ':';

/// Why a Slack request's signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlackSignatureError {
    /// A header is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The timestamp is not a number of seconds.
    #[error("{TIMESTAMP_HEADER} must be unix seconds")]
    BadTimestamp,
    /// The timestamp is more than 5 minutes from now.
    #[error("{TIMESTAMP_HEADER} is more than 5 minutes from now: the request is replayed or stale")]
    Stale,
    /// The signature is not `v0=<hex>` or does not match.
    #[error(
        "{SIGNATURE_HEADER} does not match the body and timestamp (v0 with the signing secret)"
    )]
    Mismatch,
}

/// Checks a v0 signature (`v0=` hex HMAC-SHA256 of `v0:{timestamp}:{body}`) in
/// constant time, and the timestamp against `now` (unix seconds).
pub fn verify_v0(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SlackSignatureError> {
    let timestamp = timestamp.ok_or(SlackSignatureError::Missing(TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(SlackSignatureError::Missing(SIGNATURE_HEADER))?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SlackSignatureError::BadTimestamp)?;
    if now.abs_diff(at) > WINDOW_SECONDS {
        return Err(SlackSignatureError::Stale);
    }
    let presented = signature
        .trim()
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SlackSignatureError::Mismatch)?;
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(b"v0:");
    mac.update(at.to_string().as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&presented)
        .map_err(|_| SlackSignatureError::Mismatch)
}

/// The outer Events API request.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    challenge: Option<String>,
    team_id: Option<String>,
    event_id: Option<String>,
    event: Option<SlackEvent>,
    authorizations: Vec<Authorization>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct Authorization {
    user_id: Option<String>,
}

/// The inner event (the fields used of `app_mention` and `message`).
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct SlackEvent {
    #[serde(rename = "type")]
    kind: String,
    subtype: Option<String>,
    bot_id: Option<String>,
    user: Option<String>,
    text: Option<String>,
    ts: Option<String>,
    thread_ts: Option<String>,
    channel: Option<String>,
    channel_type: Option<String>,
}

/// A message this channel answers.
#[derive(Debug, PartialEq, Eq)]
struct Incoming {
    event_id: String,
    user: String,
    text: String,
    /// `C…:<thread ts>` in channels (the thread is the session), the DM's id
    /// for a direct message outside a thread.
    conversation: String,
}

/// Where an answer goes: the Slack conversation and the thread, if any.
pub fn reply_target(conversation: &str) -> (&str, Option<&str>) {
    match conversation.split_once(THREAD_SEPARATOR) {
        Some((channel, ts)) => (channel, Some(ts)),
        None => (conversation, None),
    }
}

/// Removes `<@U…>` mentions of the bot and surrounding blanks.
fn without_mention(text: &str, bot: Option<&str>) -> String {
    let mut out = text.to_owned();
    if let Some(bot) = bot {
        out = out.replace(&format!("<@{bot}>"), " ");
    }
    out.trim().to_owned()
}

/// Message subtypes a person sends with text to answer: a message with files
/// (`file_share`), a thread reply also sent to the channel
/// (`thread_broadcast`) and `/me` (`me_message`). Every other subtype is an
/// edit, a deletion, a join or a bot's message.
fn is_person_message(subtype: &str) -> bool {
    matches!(subtype, "file_share" | "thread_broadcast" | "me_message")
}

/// Which messages of an `event_callback` this channel answers (pure): the
/// workspace and channel ids, `respondTo` and `directMessages`; bot messages and
/// edits never.
fn incoming(settings: &SlackSettings, envelope: &Envelope) -> Option<Incoming> {
    if let Some(team) = &settings.team_id
        && envelope.team_id.as_deref() != Some(team.as_str())
    {
        return None;
    }
    let event = envelope.event.as_ref()?;
    if event.bot_id.is_some() || !event.subtype.as_deref().is_none_or(is_person_message) {
        return None;
    }
    let channel = event.channel.as_deref()?;
    let bot = envelope
        .authorizations
        .first()
        .and_then(|a| a.user_id.as_deref());
    let is_dm = event.channel_type.as_deref() == Some("im");
    let listed =
        settings.channel_ids.is_empty() || settings.channel_ids.iter().any(|c| c == channel);
    let text = event.text.as_deref().unwrap_or_default();
    let answered = match event.kind.as_str() {
        "app_mention" => listed,
        "message" if is_dm => settings.direct_messages,
        // In channels with AllMessages; a mention also comes as app_mention.
        "message" => {
            settings.respond_to == RespondTo::AllMessages
                && listed
                && !bot.is_some_and(|b| text.contains(&format!("<@{b}>")))
        }
        _ => false,
    };
    if !answered || event.user.as_deref() == bot {
        return None;
    }
    let text = without_mention(text, bot);
    if text.is_empty() {
        return None;
    }
    let ts = event.ts.as_deref()?;
    let conversation = match (&event.thread_ts, is_dm) {
        (Some(thread), _) => format!("{channel}{THREAD_SEPARATOR}{thread}"),
        (None, true) => channel.to_owned(),
        (None, false) => format!("{channel}{THREAD_SEPARATOR}{ts}"),
    };
    Some(Incoming {
        event_id: envelope.event_id.clone()?,
        user: event.user.clone()?,
        text,
        conversation,
    })
}

fn unauthorized(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Receives one Events API request.
#[utoipa::path(post, path = "/channels/{name}/slack/events", tag = "channels", operation_id = "receive_slack_event",
    params(
        ("name" = String, Path, description = "The ChatChannel (type slack, Events API)"),
        ("x-slack-request-timestamp" = String, Header, description = "Unix seconds when Slack signed the request"),
        ("x-slack-signature" = String, Header, description = "v0=<hex HMAC-SHA256 over \"v0:<timestamp>:<raw body>\"> with the app's signing secret"),
    ),
    request_body(content = serde_json::Value, description = "An Events API request: url_verification or event_callback"),
    security(()),
    responses(
        (status = 200, description = "Acknowledged (the answer is posted in the thread afterwards); url_verification: the challenge", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 401, description = "Missing or bad signature, or a timestamp more than 5 minutes away", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn receive(
    State(state): State<SharedState>,
    extract::Path(name): extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let channel = state.channels.resolve(&name)?;
    let slack = match (&channel.slack, channel.channel_type) {
        (Some(slack), ChannelType::Slack) if slack.signing_secret.is_some() => slack.clone(),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_a_slack_events_channel",
                format!("channel {name:?} is not a slack channel in EventsApi mode"),
            ));
        }
    };
    let Some(secret_source) = &slack.signing_secret else {
        unreachable!("checked above")
    };
    let secret = state
        .webhooks
        .keys
        .key(secret_source)
        .await
        .map_err(|err| {
            tracing::warn!(channel = %name, error = %err, "Slack signing secret unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "signing_secret_unavailable",
                "the channel's signing secret cannot be read; try again later",
            )
        })?;
    let text_header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    verify_v0(
        &secret,
        text_header(TIMESTAMP_HEADER),
        text_header(SIGNATURE_HEADER),
        &body,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|err| {
        tracing::info!(channel = %name, reason = %err, "Slack request refused");
        match err {
            SlackSignatureError::Stale => unauthorized("stale_timestamp", err.to_string()),
            other => unauthorized("invalid_signature", other.to_string()),
        }
    })?;
    let envelope: Envelope = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("body must be a Slack Events API request (JSON with `type`): {e}"),
        )
    })?;
    match envelope.kind.as_str() {
        "url_verification" => {
            let challenge = envelope.challenge.unwrap_or_default();
            return Ok(Json(json!({ "challenge": challenge })).into_response());
        }
        "event_callback" => {}
        other => {
            tracing::debug!(channel = %name, kind = other, "Slack request ignored");
            return Ok(StatusCode::OK.into_response());
        }
    }
    let Some(message) = incoming(&slack, &envelope) else {
        return Ok(StatusCode::OK.into_response());
    };
    store_event(&state, &channel, message).await?;
    Ok(StatusCode::OK.into_response())
}

/// A Socket Mode `events_api` envelope's payload (an `event_callback`): the
/// first of `channels` (served by the connection's app token) that answers it
/// stores it with its outbox row. `Ok` once stored, seen before, or not for
/// any channel: the envelope may then be acknowledged; an error leaves it
/// unacknowledged so that Slack delivers it again.
pub async fn accept_socket_event(
    state: &SharedState,
    channels: &[std::sync::Arc<ChannelSettings>],
    payload: serde_json::Value,
) -> Result<(), ApiError> {
    let envelope: Envelope = serde_json::from_value(payload).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("payload must be an Events API event_callback: {e}"),
        )
    })?;
    if envelope.kind != "event_callback" {
        return Ok(());
    }
    let found = channels.iter().find_map(|c| {
        c.slack
            .as_ref()
            .and_then(|s| incoming(s, &envelope))
            .map(|m| (c, m))
    });
    let Some((channel, message)) = found else {
        return Ok(());
    };
    store_event(state, channel, message).await
}

/// Stores a message with its outbox row keyed by the event id (Slack's
/// redeliveries of the same event find the row and store nothing).
async fn store_event(
    state: &SharedState,
    channel: &ChannelSettings,
    message: Incoming,
) -> Result<(), ApiError> {
    let name = channel.name.clone();
    let participant = Participant {
        user: message.user.clone(),
        channel: name.clone(),
        language: channel.language.clone(),
        author: None,
    };
    // A thread is one session for everyone in it: the session of the user who
    // started it (each message keeps its author). A DM is its user's own.
    let owner = if message.conversation.contains(THREAD_SEPARATOR) {
        state
            .store
            .conversation_owner(&name, &message.conversation)
            .await?
            .unwrap_or_else(|| message.user.clone())
    } else {
        message.user.clone()
    };
    // The event's row first: a redelivery of an event already taken is
    // acknowledged without counting against the user's limits again.
    let delivery_id = uuid::Uuid::now_v7().to_string();
    let inserted = state
        .store
        .insert_delivery(&NewDelivery {
            id: delivery_id.clone(),
            channel: name.clone(),
            inbound_key: format!("slack:{}", message.event_id),
            conversation_id: message.conversation.clone(),
            user_id: owner.clone(),
            text: message.text.clone(),
            callback_url: String::new(),
            reply_to: None,
            interaction_token: None,
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await?;
    if !inserted {
        tracing::info!(channel = %name, event = %message.event_id, "Slack event seen before; acknowledged again");
        return Ok(());
    }
    // Refused (a rate limit, the budget, a shutdown): the row goes, so that
    // Slack's own retries of the event (after a minute, then five) are
    // admitted afresh.
    let admitted = match conversation::admit(state, participant).await {
        Ok(admitted) => admitted,
        Err(err) => {
            if let Err(e) = state.store.delete_delivery(&delivery_id).await {
                tracing::error!(delivery = %delivery_id, error = %e, "cannot drop a refused Slack event's row");
            }
            return Err(err.into());
        }
    };
    let in_session = Participant {
        user: owner,
        author: Some(message.user.clone()),
        ..admitted.participant().clone()
    };
    let recorded = super::delivery::record_for_delivery(
        state,
        &in_session,
        SessionRef::External(message.conversation.clone()),
        &message.text,
        &delivery_id,
        // Kept, not dropped: a Slack retry that came while this request was
        // still storing found the row and was acknowledged, so Slack may not
        // send the event again; the delivery worker stores it after the
        // intake grace instead.
        super::delivery::IfNotRecorded::KeepRow,
    )
    .await?;
    tracing::info!(channel = %name, delivery = %delivery_id, session = %recorded.session_id, "Slack message accepted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel_registry::SigningKeySource;

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

    fn settings() -> SlackSettings {
        SlackSettings {
            bot_token: SigningKeySource::Env("T".into()),
            signing_secret: Some(SigningKeySource::Env("S".into())),
            app_token: None,
            team_id: Some("T0TEAM0001".into()),
            channel_ids: vec!["C0CHAN0001".into()],
            respond_to: RespondTo::Mentions,
            direct_messages: true,
        }
    }

    fn envelope(value: serde_json::Value) -> Envelope {
        serde_json::from_value(value).expect("envelope")
    }

    fn event(kind: &str, extra: serde_json::Value) -> Envelope {
        let mut event = json!({"type": kind, "user": "U0USER0001", "text": "<@U0BOT0001> hello",
            "ts": "1700000000.000100", "channel": "C0CHAN0001"});
        if let (Some(e), Some(x)) = (event.as_object_mut(), extra.as_object()) {
            e.extend(x.clone());
        }
        envelope(
            json!({"type": "event_callback", "team_id": "T0TEAM0001", "event_id": "Ev1",
            "event": event, "authorizations": [{"user_id": "U0BOT0001"}]}),
        )
    }

    #[test]
    fn slacks_documented_signature_verifies() {
        // The example of Slack's "Verifying requests" page.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let ok = verify_v0(SECRET, Some("1531420618"), Some(sig), body, 1_531_420_700);
        assert_eq!(ok, Ok(()));
        assert_eq!(
            verify_v0(SECRET, Some("1531420618"), Some(sig), b"x", 1_531_420_700),
            Err(SlackSignatureError::Mismatch)
        );
        assert_eq!(
            verify_v0(
                SECRET,
                Some("1531420618"),
                Some(sig),
                body,
                1_531_420_618 + 301
            ),
            Err(SlackSignatureError::Stale)
        );
        assert_eq!(
            verify_v0(SECRET, None, Some(sig), body, 1_531_420_618),
            Err(SlackSignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            verify_v0(
                SECRET,
                Some("1531420618"),
                Some("sha256=00"),
                body,
                1_531_420_618
            ),
            Err(SlackSignatureError::Mismatch)
        );
    }

    #[test]
    fn a_mention_starts_a_thread_and_a_reply_stays_in_it() {
        let got = incoming(&settings(), &event("app_mention", json!({}))).expect("answered");
        assert_eq!(got.text, "hello");
        assert_eq!(got.conversation, "C0CHAN0001:1700000000.000100");
        assert_eq!(
            reply_target(&got.conversation),
            ("C0CHAN0001", Some("1700000000.000100"))
        );
        let reply = incoming(
            &settings(),
            &event(
                "app_mention",
                json!({"ts": "1700000009.0", "thread_ts": "1700000000.000100"}),
            ),
        )
        .expect("answered");
        assert_eq!(
            reply.conversation, got.conversation,
            "the thread is the session"
        );
    }

    #[test]
    fn direct_messages_other_workspaces_channels_and_bots() {
        let dm = event(
            "message",
            json!({"channel_type": "im", "channel": "D0DM000001", "text": "hi"}),
        );
        let got = incoming(&settings(), &dm).expect("DM answered");
        assert_eq!(got.conversation, "D0DM000001");
        assert_eq!(reply_target("D0DM000001"), ("D0DM000001", None));
        let no_dms = SlackSettings {
            direct_messages: false,
            ..settings()
        };
        assert!(incoming(&no_dms, &dm).is_none());
        let mut other_team = event("app_mention", json!({}));
        other_team.team_id = Some("T0OTHER001".into());
        assert!(incoming(&settings(), &other_team).is_none());
        assert!(
            incoming(
                &settings(),
                &event("app_mention", json!({"channel": "C0ELSE0001"}))
            )
            .is_none()
        );
        assert!(
            incoming(
                &settings(),
                &event("message", json!({"bot_id": "B1", "channel_type": "im"}))
            )
            .is_none()
        );
        assert!(
            incoming(
                &settings(),
                &event(
                    "message",
                    json!({"subtype": "message_changed", "channel_type": "im"})
                )
            )
            .is_none()
        );
        assert!(
            incoming(
                &settings(),
                &event("app_mention", json!({"text": "<@U0BOT0001>"}))
            )
            .is_none(),
            "nothing asked"
        );
        // Channel messages: only with AllMessages, and not a second time for a mention.
        let plain = event(
            "message",
            json!({"channel_type": "channel", "text": "anyone?"}),
        );
        assert!(incoming(&settings(), &plain).is_none());
        let all = SlackSettings {
            respond_to: RespondTo::AllMessages,
            ..settings()
        };
        assert!(incoming(&all, &plain).is_some());
        assert!(incoming(&all, &event("message", json!({"channel_type": "channel"}))).is_none());
    }

    /// A person's message with files, a thread reply also sent to the channel
    /// and `/me` carry a subtype and are answered; edits, joins and bot
    /// messages are not.
    #[test]
    fn a_persons_message_with_a_subtype_is_answered() {
        for subtype in ["file_share", "thread_broadcast", "me_message"] {
            let dm = event(
                "message",
                json!({"subtype": subtype, "channel_type": "im", "text": "see attached"}),
            );
            let got = incoming(&settings(), &dm).unwrap_or_else(|| panic!("{subtype} answered"));
            assert_eq!(got.text, "see attached");
        }
        for subtype in [
            "message_changed",
            "message_deleted",
            "channel_join",
            "bot_message",
        ] {
            let dm = event(
                "message",
                json!({"subtype": subtype, "channel_type": "im", "text": "x"}),
            );
            assert!(incoming(&settings(), &dm).is_none(), "{subtype} ignored");
        }
    }
}
