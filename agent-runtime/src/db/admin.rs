//! Tenant administration queries across all users and channels: failed
//! turns, conversations with their messages, the agent's figures, and the
//! outbox as a queue (without message text).

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::messages::MESSAGE_COLUMNS;
use super::{Message, Session, Store, StoreError, with_pool};

/// A turn whose models all failed (or whose stream broke), for the admin list.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct FailedTurn {
    /// The stored answer (empty, partial, or the fallback response).
    pub message_id: String,
    /// Its session.
    pub session_id: String,
    /// The session's user.
    pub user_id: String,
    /// The session's channel.
    pub channel: String,
    /// `fallback` when the tenant's fallback response was answered, else the
    /// model whose stream broke, or none.
    pub model: Option<String>,
    /// Why it failed.
    pub reason: String,
    /// Characters of answer text stored.
    pub answer_chars: i64,
    /// When.
    pub created_at: DateTime<Utc>,
    total: i64,
}

impl Store {
    /// Failed turns across all users, newest first: a page and the total.
    pub async fn failures(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<FailedTurn>, i64), StoreError> {
        let sql = "SELECT m.id AS message_id, m.session_id, s.user_id, s.channel, m.model, \
             m.error AS reason, CAST(LENGTH(m.content) AS BIGINT) AS answer_chars, m.created_at, \
             COUNT(*) OVER () AS total \
             FROM messages m JOIN sessions s ON s.id = m.session_id \
             WHERE m.role = 'assistant' AND m.error IS NOT NULL \
             ORDER BY m.seq DESC LIMIT $1 OFFSET $2";
        let _timer = self.timer("failures");
        let rows: Vec<FailedTurn> = with_pool!(self, pool => sqlx::query_as(sql)
            .bind(limit).bind(offset).fetch_all(pool).await?);
        let total = match rows.first() {
            Some(row) => row.total,
            None if offset > 0 => with_pool!(self, pool => sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM messages WHERE role = 'assistant' AND error IS NOT NULL")
                .fetch_one(pool).await?),
            None => 0,
        };
        Ok((rows, total))
    }
}

/// Where a conversation stands, for the admin views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Its newest answer failed.
    Failed,
    /// A message within the idle timeout, and its newest answer did not fail.
    Active,
    /// Nothing within the idle timeout, and its newest answer did not fail.
    Idle,
}

impl Activity {
    /// The stored spelling (the SQL below computes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Active => "active",
            Self::Idle => "idle",
        }
    }
}

impl TryFrom<String> for Activity {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "failed" => Ok(Self::Failed),
            "active" => Ok(Self::Active),
            "idle" => Ok(Self::Idle),
            _ => Err(format!("unknown conversation activity {value:?}")),
        }
    }
}

/// A conversation of any user, with what the admin views add to a session.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AdminConversation {
    /// The session.
    #[sqlx(flatten)]
    pub session: Session,
    /// Its last message, else its creation.
    pub last_activity_at: DateTime<Utc>,
    /// Answers whose models all failed.
    pub failed_turns: i64,
    /// Why its newest answer failed, when it did.
    pub last_error: Option<String>,
    /// Failed, active or idle.
    #[sqlx(try_from = "String")]
    pub activity: Activity,
}

/// Which conversations to list: every filter that is set applies.
#[derive(Clone, Debug)]
pub struct ConversationFilter {
    /// Only this channel.
    pub channel: Option<String>,
    /// Only this user (as clients name it: also on channels with their own key).
    pub user: Option<String>,
    /// Only failed, active or idle ones.
    pub activity: Option<Activity>,
    /// Only those with activity at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Conversations quiet since before this are idle.
    pub idle_before: DateTime<Utc>,
    /// Only those after this position (last activity, id), newest first.
    pub after: Option<(DateTime<Utc>, String)>,
    /// Page size.
    pub limit: i64,
}

/// The conversation columns of the admin views: the session's, its last
/// activity, its failed answers and the error of its newest answer.
const CONVERSATION_INNER: &str = "SELECT s.id, s.user_id, s.channel, s.external_id, s.title, \
    s.status, s.pinned, s.message_count, s.tokens_in, s.tokens_out, s.created_at, s.updated_at, \
    s.last_message_at, COALESCE(s.last_message_at, s.created_at) AS last_activity_at, \
    (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id AND m.role = 'assistant' \
       AND m.error IS NOT NULL) AS failed_turns, \
    (SELECT m.error FROM messages m WHERE m.session_id = s.id AND m.role = 'assistant' \
       ORDER BY m.seq DESC LIMIT 1) AS last_error \
    FROM sessions s";

/// The activity of a row of [`CONVERSATION_INNER`] named `c`, idle before `$idle`.
fn activity_sql(idle: &str) -> String {
    format!(
        "CASE WHEN c.last_error IS NOT NULL THEN 'failed' \
         WHEN c.last_activity_at >= {idle} THEN 'active' ELSE 'idle' END"
    )
}

/// Figures of the whole agent for the admin stats.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct AgentFigures {
    /// Conversations stored (soft-deleted ones included).
    pub conversations: i64,
    /// Of which with a message since the activity cutoff.
    pub active_conversations: i64,
    /// Of which started since the start of the day (UTC).
    pub started_today: i64,
    /// Messages stored.
    pub messages: i64,
    /// Channels with a message since the activity cutoff.
    pub active_channels: i64,
    /// Failed answers in all.
    pub failures: i64,
    /// Failed answers in the last hour.
    pub failures_last_hour: i64,
    /// Failed answers in the last day.
    pub failures_last_day: i64,
}

/// The outbox of one channel, by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxDepth {
    /// Channel name.
    pub channel: String,
    /// Waiting for an attempt.
    pub pending: i64,
    /// Being attempted by a pod now (leased).
    pub in_flight: i64,
    /// Given up (dead).
    pub failed: i64,
    /// Delivered and kept for replay protection.
    pub delivered: i64,
    /// When the oldest undelivered entry was accepted (unix milliseconds).
    pub oldest_pending_ms: Option<i64>,
}

/// State of an outbox entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxState {
    /// Waiting for its next attempt.
    Pending,
    /// Leased by a pod that is attempting it.
    InFlight,
    /// Accepted by the channel.
    Delivered,
    /// Given up (dead); retried only by hand.
    Failed,
}

impl OutboxState {
    /// The SQL condition selecting this state at `now` (unix milliseconds).
    fn condition(self, now: &str) -> String {
        match self {
            Self::Pending => {
                format!("status = 'pending' AND (locked_until IS NULL OR locked_until < {now})")
            }
            Self::InFlight => format!("status = 'pending' AND locked_until >= {now}"),
            Self::Delivered => "status = 'delivered'".to_owned(),
            Self::Failed => "status = 'failed'".to_owned(),
        }
    }
}

/// One outbox entry as the admin queue shows it: no message text, no answer.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OutboxEntry {
    /// Delivery id.
    pub id: String,
    /// Channel name.
    pub channel: String,
    /// The sender's conversation (Slack channel or thread, Discord channel,
    /// webhook conversation id).
    pub conversation_id: String,
    /// The webhook's callback URL (empty for chat apps).
    pub callback_url: String,
    /// The session, once the message is stored.
    pub session_id: Option<String>,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Next attempt (unix milliseconds).
    pub next_attempt_at: i64,
    /// Leased until (unix milliseconds).
    pub locked_until: Option<i64>,
    /// Accepted (unix milliseconds).
    pub created_at: i64,
    /// Delivered (unix milliseconds).
    pub delivered_at: Option<i64>,
}

/// Which outbox entries to list.
#[derive(Clone, Debug)]
pub struct OutboxFilter {
    /// Only this channel.
    pub channel: Option<String>,
    /// Only this state.
    pub state: Option<OutboxState>,
    /// Only those after this position (accepted at, id), newest first.
    pub after: Option<(i64, String)>,
    /// Page size.
    pub limit: i64,
    /// Now (unix milliseconds), for the lease.
    pub now_ms: i64,
}

/// What a manual retry found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Due now.
    Scheduled,
    /// No such entry.
    NotFound,
    /// Delivered already, or a pod is attempting it now: `status` says which.
    NotRetryable(&'static str),
}

const OUTBOX_COLUMNS: &str = "id, channel, conversation_id, callback_url, session_id, status, \
    attempts, last_error, next_attempt_at, locked_until, created_at, delivered_at";

pub(super) fn like_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl Store {
    /// A page of conversations of every user, newest activity first, and
    /// whether more follow.
    pub async fn admin_conversations(
        &self,
        filter: &ConversationFilter,
    ) -> Result<(Vec<AdminConversation>, bool), StoreError> {
        let activity = activity_sql("$4");
        let sql = format!(
            "SELECT c.*, {activity} AS activity FROM ({CONVERSATION_INNER} \
             WHERE ($1 IS NULL OR s.channel = $1) \
               AND ($2 IS NULL OR s.user_id = $2 OR s.user_id LIKE $3 ESCAPE '\\')) c \
             WHERE ($5 IS NULL OR c.last_activity_at >= $5) \
               AND ($6 IS NULL OR {activity} = $6) \
               AND ($7 IS NULL OR c.last_activity_at < $7 \
                    OR (c.last_activity_at = $7 AND c.id < $8)) \
             ORDER BY c.last_activity_at DESC, c.id DESC LIMIT $9"
        );
        let scoped = filter
            .user
            .as_deref()
            .map(|user| format!("%{}{}", crate::domain::SCOPE_SEPARATOR, like_escaped(user)));
        let (after_at, after_id) = match &filter.after {
            Some((at, id)) => (Some(*at), Some(id.clone())),
            None => (None, None),
        };
        let _timer = self.timer("admin_conversations");
        let mut rows: Vec<AdminConversation> = with_pool!(self, pool =>
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(&filter.channel).bind(&filter.user).bind(&scoped)
                .bind(filter.idle_before).bind(filter.since)
                .bind(filter.activity.map(Activity::as_str))
                .bind(after_at).bind(after_id).bind(filter.limit + 1)
                .fetch_all(pool).await?);
        let more = rows.len() as i64 > filter.limit;
        rows.truncate(usize::try_from(filter.limit).unwrap_or(0));
        Ok((rows, more))
    }

    /// One conversation of any user.
    pub async fn admin_conversation(
        &self,
        id: &str,
        idle_before: DateTime<Utc>,
    ) -> Result<AdminConversation, StoreError> {
        let activity = activity_sql("$2");
        let sql = format!(
            "SELECT c.*, {activity} AS activity FROM ({CONVERSATION_INNER} WHERE s.id = $1) c"
        );
        let _timer = self.timer("admin_conversation");
        with_pool!(self, pool => sqlx::query_as::<_, AdminConversation>(AssertSqlSafe(sql.as_str()))
            .bind(id).bind(idle_before).fetch_optional(pool).await?)
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    /// A page of one conversation's messages (any user's), oldest first.
    pub async fn admin_messages(
        &self,
        session_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 \
             ORDER BY seq LIMIT $2 OFFSET $3"
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, Message>(AssertSqlSafe(sql.as_str()))
            .bind(session_id).bind(limit).bind(offset).fetch_all(pool).await?),
        )
    }

    /// The agent's figures: conversations active since `active_since`, started
    /// since `day_start`, failures since `hour_ago` and `day_ago`.
    pub async fn agent_figures(
        &self,
        active_since: DateTime<Utc>,
        day_start: DateTime<Utc>,
        hour_ago: DateTime<Utc>,
        day_ago: DateTime<Utc>,
    ) -> Result<AgentFigures, StoreError> {
        let sessions = "SELECT COUNT(*) AS conversations, \
             CAST(COALESCE(SUM(CASE WHEN COALESCE(last_message_at, created_at) >= $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS active_conversations, \
             CAST(COALESCE(SUM(CASE WHEN created_at >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS started_today, \
             CAST(COALESCE(SUM(message_count), 0) AS BIGINT) AS messages, \
             COUNT(DISTINCT CASE WHEN last_message_at >= $1 THEN channel END) AS active_channels, \
             CAST(0 AS BIGINT) AS failures, CAST(0 AS BIGINT) AS failures_last_hour, \
             CAST(0 AS BIGINT) AS failures_last_day \
             FROM sessions";
        // The partial index `messages_failed_idx` holds exactly these rows.
        let failures = "SELECT COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN created_at >= $1 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN created_at >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM messages WHERE role = 'assistant' AND error IS NOT NULL";
        let _timer = self.timer("agent_figures");
        with_pool!(self, pool => {
            let mut figures: AgentFigures = sqlx::query_as(sessions)
                .bind(active_since).bind(day_start).fetch_one(&mut *pool).await?;
            let (all, hour, day): (i64, i64, i64) = sqlx::query_as(failures)
                .bind(hour_ago).bind(day_ago).fetch_one(pool).await?;
            figures.failures = all;
            figures.failures_last_hour = hour;
            figures.failures_last_day = day;
            Ok(figures)
        })
    }

    /// The newest message time of each channel that has conversations.
    pub async fn last_message_by_channel(
        &self,
    ) -> Result<Vec<(String, Option<DateTime<Utc>>)>, StoreError> {
        Ok(with_pool!(self, pool => sqlx::query_as(
                "SELECT channel, MAX(last_message_at) FROM sessions GROUP BY channel")
            .fetch_all(pool).await?))
    }

    /// The outbox of every channel that has entries, by state, at `now_ms`.
    pub async fn outbox_depths(&self, now_ms: i64) -> Result<Vec<OutboxDepth>, StoreError> {
        let sql = "SELECT channel, \
             CAST(COALESCE(SUM(CASE WHEN status = 'pending' AND (locked_until IS NULL OR locked_until < $1) THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending, \
             CAST(COALESCE(SUM(CASE WHEN status = 'pending' AND locked_until >= $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS in_flight, \
             CAST(COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS failed, \
             CAST(COALESCE(SUM(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END), 0) AS BIGINT) AS delivered, \
             MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest_pending_ms \
             FROM webhook_outbox GROUP BY channel ORDER BY channel";
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(now_ms).fetch_all(pool).await?))
    }

    /// A page of outbox entries, newest first, and whether more follow.
    pub async fn outbox_entries(
        &self,
        filter: &OutboxFilter,
    ) -> Result<(Vec<OutboxEntry>, bool), StoreError> {
        // `now_ms` is a number of ours, not text from the request.
        let state = filter.state.map_or_else(
            || "TRUE".to_owned(),
            |s| s.condition(&filter.now_ms.to_string()),
        );
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM webhook_outbox \
             WHERE ($1 IS NULL OR channel = $1) AND {state} \
               AND ($2 IS NULL OR created_at < $2 OR (created_at = $2 AND id < $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let (after_at, after_id) = match &filter.after {
            Some((at, id)) => (Some(*at), Some(id.clone())),
            None => (None, None),
        };
        let mut rows: Vec<OutboxEntry> = with_pool!(self, pool =>
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(&filter.channel).bind(after_at).bind(after_id)
                .bind(filter.limit + 1).fetch_all(pool).await?);
        let more = rows.len() as i64 > filter.limit;
        rows.truncate(usize::try_from(filter.limit).unwrap_or(0));
        Ok((rows, more))
    }

    /// One outbox entry.
    pub async fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM webhook_outbox WHERE id = $1");
        Ok(
            with_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(id).fetch_optional(pool).await?),
        )
    }

    /// Makes a dead (or waiting) entry due at `now_ms`; one that is delivered
    /// or being attempted is left as it is.
    pub async fn retry_outbox_entry(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<RetryOutcome, StoreError> {
        let done = with_pool!(self, pool => sqlx::query(
                "UPDATE webhook_outbox SET status = 'pending', next_attempt_at = $2, \
                 locked_until = NULL WHERE id = $1 AND (status = 'failed' \
                 OR (status = 'pending' AND (locked_until IS NULL OR locked_until < $2)))")
            .bind(id).bind(now_ms).execute(pool).await?.rows_affected());
        if done == 1 {
            return Ok(RetryOutcome::Scheduled);
        }
        Ok(match self.outbox_entry(id).await? {
            None => RetryOutcome::NotFound,
            Some(entry) if entry.status == "delivered" => RetryOutcome::NotRetryable("delivered"),
            Some(_) => RetryOutcome::NotRetryable("in_flight"),
        })
    }
}
