//! What the admin API shows: conversations of every user, the agent's figures,
//! the channels served and the outbox as a queue. Converted from storage rows
//! and the runtime's in-process figures at the edge, like [`crate::api::dto`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::dto::{Message, SessionStatus};
use crate::api::sessions::Pagination;
use crate::db;

/// Where a conversation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    /// Its newest answer failed (every model failed, a stream broke, or the
    /// upstream queue was full).
    Failed,
    /// A message within the idle timeout (`sessions.idleTimeoutMinutes`,
    /// default 30), and its newest answer did not fail.
    Active,
    /// No message within the idle timeout, and its newest answer did not fail.
    Idle,
}

impl From<db::Activity> for ConversationStatus {
    fn from(activity: db::Activity) -> Self {
        match activity {
            db::Activity::Failed => Self::Failed,
            db::Activity::Active => Self::Active,
            db::Activity::Idle => Self::Idle,
        }
    }
}

impl From<ConversationStatus> for db::Activity {
    fn from(status: ConversationStatus) -> Self {
        match status {
            ConversationStatus::Failed => Self::Failed,
            ConversationStatus::Active => Self::Active,
            ConversationStatus::Idle => Self::Idle,
        }
    }
}

/// A conversation (session) of any user and channel.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Conversation {
    /// Session id.
    pub id: String,
    /// The user, as the client named them.
    pub user: String,
    /// The channel it came in through.
    pub channel: String,
    /// The client's own conversation id (a Slack thread, a Discord channel,
    /// a webhook conversation), when it sent one.
    pub external_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Failed, active or idle.
    pub status: ConversationStatus,
    /// The session's lifecycle as its user sees it.
    pub lifecycle: SessionStatus,
    /// Messages stored.
    pub message_count: i64,
    /// Answers whose models all failed.
    pub failed_turns: i64,
    /// Why its newest answer failed, when it did.
    pub failure_reason: Option<String>,
    /// Prompt tokens of its answers.
    pub tokens_in: i64,
    /// Tokens generated.
    pub tokens_out: i64,
    /// Started.
    pub created_at: DateTime<Utc>,
    /// Its newest message, else its start.
    pub last_activity_at: DateTime<Utc>,
}

impl From<db::AdminConversation> for Conversation {
    fn from(c: db::AdminConversation) -> Self {
        let s = c.session;
        Self {
            id: s.id,
            user: crate::domain::shown_user(&s.user_id).to_owned(),
            channel: s.channel,
            external_id: s.external_id,
            title: s.title,
            status: c.activity.into(),
            lifecycle: s.status.into(),
            message_count: s.message_count,
            failed_turns: c.failed_turns,
            failure_reason: c.last_error,
            tokens_in: s.tokens_in,
            tokens_out: s.tokens_out,
            created_at: s.created_at,
            last_activity_at: c.last_activity_at,
        }
    }
}

/// A page of conversations, newest activity first.
#[derive(Serialize, ToSchema)]
pub struct ConversationPage {
    /// Conversations.
    pub data: Vec<Conversation>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// Whether another page follows.
    pub has_more: bool,
}

/// One conversation with a page of its messages.
#[derive(Serialize, ToSchema)]
pub struct ConversationDetail {
    /// The conversation.
    pub conversation: Conversation,
    /// Its messages, oldest first: roles, text, model, tokens, failure reason
    /// (`error`) and tool calls.
    pub messages: Vec<Message>,
    /// Where this page of messages is.
    pub pagination: Pagination,
}

/// Conversation figures.
#[derive(Serialize, ToSchema, Debug)]
pub struct ConversationStats {
    /// Stored (soft-deleted ones included, until retention purges them).
    pub total: i64,
    /// With a message in the last `active_minutes`.
    pub active: i64,
    /// The window of `active`, in minutes (the `active_minutes` parameter,
    /// default the idle timeout).
    pub active_minutes: i64,
    /// Started since midnight UTC.
    pub started_today: i64,
}

/// Failed answers (every model failed, a stream broke, the queue was full).
#[derive(Serialize, ToSchema, Debug)]
pub struct FailureStats {
    /// In the last hour.
    pub last_hour: i64,
    /// In the last 24 hours.
    pub last_day: i64,
    /// Stored in all.
    pub total: i64,
}

/// Users refused by a rate limit (one-minute windows).
#[derive(Serialize, ToSchema, Debug)]
pub struct RateLimitedStats {
    /// Distinct users refused (or at a per-user limit) in the current minute.
    pub current_window: i64,
    /// The same in the previous minute.
    pub last_window: i64,
    /// `true` when the figures cover every pod of the agent (Postgres' shared
    /// counters, or SQLite's one process); `false`: this pod only (the shared
    /// counters could not be read).
    pub all_pods: bool,
}

/// The upstream gate of this pod: model calls at once and waiting.
#[derive(Serialize, ToSchema, Debug)]
pub struct UpstreamStats {
    /// Model calls this pod runs at once at most (`limits.upstreamConcurrency`).
    pub concurrency: i64,
    /// Model calls running now.
    pub in_flight: i64,
    /// Turns waiting for a slot now.
    pub queued: i64,
    /// Turns that may wait at most (`limits.upstreamQueue`); more are refused.
    pub queue_capacity: i64,
    /// Turns refused because the queue was full or the wait ran out, since
    /// this pod started.
    pub rejected_total: i64,
}

/// The outbox of one channel: answers waiting to be delivered.
#[derive(Serialize, ToSchema, Debug, Clone, Default)]
pub struct OutboxStats {
    /// Waiting for an attempt.
    pub pending: i64,
    /// Being attempted by a pod now.
    pub in_flight: i64,
    /// Given up (dead): retried only by hand.
    pub failed: i64,
    /// Delivered and still kept (for replay protection).
    pub delivered: i64,
    /// Age of the oldest undelivered entry, in seconds.
    pub oldest_pending_age_seconds: Option<i64>,
}

impl OutboxStats {
    pub(crate) fn from_depth(depth: &db::OutboxDepth, now_ms: i64) -> Self {
        Self {
            pending: depth.pending,
            in_flight: depth.in_flight,
            failed: depth.failed,
            delivered: depth.delivered,
            oldest_pending_age_seconds: depth
                .oldest_pending_ms
                .map(|at| (now_ms - at).max(0) / 1000),
        }
    }
}

/// The outbox of one channel, in the stats.
#[derive(Serialize, ToSchema, Debug)]
pub struct ChannelOutbox {
    /// Channel name.
    pub channel: String,
    /// Its outbox.
    #[serde(flatten)]
    pub outbox: OutboxStats,
}

/// This month's spend (when model prices are configured).
#[derive(Serialize, ToSchema, Debug)]
pub struct SpendStats {
    /// The budget window, e.g. `2026-12`.
    pub window: String,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Generated tokens.
    pub output_tokens: i64,
    /// Spent, as a decimal, e.g. `12.345`.
    pub cost: String,
    /// Its currency.
    pub currency: String,
    /// The monthly budget, when one is set.
    pub budget: Option<String>,
    /// Whether the budget is spent.
    pub budget_spent: bool,
}

impl From<crds::UsageStatus> for SpendStats {
    fn from(u: crds::UsageStatus) -> Self {
        Self {
            window: u.window,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cost: u.cost,
            currency: u.currency,
            budget: u.budget,
            budget_spent: u.budget_spent,
        }
    }
}

/// The agent's figures.
#[derive(Serialize, ToSchema, Debug)]
pub struct AdminStats {
    /// Conversations.
    pub conversations: ConversationStats,
    /// Messages stored.
    pub messages: i64,
    /// Failed answers.
    pub failures: FailureStats,
    /// Users refused by a rate limit.
    pub rate_limited_users: RateLimitedStats,
    /// Channels with a message in the last `active_minutes`.
    pub active_channels: i64,
    /// Channels served.
    pub channels: i64,
    /// This pod's upstream gate.
    pub upstream: UpstreamStats,
    /// The outbox of each channel that has entries (webhook, Slack, Discord).
    pub outbox: Vec<ChannelOutbox>,
    /// This month's spend; `null` when no model has a price.
    pub spend: Option<SpendStats>,
    /// When these figures were taken.
    pub generated_at: DateTime<Utc>,
}

/// Feature switches of a channel.
#[derive(Serialize, ToSchema, Debug)]
pub struct ChannelFeatureSwitches {
    /// Clients may list and reopen earlier sessions.
    pub history: bool,
    /// Clients may search their sessions.
    pub search: bool,
    /// Answers may stream.
    pub streaming: bool,
}

/// Request limits of a channel (the agent's own limits apply as well).
#[derive(Serialize, ToSchema, Debug)]
pub struct ChannelLimitsView {
    /// Requests the whole channel accepts per minute.
    pub requests_per_minute: Option<u32>,
    /// Requests one user may make per minute on this channel.
    pub requests_per_minute_per_user: Option<u32>,
}

/// Which key opens a channel.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    /// The agent's client key.
    Agent,
    /// A key of the channel's own.
    Channel,
}

/// A channel the runtime serves.
#[derive(Serialize, ToSchema, Debug)]
pub struct ChannelView {
    /// The ChatChannel's name.
    pub name: String,
    /// `web`, `webhook`, `openai`, `slack` or `discord`.
    #[serde(rename = "type")]
    pub channel_type: String,
    /// A disabled channel answers 503.
    pub enabled: bool,
    /// Whether the root routes belong to it (`defaultChannel`).
    pub default: bool,
    /// Language of its fallback responses.
    pub language: Option<String>,
    /// Feature switches.
    pub features: ChannelFeatureSwitches,
    /// Its request limits.
    pub limits: ChannelLimitsView,
    /// Which key opens it.
    pub key_mode: KeyMode,
    /// Its newest message (from the conversations stored).
    pub last_message_at: Option<DateTime<Utc>>,
    /// Its outbox (zero for channels that answer in the response).
    pub outbox: OutboxStats,
    /// Connection state reported by chat-app channels (Slack, Discord) on this
    /// pod; `null` for other channels, and while none was reported here (the
    /// Discord Gateway is held by one pod: see the channel's `Connected` condition).
    pub connection: Option<ChannelConnection>,
}

/// A chat-app channel's connection to its platform.
#[derive(Serialize, ToSchema, Debug)]
pub struct ChannelConnection {
    /// `Connected`, `Reconnecting` or `Unauthorized`.
    pub state: String,
    /// The platform's own words (an error code or close reason; never a token).
    pub message: String,
}

/// The channels served.
#[derive(Serialize, ToSchema)]
pub struct ChannelList {
    /// By name.
    pub data: Vec<ChannelView>,
}

/// State of an outbox entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboxEntryState {
    /// Waiting for its next attempt.
    Pending,
    /// A pod is attempting it now.
    InFlight,
    /// Accepted by the channel.
    Delivered,
    /// Given up (dead) after a day of failures; `POST …/retry` tries again.
    Failed,
}

impl From<OutboxEntryState> for db::OutboxState {
    fn from(state: OutboxEntryState) -> Self {
        match state {
            OutboxEntryState::Pending => Self::Pending,
            OutboxEntryState::InFlight => Self::InFlight,
            OutboxEntryState::Delivered => Self::Delivered,
            OutboxEntryState::Failed => Self::Failed,
        }
    }
}

/// An answer in the outbox, without its text.
#[derive(Serialize, ToSchema, Debug)]
pub struct OutboxEntryView {
    /// Delivery id (also sent as `X-Switchboard-Delivery`).
    pub id: String,
    /// Channel name.
    pub channel: String,
    /// Where the answer goes: a webhook's callback URL (scheme, host and
    /// port only; a path is shown as `/…`, since webhook URLs often end in their
    /// token), or the chat app's conversation (`slack:<id>`, `discord:<channel id>`).
    pub target: String,
    /// The sender's conversation id.
    pub conversation_id: String,
    /// The stored conversation (`GET /api/admin/conversations/{id}`), once the
    /// message is recorded.
    pub session_id: Option<String>,
    /// Pending, in flight, delivered or failed.
    pub state: OutboxEntryState,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// When the next attempt is due (pending entries).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the message was accepted.
    pub created_at: DateTime<Utc>,
    /// When the answer was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A page of outbox entries, newest first.
#[derive(Serialize, ToSchema)]
pub struct OutboxPage {
    /// Entries.
    pub data: Vec<OutboxEntryView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// Whether another page follows.
    pub has_more: bool,
}

/// A server-side tool call waiting for (or given) a person's approval, with
/// the user and channel of its session.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AdminApproval {
    /// The approval (decide it with `POST /api/admin/approvals/{approval_id}`).
    #[serde(flatten)]
    pub approval: crate::api::dto::ToolApproval,
    /// The session's user, as the client named them.
    pub user: String,
    /// The channel the session came in through.
    pub channel: String,
}

impl From<db::AdminApproval> for AdminApproval {
    fn from(row: db::AdminApproval) -> Self {
        Self {
            user: crate::domain::shown_user(&row.user_id).to_owned(),
            channel: row.channel,
            approval: row.approval.into(),
        }
    }
}

/// A page of pending approvals, oldest first.
#[derive(Serialize, ToSchema)]
pub struct ApprovalPage {
    /// Pending approvals (still within their time), oldest first.
    pub data: Vec<AdminApproval>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// Whether another page follows.
    pub has_more: bool,
}
