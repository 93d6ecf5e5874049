//! Approvals of server-side tool calls: a call to a tool in
//! `tools.requireApproval` waits for a person's decision, stored here so that
//! any pod (same database) can take it and a client reading the session sees
//! it (deleted with its session).

use super::{Store, StoreError, with_pool};

/// One approval.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ToolApproval {
    /// Its id.
    pub id: String,
    /// The session.
    pub session_id: String,
    /// The assistant message that asked for the call.
    pub message_id: String,
    /// The call's id (as the model named it).
    pub tool_call_id: String,
    /// The tool (as the model sees it).
    pub tool: String,
    /// The source offering it.
    pub source: String,
    /// The arguments as the model wrote them.
    pub arguments: String,
    /// When it was asked for (unix milliseconds).
    pub requested_at: i64,
    /// When it expires undecided (unix milliseconds).
    pub expires_at: i64,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub state: String,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When it was decided (unix milliseconds).
    pub decided_at: Option<i64>,
    /// The reason given with a rejection.
    pub reason: Option<String>,
}

impl ToolApproval {
    /// Whether it still waits for a decision.
    pub fn is_pending(&self) -> bool {
        self.state == "pending"
    }
}

const COLUMNS: &str = "id, session_id, message_id, tool_call_id, tool, source, arguments, \
    requested_at, expires_at, state, decided_by, decided_at, reason";

/// [`COLUMNS`] of the table named `a`, with the session's user and channel
/// (named `s`), for the admin views.
const ADMIN_COLUMNS: &str = "a.id, a.session_id, a.message_id, a.tool_call_id, a.tool, a.source, \
    a.arguments, a.requested_at, a.expires_at, a.state, a.decided_by, a.decided_at, a.reason, \
    s.user_id, s.channel";

/// An approval with its session's user and channel (the admin's view).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AdminApproval {
    /// The approval.
    #[sqlx(flatten)]
    pub approval: ToolApproval,
    /// The session's user as stored (scoped on channels with their own key).
    pub user_id: String,
    /// The channel the session came in through.
    pub channel: String,
}

/// Which approvals the admin listing shows: pending ones, oldest first.
#[derive(Clone, Debug, Default)]
pub struct ApprovalFilter {
    /// Only this session's.
    pub session_id: Option<String>,
    /// Only this user's (as clients name them: also on channels with their own key).
    pub user: Option<String>,
    /// Only those after this position (requested at, id), oldest first.
    pub after: Option<(i64, String)>,
    /// Still decidable at this time (unix milliseconds): not past their expiry.
    pub now_ms: i64,
    /// Page size.
    pub limit: i64,
}

impl Store {
    /// Stores a new approval.
    pub async fn add_tool_approval(&self, row: &ToolApproval) -> Result<(), StoreError> {
        let _timer = self.timer("add_tool_approval");
        let sql = format!(
            "INSERT INTO tool_approvals ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        with_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&row.id).bind(&row.session_id).bind(&row.message_id)
            .bind(&row.tool_call_id).bind(&row.tool).bind(&row.source)
            .bind(&row.arguments).bind(row.requested_at).bind(row.expires_at)
            .bind(&row.state).bind(&row.decided_by).bind(row.decided_at).bind(&row.reason)
            .execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// The approvals of a session, oldest first.
    pub async fn tool_approvals(&self, session_id: &str) -> Result<Vec<ToolApproval>, StoreError> {
        let _timer = self.timer("tool_approvals");
        let sql = format!(
            "SELECT {COLUMNS} FROM tool_approvals WHERE session_id = $1 ORDER BY requested_at, id"
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ToolApproval>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(session_id).fetch_all(pool).await?),
        )
    }

    /// One approval of a session.
    pub async fn tool_approval(
        &self,
        session_id: &str,
        id: &str,
    ) -> Result<Option<ToolApproval>, StoreError> {
        let _timer = self.timer("tool_approval");
        let sql = format!("SELECT {COLUMNS} FROM tool_approvals WHERE id = $1 AND session_id = $2");
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ToolApproval>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(id).bind(session_id).fetch_optional(pool).await?),
        )
    }

    /// Decides a pending approval: `state` (`approved`, `rejected`, `expired`)
    /// with who and why. False when it was no longer pending.
    pub async fn decide_tool_approval(
        &self,
        id: &str,
        state: &str,
        decided_by: Option<&str>,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let _timer = self.timer("decide_tool_approval");
        let now = chrono::Utc::now().timestamp_millis();
        let sql = "UPDATE tool_approvals SET state = $1, decided_by = $2, decided_at = $3, \
                   reason = $4 WHERE id = $5 AND state = 'pending'";
        let affected = with_pool!(self, pool => sqlx::query(sql)
            .bind(state).bind(decided_by).bind(now).bind(reason).bind(id)
            .execute(pool).await.map(|r| r.rows_affected())?);
        Ok(affected == 1)
    }

    /// Pending approvals of every session (still within their time), oldest
    /// first, with their sessions' users and channels; and whether more follow.
    pub async fn admin_tool_approvals(
        &self,
        filter: &ApprovalFilter,
    ) -> Result<(Vec<AdminApproval>, bool), StoreError> {
        let _timer = self.timer("admin_tool_approvals");
        let sql = format!(
            "SELECT {ADMIN_COLUMNS} FROM tool_approvals a JOIN sessions s ON s.id = a.session_id \
             WHERE a.state = 'pending' AND a.expires_at >= $1 \
               AND ($2 IS NULL OR a.session_id = $2) \
               AND ($3 IS NULL OR s.user_id = $3 OR s.user_id LIKE $4 ESCAPE '\\') \
               AND ($5 IS NULL OR a.requested_at > $5 OR (a.requested_at = $5 AND a.id > $6)) \
             ORDER BY a.requested_at, a.id LIMIT $7"
        );
        let scoped = filter.user.as_deref().map(|user| {
            format!(
                "%{}{}",
                crate::domain::SCOPE_SEPARATOR,
                super::admin::like_escaped(user)
            )
        });
        let (after_at, after_id) = match &filter.after {
            Some((at, id)) => (Some(*at), Some(id.clone())),
            None => (None, None),
        };
        let mut rows: Vec<AdminApproval> = with_pool!(self, pool =>
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(filter.now_ms).bind(&filter.session_id).bind(&filter.user).bind(&scoped)
                .bind(after_at).bind(after_id).bind(filter.limit + 1)
                .fetch_all(pool).await?);
        let more = rows.len() as i64 > filter.limit;
        rows.truncate(usize::try_from(filter.limit).unwrap_or(0));
        Ok((rows, more))
    }

    /// One approval of any session, with its session's user and channel.
    pub async fn admin_tool_approval(&self, id: &str) -> Result<Option<AdminApproval>, StoreError> {
        let _timer = self.timer("admin_tool_approval");
        let sql = format!(
            "SELECT {ADMIN_COLUMNS} FROM tool_approvals a JOIN sessions s ON s.id = a.session_id \
             WHERE a.id = $1"
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, AdminApproval>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(id).fetch_optional(pool).await?),
        )
    }
}
