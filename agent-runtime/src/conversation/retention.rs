//! `sessions.retentionDays` (as the AgentDeployment documents it: "days after
//! which deleted sessions are purged"): sessions deleted longer ago are removed
//! from the database with their messages, in small batches with a pause
//! between them so chats never wait on one long delete.

use std::time::Duration;

use super::ConversationError;
use crate::state::AppState;

/// Sessions deleted per statement.
const BATCH: i64 = 200;
/// Pause between batches.
const PAUSE: Duration = Duration::from_millis(50);

/// Purges the sessions deleted longer ago than the retention; returns how many went.
/// Nothing without `sessions.retentionDays`.
pub async fn purge_expired(state: &AppState) -> Result<u64, ConversationError> {
    let Some(days) = state.config.sessions.retention_days.filter(|d| *d > 0) else {
        return Ok(0);
    };
    let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    let mut total = 0;
    loop {
        let deleted = state.store.purge_sessions_before(cutoff, BATCH).await?;
        total += deleted;
        if deleted < BATCH.unsigned_abs() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    if total > 0 {
        tracing::info!(
            sessions = total,
            retention_days = days,
            "old sessions purged"
        );
    }
    Ok(total)
}
