//! Delivers answers from the outbox: has the conversation service answer each
//! pending message (when not done yet), then hands the answer to its channel:
//! POSTed signed to a webhook's callback URL, or posted in the Slack thread
//! with `chat.postMessage`. Retries with exponential backoff and jitter (a
//! platform's `429 Retry-After` is waited out exactly) until accepted, across
//! restarts; delivered rows are marked done. Several pods share the outbox:
//! each row is worked by the one holding its lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::channel_registry::signing::{self, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::channel_registry::webhook::WebhookAnswer;
use crate::conversation::{self, Participant, SessionRef};
use crate::db::Delivery;
use crate::error::ApiError;
use crate::state::{AppState, SharedState};

/// How often the outbox is polled when nothing wakes the dispatcher.
const POLL: Duration = Duration::from_secs(1);
/// Deliveries worked on at once.
const CONCURRENCY: usize = 8;
/// A delivery still failing after this long is given up (marked `failed`).
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Finished rows are kept this long: longer than the widest replay window
/// (timestamps up to 3600 s either side of now), after which replays are
/// refused by their timestamp.
const KEEP_FINISHED: Duration = Duration::from_secs(3 * 3600);
/// Given-up rows are kept this long, so an admin can retry them
/// (`POST /api/admin/outbox/{id}/retry`).
const KEEP_FAILED: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long Discord accepts an interaction's token (15 minutes, a margin kept).
const INTERACTION_TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);
/// Timeout of one callback POST.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0
}

/// How often the outbox backlog gauges are recounted.
const BACKLOG_EVERY: Duration = Duration::from_secs(10);

/// Sets the backlog gauges: every webhook channel served (zero when nothing
/// waits) and every channel with undelivered rows.
async fn count_backlog(state: &SharedState) {
    let rows = match state.store.pending_deliveries_by_channel().await {
        Ok(rows) => rows,
        Err(err) => {
            tracing::warn!(error = %err, "cannot count the webhook outbox backlog");
            return;
        }
    };
    let (pending, age) = (
        &state.metrics.webhook_outbox_pending,
        &state.metrics.webhook_outbox_oldest_age,
    );
    pending.reset();
    age.reset();
    for channel in state.channels.all() {
        if channel.channel_type == crds::ChannelType::Webhook {
            pending.with_label_values(&[&channel.name]).set(0);
            age.with_label_values(&[&channel.name]).set(0.0);
        }
    }
    let now = now_ms();
    for (channel, count, oldest_ms) in rows {
        pending.with_label_values(&[&channel]).set(count);
        age.with_label_values(&[&channel])
            .set((now - oldest_ms).max(0) as f64 / 1000.0);
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What becomes of an outbox row whose message cannot be stored at intake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfNotRecorded {
    /// Drop the row: the sender was refused and will send again (webhook).
    DropRow,
    /// Keep the row: nobody may send it again (Discord; Slack, whose retry
    /// may have been acknowledged meanwhile); the delivery worker
    /// records the message once the row's intake grace has passed.
    KeepRow,
}

/// Records a message whose answer goes out through the outbox row `delivery_id`
/// (already inserted by the intake); once stored, the row becomes due and the
/// delivery worker is woken. When the message cannot be stored, `if_not` says
/// whether the row goes. Shared by every intake that answers through the outbox.
pub async fn record_for_delivery(
    state: &AppState,
    participant: &Participant,
    session: SessionRef,
    text: &str,
    delivery_id: &str,
    if_not: IfNotRecorded,
) -> Result<conversation::Recorded, ApiError> {
    let recorded = match conversation::record(state, participant, session, text).await {
        Ok(recorded) => recorded,
        Err(err) => {
            if if_not == IfNotRecorded::DropRow
                && let Err(e) = state.store.delete_delivery(delivery_id).await
            {
                tracing::error!(delivery = %delivery_id, error = %e, "cannot drop a failed delivery");
            }
            return Err(err.into());
        }
    };
    state
        .store
        .delivery_ready(
            delivery_id,
            &recorded.session_id,
            &recorded.message.id,
            chrono::Utc::now().timestamp_millis(),
        )
        .await?;
    state.webhooks.wake();
    Ok(recorded)
}

/// Works the outbox until `shutdown` is cancelled.
pub async fn run(state: SharedState, shutdown: CancellationToken) {
    let workers = Arc::new(Semaphore::new(CONCURRENCY));
    let mut last_purge = std::time::Instant::now();
    let mut last_backlog: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            () = state.webhooks.woken() => {}
            () = tokio::time::sleep(POLL) => {}
            () = shutdown.cancelled() => return,
        }
        if last_backlog.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY) {
            last_backlog = Some(std::time::Instant::now());
            count_backlog(&state).await;
        }
        if last_purge.elapsed() > Duration::from_secs(600) {
            last_purge = std::time::Instant::now();
            if let Err(err) = state
                .store
                .purge_deliveries(
                    now_ms() - millis(KEEP_FINISHED),
                    now_ms() - millis(KEEP_FAILED),
                )
                .await
            {
                tracing::warn!(error = %err, "cannot purge finished webhook deliveries");
            }
        }
        let due = match state
            .store
            .due_deliveries(now_ms(), CONCURRENCY as i64)
            .await
        {
            Ok(due) => due,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the webhook outbox");
                continue;
            }
        };
        for delivery in due {
            let Ok(permit) = workers.clone().acquire_owned().await else {
                return;
            };
            let now = now_ms();
            let until = now + millis(state.webhooks.lease());
            let delivery = match state.store.claim_delivery(&delivery.id, now, until).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(delivery = %delivery.id, error = %err, "cannot claim a webhook delivery");
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                process(&state, delivery, until).await;
            });
        }
    }
}

/// Why one attempt did not deliver.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("channel {0} is no longer a webhook or slack channel of this agent")]
    ChannelGone(String),
    #[error(transparent)]
    Slack(#[from] super::slack_api::PostError),
    #[error(transparent)]
    Discord(#[from] super::discord_api::DiscordPostError),
    #[error("signing key unavailable: {0}")]
    Key(#[from] signing::KeyError),
    #[error("cannot produce the answer: {0}")]
    Answer(String),
    #[error("callback unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    #[error("{0}")]
    Forbidden(String),
    #[error("callback answered HTTP {status}{}", if (300..400).contains(status) {
        " (a redirect: answers are not POSTed to where it points; set callbackUrl to the final URL)"
    } else {
        ""
    })]
    Status {
        /// The receiver's status.
        status: u16,
        /// Its `Retry-After` (seconds), with a 429 or 503.
        retry_after: Option<Duration>,
    },
}

impl AttemptError {
    /// Whether the platform refused the answer for good: trying again would be
    /// refused the same way (a channel the bot is not in, a revoked token, a
    /// message too long), so the row is given up at once, not retried for a
    /// day (Discord counts every 401 and 403 towards a limit that bans the
    /// bot for a while). An admin can retry a given-up row
    /// (`POST /api/admin/outbox/{id}/retry`) once the cause is fixed.
    fn is_permanent(&self) -> bool {
        match self {
            Self::Slack(super::slack_api::PostError::Refused(code)) => {
                !super::slack_api::is_transient_error(code)
            }
            Self::Discord(super::discord_api::DiscordPostError::Status { status, .. }) => {
                (400..500).contains(status) && *status != 408
            }
            Self::Discord(super::discord_api::DiscordPostError::BadId(_)) => true,
            // The receiver says the URL is gone for good.
            Self::Status { status: 410, .. } => true,
            // The callback is an address answers are never sent to.
            Self::Forbidden(_) => true,
            _ => false,
        }
    }
}

impl From<conversation::ConversationError> for AttemptError {
    fn from(err: conversation::ConversationError) -> Self {
        Self::Answer(err.to_string())
    }
}

impl From<crate::db::StoreError> for AttemptError {
    fn from(err: crate::db::StoreError) -> Self {
        Self::Answer(err.to_string())
    }
}

/// Attempts `delivery`, claimed by this worker until `until` (unix ms), and records
/// the outcome.
async fn process(state: &SharedState, delivery: Delivery, until: i64) {
    let id = delivery.id.clone();
    // The lease renewed while the attempt runs: one that outlasts it (a slow
    // model, several tool rounds, a chat app's rate limit) would otherwise be
    // claimed again by the next poll and answered twice. Renewed only while it is
    // still the one this worker took: once another worker holds the row (this one
    // could not reach the database for a whole lease), this attempt stops.
    let renew = async {
        let lease = state.webhooks.lease();
        let mut held = until;
        let mut every = tokio::time::interval(lease / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let next = now_ms() + millis(lease);
            match state.store.renew_delivery_lease(&id, held, next).await {
                Ok(true) => held = next,
                Ok(false) => return,
                Err(err) => {
                    tracing::warn!(delivery = %id, error = %err, "cannot renew a delivery's lease");
                }
            }
        }
    };
    let result = tokio::select! {
        result = attempt(state, delivery.clone()) => result,
        () = renew => {
            tracing::warn!(delivery = %id, "a delivery's lease went to another worker; this attempt stops");
            return;
        }
    };
    let outcome = match result {
        Ok(()) => state.store.mark_delivered(&id, now_ms()).await,
        Err(err) => {
            let attempts = u32::try_from(delivery.attempts).unwrap_or(u32::MAX);
            let delay = match &err {
                AttemptError::Slack(super::slack_api::PostError::RateLimited(wait))
                | AttemptError::Discord(super::discord_api::DiscordPostError::RateLimited(wait))
                | AttemptError::Status {
                    retry_after: Some(wait),
                    ..
                } => *wait,
                _ => state.webhooks.backoff().delay(attempts, jitter()),
            };
            let permanent = err.is_permanent();
            let give_up = permanent || now_ms() - delivery.created_at > millis(GIVE_UP_AFTER);
            if permanent {
                tracing::error!(delivery = %id, channel = %delivery.channel, error = %err,
                    "answer delivery refused for good; given up (retry it through the admin API once fixed)");
            } else if give_up {
                tracing::error!(delivery = %id, channel = %delivery.channel, error = %err, "answer delivery given up");
            } else {
                tracing::warn!(delivery = %id, channel = %delivery.channel, attempt = attempts + 1,
                    retry_in_ms = delay.as_millis() as u64, error = %err, "answer delivery failed; will retry");
            }
            state
                .store
                .reschedule_delivery(&id, now_ms() + millis(delay), &err.to_string(), give_up)
                .await
        }
    };
    if let Err(err) = outcome {
        tracing::error!(delivery = %id, error = %err, "cannot record a delivery's outcome");
    }
}

/// Posts the `pieces` of an answer that earlier attempts did not, in order, with
/// `post(index, piece)`, recording each as posted: an attempt that
/// fails part way is resumed after the pieces that went out, not from the first
/// (Slack's `chat.postMessage` has no idempotency key).
async fn post_pieces<'a, F, Fut, E>(
    state: &SharedState,
    delivery: &Delivery,
    pieces: &'a [String],
    mut post: F,
) -> Result<(), AttemptError>
where
    F: FnMut(usize, &'a str) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    AttemptError: From<E>,
{
    let posted = usize::try_from(delivery.pieces_posted).unwrap_or(0);
    for (i, piece) in pieces.iter().enumerate().skip(posted) {
        post(i, piece).await?;
        // The last piece too when there are several: a retry after the delivery
        // could not be marked done posts nothing again. (A one-piece answer is
        // not recorded: one write less for most answers.)
        if pieces.len() > 1 {
            let done = i64::try_from(i + 1).unwrap_or(i64::MAX);
            state.store.set_delivery_pieces(&delivery.id, done).await?;
        }
    }
    Ok(())
}

async fn attempt(state: &SharedState, mut delivery: Delivery) -> Result<(), AttemptError> {
    let channel = state
        .channels
        .get(&delivery.channel)
        .filter(|c| c.webhook.is_some() || c.slack.is_some() || c.discord.is_some())
        .ok_or_else(|| AttemptError::ChannelGone(delivery.channel.clone()))?;
    // A callback answers are never sent to: said before a model is asked.
    if channel.slack.is_none()
        && channel.discord.is_none()
        && let Some(why) = crate::channel_registry::egress::refusal(&delivery.callback_url)
    {
        return Err(AttemptError::Forbidden(why));
    }
    let participant = Participant {
        user: delivery.user_id.clone(),
        channel: delivery.channel.clone(),
        language: channel.language.clone(),
        author: None,
    };
    // A crash between accepting and storing: store the message now.
    if delivery.user_message_id.is_none() || delivery.session_id.is_none() {
        let recorded = conversation::record(
            state,
            &participant,
            SessionRef::External(delivery.conversation_id.clone()),
            &delivery.text,
        )
        .await?;
        state
            .store
            .set_delivery_message(&delivery.id, &recorded.session_id, &recorded.message.id)
            .await?;
        delivery.session_id = Some(recorded.session_id);
        delivery.user_message_id = Some(recorded.message.id);
    }
    let (Some(session_id), Some(user_message_id)) = (
        delivery.session_id.clone(),
        delivery.user_message_id.clone(),
    ) else {
        return Err(AttemptError::Answer("the message is not stored".to_owned()));
    };
    let discord = match &channel.discord {
        Some(d) => {
            let token = state.webhooks.keys.key(&d.bot_token).await?;
            let token = String::from_utf8_lossy(&token).trim().to_owned();
            Some(super::discord_api::client(
                state.webhooks.http(),
                &token,
                state.webhooks.discord_api_proxy().as_deref(),
            ))
        }
        None => None,
    };
    let (answer_id, answer) = match (&delivery.answer_message_id, &delivery.answer) {
        (Some(id), Some(text)) => (id.clone(), text.clone()),
        _ => {
            // A slash command shows "thinking…" already.
            if let Some(client) = discord
                .as_ref()
                .filter(|_| delivery.interaction_token.is_none())
            {
                super::discord_api::typing(client, &delivery.conversation_id).await;
            }
            let answer =
                conversation::answer_recorded(state, &participant, &session_id, &user_message_id)
                    .await?;
            let (id, text) = (answer.message.id, answer.message.content);
            state
                .store
                .set_delivery_answer(&delivery.id, &id, &text)
                .await?;
            (id, text)
        }
    };
    // An interaction's token lasts 15 minutes: an answer later than that (Discord
    // or the model down for long) is posted in the channel instead.
    let token_valid = now_ms() - delivery.created_at < millis(INTERACTION_TOKEN_LIFETIME);
    if let (Some(client), Some(token), true) = (&discord, &delivery.interaction_token, token_valid)
    {
        let application = channel
            .discord
            .as_ref()
            .and_then(|d| d.application_id.as_deref())
            .ok_or_else(|| AttemptError::ChannelGone(delivery.channel.clone()))?;
        let pieces = super::text::split(&answer, super::discord_api::MAX_CHARS);
        post_pieces(state, &delivery, &pieces, |i, piece| {
            super::discord_api::answer_interaction_piece(client, application, token, i, piece)
        })
        .await?;
        tracing::info!(delivery = %delivery.id, channel = %delivery.channel, "Discord slash command answered");
        return Ok(());
    }
    if let Some(client) = &discord {
        let pieces = super::text::split(&answer, super::discord_api::MAX_CHARS);
        post_pieces(state, &delivery, &pieces, |i, piece| {
            super::discord_api::post_piece(
                client,
                &delivery.id,
                &delivery.conversation_id,
                delivery.reply_to.as_deref(),
                i,
                piece,
            )
        })
        .await?;
        tracing::info!(delivery = %delivery.id, channel = %delivery.channel, "Discord answer posted");
        return Ok(());
    }
    if let Some(slack) = &channel.slack {
        let token = state.webhooks.keys.key(&slack.bot_token).await?;
        let token = String::from_utf8_lossy(&token);
        let (conversation, thread) = super::slack::reply_target(&delivery.conversation_id);
        let (http, api_url) = (state.webhooks.http(), state.webhooks.slack_api_url());
        let pieces = super::text::split(&answer, super::slack_api::MAX_CHARS);
        post_pieces(state, &delivery, &pieces, |_, piece| {
            super::slack_api::post_piece(http, &api_url, token.trim(), conversation, thread, piece)
        })
        .await?;
        tracing::info!(delivery = %delivery.id, channel = %delivery.channel, "Slack answer posted");
        return Ok(());
    }
    let Some(webhook) = channel.webhook.clone() else {
        return Err(AttemptError::ChannelGone(delivery.channel.clone()));
    };
    let key = state.webhooks.keys.key(&webhook.key).await?;
    let body = serde_json::to_vec(&WebhookAnswer {
        delivery_id: delivery.id.clone(),
        channel: delivery.channel.clone(),
        conversation_id: delivery.conversation_id.clone(),
        user: delivery.user_id.clone(),
        message_id: answer_id,
        in_reply_to: user_message_id,
        text: answer,
    })
    .map_err(|e| AttemptError::Answer(e.to_string()))?;
    let timestamp = chrono::Utc::now().timestamp();
    let response = state
        .webhooks
        .http()
        .post(&delivery.callback_url)
        .timeout(CALLBACK_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signing::sign(&key, timestamp, &body))
        .header(DELIVERY_HEADER, &delivery.id)
        .body(body)
        .send()
        .await
        .map_err(
            |error| match crate::channel_registry::egress::forbidden_cause(&error) {
                Some(why) => AttemptError::Forbidden(why),
                None => AttemptError::Unreachable(error),
            },
        )?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = [429, 503]
            .contains(&status.as_u16())
            .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3600)));
        return Err(AttemptError::Status {
            status: status.as_u16(),
            retry_after,
        });
    }
    tracing::info!(delivery = %delivery.id, channel = %delivery.channel, "webhook answer delivered");
    Ok(())
}
