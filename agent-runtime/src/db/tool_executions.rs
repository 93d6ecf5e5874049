//! Server-side tool executions: what the runtime ran for the model, kept with
//! the conversation (deleted with its session).

use super::{Store, StoreError, with_pool};

/// One tool execution.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ToolExecution {
    /// Its id.
    pub id: String,
    /// The session.
    pub session_id: String,
    /// The assistant message that asked for the call.
    pub call_message_id: String,
    /// The tool message holding the result.
    pub result_message_id: String,
    /// The call's id (as the model named it).
    pub tool_call_id: String,
    /// The tool (as the model sees it).
    pub tool: String,
    /// The source offering it.
    pub source: String,
    /// The arguments as the model wrote them.
    pub input: String,
    /// The result (or the error) as the model got it.
    pub output: String,
    /// `ok`, `error`, `timeout`, `invalid_arguments`, `unavailable` or `rejected`.
    pub status: String,
    /// How long the call took, in milliseconds (without an approval's wait).
    pub duration_ms: i64,
    /// What went wrong.
    pub error: Option<String>,
    /// When it started (unix milliseconds).
    pub started_at: i64,
}

const COLUMNS: &str = "id, session_id, call_message_id, result_message_id, tool_call_id, tool, \
    source, input, output, status, duration_ms, error, started_at";

impl Store {
    /// Stores executions.
    pub async fn add_tool_executions(&self, rows: &[ToolExecution]) -> Result<(), StoreError> {
        let _timer = self.timer("add_tool_executions");
        let sql = format!(
            "INSERT INTO tool_executions ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        for row in rows {
            with_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&row.id).bind(&row.session_id).bind(&row.call_message_id)
                .bind(&row.result_message_id).bind(&row.tool_call_id).bind(&row.tool)
                .bind(&row.source).bind(&row.input).bind(&row.output).bind(&row.status)
                .bind(row.duration_ms).bind(&row.error).bind(row.started_at)
                .execute(pool).await.map(|_| ())?);
        }
        Ok(())
    }

    /// The executions of a session, oldest first.
    pub async fn tool_executions(
        &self,
        session_id: &str,
    ) -> Result<Vec<ToolExecution>, StoreError> {
        let _timer = self.timer("tool_executions");
        let sql = format!(
            "SELECT {COLUMNS} FROM tool_executions WHERE session_id = $1 ORDER BY started_at, id"
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ToolExecution>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(session_id).fetch_all(pool).await?),
        )
    }
}
