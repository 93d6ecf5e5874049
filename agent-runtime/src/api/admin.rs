//! Tenant administration under the agent's admin key, across every user and
//! channel: failed turns, conversations with their messages, the agent's
//! figures, the channels served, the outbox as a queue with a manual retry,
//! and tool calls waiting for a person's approval (decided here by the admin).
//! Every refused parameter is a 400 naming it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::admin_dto::{
    AdminApproval, AdminStats, ApprovalPage, ChannelConnection, ChannelFeatureSwitches,
    ChannelLimitsView, ChannelList, ChannelOutbox, ChannelView, ConversationDetail,
    ConversationPage, ConversationStats, ConversationStatus, FailureStats, KeyMode,
    OutboxEntryState, OutboxEntryView, OutboxPage, OutboxStats, RateLimitedStats, UpstreamStats,
};
use crate::api::dto::{self, FailedTurn};
use crate::api::sessions::{self, ApprovalDecision, MAX_PAGE, PageQuery, Pagination};
use crate::db::{self, ApprovalFilter, ConversationFilter, OutboxFilter, RetryOutcome};
use crate::error::{ApiError, ErrorBody, extract};
use crate::live::UserEvent;
use crate::state::SharedState;

/// Default page size.
const DEFAULT_PAGE: i64 = 20;
/// Longest cursor id part, in characters.
pub const MAX_CURSOR_ID: usize = 200;
/// A cursor: a position (unix microseconds or milliseconds, up to 16
/// digits), a dot, and the id of the last item shown (visible ASCII).
pub const CURSOR_PATTERN: &str = "^[0-9]{1,16}\\.[!-~]{1,200}$";
/// Longest `active_minutes`: a week.
pub const MAX_ACTIVE_MINUTES: i64 = 7 * 24 * 60;

/// A page of failed turns.
#[derive(Serialize, ToSchema)]
pub struct FailurePage {
    /// Newest first.
    pub data: Vec<FailedTurn>,
    /// Where this page is.
    pub pagination: Pagination,
}

/// Failed turns (every model failed, a stream broke, or the upstream queue was
/// full), newest first, with the reason and whether the fallback response was
/// answered (`model: "fallback"`).
#[utoipa::path(get, path = "/api/admin/failures", tag = "admin", params(PageQuery),
    responses((status = 200, body = FailurePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn failures(
    State(state): State<SharedState>,
    extract::Query(page): extract::Query<PageQuery>,
) -> Result<Json<FailurePage>, ApiError> {
    let (limit, offset) = page.resolve()?;
    let (data, total) = state.store.failures(limit, offset).await?;
    Ok(Json(FailurePage {
        data: dto::convert(data),
        pagination: Pagination::new(limit, offset, total),
    }))
}

/// 400 naming the query parameter `field`.
fn bad_param(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_field("invalid_query", field, message)
}

/// A page size: 1 to 100, default 20.
fn page_limit(raw: Option<&str>) -> Result<i64, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_PAGE);
    };
    raw.parse::<i64>()
        .ok()
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or_else(|| {
            bad_param(
                "limit",
                format!("limit must be a whole number from 1 to {MAX_PAGE}, got {raw:?}"),
            )
        })
}

/// Items to skip: 0 or more, default 0.
fn page_offset(raw: Option<&str>) -> Result<i64, ApiError> {
    let Some(raw) = raw else {
        return Ok(0);
    };
    raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
        bad_param(
            "offset",
            format!("offset must be a whole number, 0 or more, got {raw:?}"),
        )
    })
}

/// A channel or user name to filter on.
fn name_filter(field: &str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    raw.map(|value| {
        crate::auth::valid_id(&value, field).map_err(|_| {
            bad_param(
                field,
                format!(
                    "{field} must be 1 to {} printable characters, not only spaces",
                    crate::auth::MAX_ID_LEN
                ),
            )
        })
    })
    .transpose()
}

/// An enum value of a query parameter, by its JSON spelling.
fn enum_param<T: serde::de::DeserializeOwned>(
    field: &str,
    raw: Option<String>,
    allowed: &str,
) -> Result<Option<T>, ApiError> {
    raw.map(|value| {
        serde_json::from_value(serde_json::Value::String(value.clone())).map_err(|_| {
            bad_param(
                field,
                format!("{field} must be one of {allowed}, got {value:?}"),
            )
        })
    })
    .transpose()
}

/// A cursor's position and id ([`CURSOR_PATTERN`]).
fn parse_cursor(raw: Option<&str>) -> Result<Option<(i64, String)>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let refused = || {
        bad_param(
            "cursor",
            "cursor is not one this API handed out: pass `next_cursor` of the previous page as it is",
        )
    };
    let (position, id) = raw.split_once('.').ok_or_else(refused)?;
    let digits_ok = !position.is_empty()
        && position.len() <= 16
        && position.bytes().all(|b| b.is_ascii_digit());
    let id_ok = !id.is_empty()
        && id.chars().count() <= MAX_CURSOR_ID
        && id.chars().all(|c| ('!'..='~').contains(&c));
    if !digits_ok || !id_ok {
        return Err(refused());
    }
    let position = position.parse::<i64>().map_err(|_| refused())?;
    Ok(Some((position, id.to_owned())))
}

fn cursor(position: i64, id: &str) -> Option<String> {
    // Ids outside the cursor's alphabet cannot be continued from; the runtime's
    // ids are UUIDs.
    (position >= 0 && id.len() <= MAX_CURSOR_ID && id.chars().all(|c| ('!'..='~').contains(&c)))
        .then(|| format!("{position}.{id}"))
}

/// How long a conversation stays active without a message.
fn idle_timeout(state: &SharedState) -> Duration {
    Duration::minutes(i64::from(
        state.config.sessions.idle_timeout_minutes.unwrap_or(30),
    ))
}

/// Filters of the conversation listing.
#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
pub struct ConversationQuery {
    /// Only conversations of this channel.
    #[param(value_type = Option<String>)]
    pub channel: Option<String>,
    /// Only conversations of this user (as clients name them).
    #[param(value_type = Option<String>)]
    pub user: Option<String>,
    /// Only `failed` (the newest answer failed), `active` (a message within the
    /// idle timeout) or `idle` conversations.
    #[param(value_type = Option<ConversationStatus>)]
    pub status: Option<String>,
    /// Only conversations with a message at or after this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub since: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<String>)]
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

/// Conversations of every user and channel, newest activity first, with their
/// status (failed, active, idle); filtered by channel, user, status and time;
/// paged by cursor.
#[utoipa::path(get, path = "/api/admin/conversations", tag = "admin", params(ConversationQuery),
    responses((status = 200, body = ConversationPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_conversations(
    State(state): State<SharedState>,
    extract::Query(query): extract::Query<ConversationQuery>,
) -> Result<Json<ConversationPage>, ApiError> {
    let limit = page_limit(query.limit.as_deref())?;
    let channel = name_filter("channel", query.channel)?;
    let user = name_filter("user", query.user)?;
    let status: Option<ConversationStatus> =
        enum_param("status", query.status, "`failed`, `active`, `idle`")?;
    let since = query
        .since
        .map(|raw| {
            DateTime::parse_from_rfc3339(&raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    bad_param(
                        "since",
                        format!(
                            "since must be an RFC 3339 time such as 2026-12-01T09:00:00Z, got {raw:?}"
                        ),
                    )
                })
        })
        .transpose()?;
    let after = match parse_cursor(query.cursor.as_deref())? {
        Some((micros, id)) => {
            let at = Utc
                .timestamp_micros(micros)
                .single()
                .ok_or_else(|| bad_param("cursor", "cursor is out of range"))?;
            Some((at, id))
        }
        None => None,
    };
    let filter = ConversationFilter {
        channel,
        user,
        activity: status.map(Into::into),
        since,
        idle_before: Utc::now() - idle_timeout(&state),
        after,
        limit,
    };
    let (rows, has_more) = state.store.admin_conversations(&filter).await?;
    let next_cursor = if has_more {
        rows.last()
            .and_then(|last| cursor(last.last_activity_at.timestamp_micros(), &last.session.id))
    } else {
        None
    };
    Ok(Json(ConversationPage {
        data: dto::convert(rows),
        has_more: next_cursor.is_some(),
        next_cursor,
    }))
}

/// Paging of a conversation's messages.
#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Messages per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
    /// Messages to skip (default 0).
    #[param(value_type = Option<i64>)]
    pub offset: Option<String>,
}

/// One conversation of any user and channel, with a page of its messages
/// (oldest first): roles, text, timestamps, model, tokens, failure reason and
/// tool calls.
#[utoipa::path(get, path = "/api/admin/conversations/{id}", tag = "admin",
    params(("id" = String, Path, description = "The conversation's (session's) id"), MessagesQuery),
    responses((status = 200, body = ConversationDetail), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No conversation of this id", body = ErrorBody)))]
pub async fn get_conversation(
    State(state): State<SharedState>,
    extract::Path(id): extract::Path<String>,
    extract::Query(query): extract::Query<MessagesQuery>,
) -> Result<Json<ConversationDetail>, ApiError> {
    let limit = page_limit(query.limit.as_deref())?;
    let offset = page_offset(query.offset.as_deref())?;
    let idle_before = Utc::now() - idle_timeout(&state);
    let conversation = match state.store.admin_conversation(&id, idle_before).await {
        Ok(found) => found,
        Err(db::StoreError::NotFound(_)) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "conversation_not_found",
                format!("no conversation {id:?}"),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    let messages = state.store.admin_messages(&id, limit, offset).await?;
    let total = conversation.session.message_count;
    Ok(Json(ConversationDetail {
        conversation: conversation.into(),
        messages: dto::convert(messages),
        pagination: Pagination::new(limit, offset, total),
    }))
}

/// The stats' window.
#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Conversations and channels with a message in this many minutes count
    /// as active: 1 to 10080 (default: the idle timeout, 30 unless set).
    #[param(value_type = Option<i64>)]
    pub active_minutes: Option<String>,
}

/// The agent's figures: conversations (stored, active, started today),
/// messages, failures, rate-limited users, active channels, this pod's
/// upstream queue, the outbox of each channel, and this month's spend.
#[utoipa::path(get, path = "/api/admin/stats", tag = "admin", params(StatsQuery),
    responses((status = 200, body = AdminStats), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn stats(
    State(state): State<SharedState>,
    extract::Query(query): extract::Query<StatsQuery>,
) -> Result<Json<AdminStats>, ApiError> {
    let active_minutes = match query.active_minutes.as_deref() {
        None => idle_timeout(&state).num_minutes(),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_ACTIVE_MINUTES).contains(n))
            .ok_or_else(|| {
                bad_param(
                    "active_minutes",
                    format!(
                        "active_minutes must be a whole number from 1 to {MAX_ACTIVE_MINUTES}, got {raw:?}"
                    ),
                )
            })?,
    };
    let now = Utc::now();
    let day_start = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |midnight| midnight.and_utc());
    let figures = state
        .store
        .agent_figures(
            now - Duration::minutes(active_minutes),
            day_start,
            now - Duration::hours(1),
            now - Duration::days(1),
        )
        .await?;
    let now_ms = now.timestamp_millis();
    let outbox = state
        .store
        .outbox_depths(now_ms)
        .await?
        .iter()
        .map(|depth| ChannelOutbox {
            channel: depth.channel.clone(),
            outbox: OutboxStats::from_depth(depth, now_ms),
        })
        .collect();
    let limited = state.limiter.rate_limited_users().await;
    let limits = &state.config.limits;
    let metrics = &state.metrics;
    Ok(Json(AdminStats {
        conversations: ConversationStats {
            total: figures.conversations,
            active: figures.active_conversations,
            active_minutes,
            started_today: figures.started_today,
        },
        messages: figures.messages,
        failures: FailureStats {
            last_hour: figures.failures_last_hour,
            last_day: figures.failures_last_day,
            total: figures.failures,
        },
        rate_limited_users: RateLimitedStats {
            current_window: limited.current_window,
            last_window: limited.last_window,
            all_pods: limited.all_pods,
        },
        active_channels: figures.active_channels,
        channels: served_channels(&state).len() as i64,
        upstream: UpstreamStats {
            concurrency: i64::try_from(limits.upstream_concurrency.max(1)).unwrap_or(i64::MAX),
            in_flight: metrics.upstream_in_flight.get(),
            queued: metrics.queue_depth.get(),
            queue_capacity: i64::try_from(limits.upstream_queue).unwrap_or(i64::MAX),
            rejected_total: i64::try_from(metrics.queue_rejected.get()).unwrap_or(i64::MAX),
        },
        outbox,
        spend: state.ledger.usage_status().map(Into::into),
        generated_at: now,
    }))
}

/// The channels served: those declared, else (a runtime without declared
/// channels, which serves any name) the `default` channel of its root routes.
fn served_channels(
    state: &SharedState,
) -> Vec<std::sync::Arc<crate::channel_registry::ChannelSettings>> {
    let mut served = state.channels.all();
    if served.is_empty() {
        served.push(std::sync::Arc::new(
            crate::channel_registry::ChannelSettings::open(crate::auth::DEFAULT_CHANNEL),
        ));
    }
    served
}

/// Every channel the runtime serves, with its settings, newest message,
/// outbox and (for chat apps) connection state.
#[utoipa::path(get, path = "/api/admin/channels", tag = "admin",
    responses((status = 200, body = ChannelList), (status = 401, body = ErrorBody)))]
pub async fn channels(State(state): State<SharedState>) -> Result<Json<ChannelList>, ApiError> {
    let now_ms = Utc::now().timestamp_millis();
    let last_messages = state.store.last_message_by_channel().await?;
    let depths = state.store.outbox_depths(now_ms).await?;
    let open = state.channels.all().is_empty();
    let served = served_channels(&state);
    let default = state.channels.default_channel();
    let connections = &state.channels.connections;
    let data = served
        .iter()
        .map(|c| ChannelView {
            name: c.name.clone(),
            channel_type: c.channel_type.as_str().to_owned(),
            enabled: c.enabled,
            default: default.map_or(open, |d| c.name == d),
            language: c.language.clone(),
            features: ChannelFeatureSwitches {
                history: c.features.history,
                search: c.features.search,
                streaming: c.features.streaming,
            },
            limits: ChannelLimitsView {
                requests_per_minute: c.rate_limit.requests_per_minute,
                requests_per_minute_per_user: c.rate_limit.requests_per_minute_per_user,
            },
            key_mode: if c.own_key {
                KeyMode::Channel
            } else {
                KeyMode::Agent
            },
            last_message_at: last_messages
                .iter()
                .find(|(name, _)| *name == c.name)
                .and_then(|(_, at)| *at),
            outbox: depths
                .iter()
                .find(|d| d.channel == c.name)
                .map(|d| OutboxStats::from_depth(d, now_ms))
                .unwrap_or_default(),
            connection: connections.get(&c.name).map(|c| ChannelConnection {
                state: c.state.reason().to_owned(),
                message: c.message.clone(),
            }),
        })
        .collect();
    Ok(Json(ChannelList { data }))
}

/// Filters of the outbox listing.
#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only entries of this channel.
    #[param(value_type = Option<String>)]
    pub channel: Option<String>,
    /// Only `pending`, `in_flight`, `delivered` or `failed` (dead) entries.
    #[param(value_type = Option<OutboxEntryState>)]
    pub state: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<String>)]
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

/// The outbox as a queue, newest first: each answer waiting for (or done
/// with) delivery to a webhook callback or chat app, with its attempts, next
/// attempt and last error; without message text.
#[utoipa::path(get, path = "/api/admin/outbox", tag = "admin", params(OutboxQuery),
    responses((status = 200, body = OutboxPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn outbox(
    State(state): State<SharedState>,
    extract::Query(query): extract::Query<OutboxQuery>,
) -> Result<Json<OutboxPage>, ApiError> {
    let limit = page_limit(query.limit.as_deref())?;
    let channel = name_filter("channel", query.channel)?;
    let entry_state: Option<OutboxEntryState> = enum_param(
        "state",
        query.state,
        "`pending`, `in_flight`, `delivered`, `failed`",
    )?;
    let after = parse_cursor(query.cursor.as_deref())?;
    let now_ms = Utc::now().timestamp_millis();
    let (rows, has_more) = state
        .store
        .outbox_entries(&OutboxFilter {
            channel,
            state: entry_state.map(Into::into),
            after,
            limit,
            now_ms,
        })
        .await?;
    let next_cursor = if has_more {
        rows.last()
            .and_then(|last| cursor(last.created_at, &last.id))
    } else {
        None
    };
    Ok(Json(OutboxPage {
        data: rows
            .into_iter()
            .map(|row| entry_view(&state, row, now_ms))
            .collect(),
        has_more: next_cursor.is_some(),
        next_cursor,
    }))
}

/// A manual retry's outcome.
#[derive(Serialize, ToSchema)]
pub struct RetryResult {
    /// The entry, due now.
    pub entry: OutboxEntryView,
}

/// Retries an outbox entry now: a dead (`failed`) entry gets one more
/// attempt at once (it is given up again if that fails), a pending one skips
/// the rest of its backoff. A delivered entry, or one a pod is attempting,
/// answers 409.
#[utoipa::path(post, path = "/api/admin/outbox/{id}/retry", tag = "admin",
    params(("id" = String, Path, description = "The entry's delivery id")),
    responses((status = 200, body = RetryResult), (status = 401, body = ErrorBody),
        (status = 404, description = "No outbox entry of this id", body = ErrorBody),
        (status = 409, description = "The entry is delivered, or a pod is attempting it now", body = ErrorBody)))]
pub async fn retry_outbox(
    State(state): State<SharedState>,
    extract::Path(id): extract::Path<String>,
) -> Result<Json<RetryResult>, ApiError> {
    let now_ms = Utc::now().timestamp_millis();
    match state.store.retry_outbox_entry(&id, now_ms).await? {
        RetryOutcome::Scheduled => {}
        RetryOutcome::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "outbox_entry_not_found",
                format!("no outbox entry {id:?}"),
            ));
        }
        RetryOutcome::NotRetryable(why) => {
            let message = if why == "delivered" {
                format!("outbox entry {id:?} is delivered already")
            } else {
                format!("outbox entry {id:?} is being attempted by a pod now; retry later")
            };
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "outbox_entry_not_retryable",
                message,
            ));
        }
    }
    state.webhooks.wake();
    let entry = state.store.outbox_entry(&id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "outbox_entry_not_found",
            format!("no outbox entry {id:?}"),
        )
    })?;
    tracing::info!(delivery = %id, channel = %entry.channel, "outbox entry retried by an admin");
    Ok(Json(RetryResult {
        entry: entry_view(&state, entry, now_ms),
    }))
}

/// Filters of the approvals listing.
#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
pub struct ApprovalQuery {
    /// Only approvals of this session.
    #[param(value_type = Option<String>)]
    pub session_id: Option<String>,
    /// Only approvals in sessions of this user (as clients name them).
    #[param(value_type = Option<String>)]
    pub user: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<String>)]
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

/// Who an approval decided through the admin API is recorded as decided by.
pub const ADMIN_DECIDER: &str = "admin";

/// Tool calls waiting for a person's approval in every session, oldest first
/// (the first to expire first), with the call's arguments and the session's
/// user and channel; filtered by session and user; paged by cursor. Decided
/// and expired ones are not listed (a session's own list has them).
#[utoipa::path(get, path = "/api/admin/approvals", tag = "admin", params(ApprovalQuery),
    responses((status = 200, body = ApprovalPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_approvals(
    State(state): State<SharedState>,
    extract::Query(query): extract::Query<ApprovalQuery>,
) -> Result<Json<ApprovalPage>, ApiError> {
    let limit = page_limit(query.limit.as_deref())?;
    let session_id = name_filter("session_id", query.session_id)?;
    let user = name_filter("user", query.user)?;
    let after = parse_cursor(query.cursor.as_deref())?;
    let (rows, has_more) = state
        .store
        .admin_tool_approvals(&ApprovalFilter {
            session_id,
            user,
            after,
            now_ms: Utc::now().timestamp_millis(),
            limit,
        })
        .await?;
    let next_cursor = if has_more {
        rows.last()
            .and_then(|last| cursor(last.approval.requested_at, &last.approval.id))
    } else {
        None
    };
    Ok(Json(ApprovalPage {
        data: dto::convert(rows),
        has_more: next_cursor.is_some(),
        next_cursor,
    }))
}

/// Approves or rejects a pending tool call of any session as the admin
/// (`decided_by: "admin"`): the waiting turn goes on (the tool runs, or the
/// model gets "rejected by a person: <reason>"), and the user's open chat
/// pages are told.
#[utoipa::path(post, path = "/api/admin/approvals/{approval_id}", tag = "admin",
    params(("approval_id" = String, Path, description = "The approval's id")),
    request_body = ApprovalDecision,
    responses((status = 200, body = AdminApproval), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No approval of this id", body = ErrorBody),
        (status = 409, description = "Already decided or expired", body = ErrorBody)))]
pub async fn decide_approval(
    State(state): State<SharedState>,
    extract::Path(approval_id): extract::Path<String>,
    extract::Json(body): extract::Json<ApprovalDecision>,
) -> Result<Json<AdminApproval>, ApiError> {
    body.check()?;
    let not_found = || ApiError {
        param: Some("approval_id".to_owned()),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "approval_not_found",
            format!("no approval {approval_id:?}"),
        )
    };
    let current = state
        .store
        .admin_tool_approval(&approval_id)
        .await?
        .ok_or_else(not_found)?;
    body.still_open(&current.approval)?;
    let decided = body.record(&state, &approval_id, ADMIN_DECIDER).await?;
    let row = state
        .store
        .admin_tool_approval(&approval_id)
        .await?
        .ok_or_else(not_found)?;
    if !decided {
        return Err(sessions::approval_conflict(&row.approval));
    }
    state.tools.approval_decided(&approval_id);
    tracing::info!(approval = %approval_id, tool = %row.approval.tool, approve = body.approve, "tool call decided by an admin");
    // The user's chat pages show the decision (as after their own).
    state.live.publish(UserEvent {
        user: row.user_id.clone(),
        kind: "session.updated",
        session_id: Some(row.approval.session_id.clone()),
    });
    Ok(Json(row.into()))
}

fn millis_time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// A URL as scheme, host and port only: user info, query and fragment may carry
/// credentials, and so may the path (Slack's and Discord's webhook URLs end in their
/// token); a path is shown as `/…`.
fn redacted_url(raw: &str) -> Option<String> {
    let url = reqwest::Url::parse(raw).ok()?;
    let host = url.host_str()?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = if matches!(url.path(), "" | "/") {
        ""
    } else {
        "/…"
    };
    Some(format!("{}://{host}{port}{path}", url.scheme()))
}

/// `text` with every URL in it redacted ([`redacted_url`]).
fn redacted_text(text: &str) -> String {
    text.split_inclusive(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .map(|part| {
            let end = part
                .char_indices()
                .rev()
                .find(|(_, c)| !(c.is_whitespace() || *c == '(' || *c == ')'))
                .map_or(0, |(i, c)| i + c.len_utf8());
            let (word, tail) = part.split_at(end);
            if word.contains("://") {
                let shown = redacted_url(word).unwrap_or_else(|| "<url>".to_owned());
                format!("{shown}{tail}")
            } else {
                part.to_owned()
            }
        })
        .collect()
}

fn entry_view(state: &SharedState, row: db::OutboxEntry, now_ms: i64) -> OutboxEntryView {
    let entry_state = match row.status.as_str() {
        "delivered" => OutboxEntryState::Delivered,
        "failed" => OutboxEntryState::Failed,
        _ if row.locked_until.is_some_and(|until| until >= now_ms) => OutboxEntryState::InFlight,
        _ => OutboxEntryState::Pending,
    };
    let target = if row.callback_url.is_empty() {
        let kind = state
            .channels
            .get(&row.channel)
            .map_or("chat", |c| c.channel_type.as_str());
        format!("{kind}:{}", row.conversation_id)
    } else {
        redacted_url(&row.callback_url).unwrap_or_else(|| "<callback url>".to_owned())
    };
    OutboxEntryView {
        id: row.id,
        channel: row.channel,
        target,
        conversation_id: row.conversation_id,
        session_id: row.session_id,
        state: entry_state,
        attempts: row.attempts,
        next_attempt_at: (entry_state == OutboxEntryState::Pending)
            .then(|| millis_time(row.next_attempt_at))
            .flatten(),
        last_error: row.last_error.as_deref().map(redacted_text),
        created_at: millis_time(row.created_at).unwrap_or_default(),
        delivered_at: row.delivered_at.and_then(millis_time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_was_not_handed_out() {
        let made = cursor(1_764_000_000_000_000, "0193-abc").expect("cursor");
        assert_eq!(
            parse_cursor(Some(&made)).ok().flatten(),
            Some((1_764_000_000_000_000, "0193-abc".to_owned()))
        );
        for bad in [
            "",
            "abc",
            "12",
            ".x",
            "12.",
            "-1.x",
            "12345678901234567.x",
            "1.a b",
        ] {
            let err = parse_cursor(Some(bad)).expect_err(bad);
            assert_eq!(err.body().error.param.as_deref(), Some("cursor"), "{bad}");
        }
    }

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            redacted_url("https://user:pw@hooks.example/a/b?token=s3cret#x").as_deref(),
            Some("https://hooks.example/…")
        );
        // Webhook URLs that are their own credential.
        assert_eq!(
            redacted_url("https://hooks.slack.com/services/T0/B0/s3cret").as_deref(),
            Some("https://hooks.slack.com/…")
        );
        assert_eq!(
            redacted_url("https://discord.com/api/webhooks/1/s3cret").as_deref(),
            Some("https://discord.com/…")
        );
        assert_eq!(
            redacted_url("http://receiver.tenant-a:8080/").as_deref(),
            Some("http://receiver.tenant-a:8080")
        );
        assert_eq!(
            redacted_text(
                "callback unreachable: error sending request for url (http://h:8080/hook?sig=abc)"
            ),
            "callback unreachable: error sending request for url (http://h:8080/…)"
        );
        assert_eq!(
            redacted_text("callback answered HTTP 500"),
            "callback answered HTTP 500"
        );
    }

    #[test]
    fn page_parameters_name_themselves() {
        assert_eq!(page_limit(None).ok(), Some(DEFAULT_PAGE));
        assert_eq!(page_limit(Some("100")).ok(), Some(100));
        for bad in ["0", "101", "x", "1.5"] {
            let err = page_limit(Some(bad)).expect_err(bad);
            assert_eq!(err.body().error.param.as_deref(), Some("limit"));
        }
        let err = page_offset(Some("-1")).expect_err("negative");
        assert_eq!(err.body().error.param.as_deref(), Some("offset"));
    }
}
