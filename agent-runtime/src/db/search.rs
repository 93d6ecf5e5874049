//! Ranked full-text search over the titles and messages of a user's sessions
//! (tsvector + GIN on Postgres, FTS5 on SQLite).

use sqlx::AssertSqlSafe;

use super::messages::{prefixed, truncate_chars};
use super::sessions::SESSION_COLUMNS;
use super::{Backend, Session, Store, StoreError};

/// One search result.
#[derive(Clone, Debug)]
pub struct SearchHit {
    /// The matching session.
    pub session: Session,
    /// Relevance; higher is better.
    pub score: f64,
    /// The best-matching text (a message or the title).
    pub snippet: String,
}

#[derive(sqlx::FromRow)]
struct SearchRow {
    #[sqlx(flatten)]
    session: Session,
    score: f64,
    snippet: Option<String>,
    total: i64,
}

impl Store {
    /// Ranked full-text search over titles and message text of the user's
    /// sessions that are not deleted. A title hit weighs double; a session's
    /// score adds up its hits. Returns a page and the total.
    pub async fn search(
        &self,
        user_id: &str,
        query: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SearchHit>, i64), StoreError> {
        let cols = prefixed(SESSION_COLUMNS, "s");
        let rows: Vec<SearchRow> = match &self.backend {
            Backend::Postgres(pool) => {
                let sql = format!(
                    // Every word must match and nothing is query syntax, as
                    // with SQLite (`fts5_query`): not websearch_to_tsquery,
                    // which would read `-word` and `or`.
                    "WITH q AS (SELECT plainto_tsquery('simple', $2) AS query), \
                     hits AS ( \
                       SELECT m.session_id, ts_rank(m.content_tsv, q.query) AS rank, m.content AS text \
                       FROM messages m JOIN sessions s ON s.id = m.session_id, q \
                       WHERE s.user_id = $1 AND s.status <> 'deleted' AND m.content_tsv @@ q.query \
                       UNION ALL \
                       SELECT s.id, 2 * ts_rank(s.title_tsv, q.query), s.title \
                       FROM sessions s, q \
                       WHERE s.user_id = $1 AND s.status <> 'deleted' AND s.title_tsv @@ q.query), \
                     ranked AS ( \
                       SELECT session_id, SUM(rank) AS score, \
                              (array_agg(text ORDER BY rank DESC))[1] AS snippet \
                       FROM hits GROUP BY session_id) \
                     SELECT {cols}, CAST(r.score AS DOUBLE PRECISION) AS score, r.snippet, \
                            COUNT(*) OVER () AS total \
                     FROM ranked r JOIN sessions s ON s.id = r.session_id \
                     ORDER BY r.score DESC, s.updated_at DESC, s.id LIMIT $3 OFFSET $4"
                );
                sqlx::query_as(AssertSqlSafe(sql.as_str()))
                    .bind(user_id)
                    .bind(query)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(pool)
                    .await?
            }
            Backend::Sqlite(pool) => {
                let Some(fts_query) = fts5_query(query) else {
                    return Ok((Vec::new(), 0));
                };
                let sql = format!(
                    "WITH hits AS ( \
                       SELECT m.session_id AS session_id, -bm25(messages_fts) AS hit, m.content AS text \
                       FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid \
                       JOIN sessions s ON s.id = m.session_id \
                       WHERE messages_fts MATCH $2 AND s.user_id = $1 AND s.status <> 'deleted' \
                       UNION ALL \
                       SELECT s.id, -2 * bm25(sessions_fts), s.title \
                       FROM sessions_fts JOIN sessions s ON s.rid = sessions_fts.rowid \
                       WHERE sessions_fts MATCH $2 AND s.user_id = $1 AND s.status <> 'deleted'), \
                     ranked AS ( \
                       SELECT session_id, SUM(hit) AS score, MAX(hit) AS best, text AS snippet \
                       FROM hits GROUP BY session_id) \
                     SELECT {cols}, CAST(r.score AS REAL) AS score, r.snippet, \
                            COUNT(*) OVER () AS total \
                     FROM ranked r JOIN sessions s ON s.id = r.session_id \
                     ORDER BY r.score DESC, s.updated_at DESC, s.id LIMIT $3 OFFSET $4"
                );
                sqlx::query_as(AssertSqlSafe(sql.as_str()))
                    .bind(user_id)
                    .bind(fts_query)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(pool)
                    .await?
            }
        };
        let total = rows.first().map(|r| r.total).unwrap_or(0);
        let hits = rows
            .into_iter()
            .map(|r| SearchHit {
                session: r.session,
                score: r.score,
                snippet: truncate_chars(r.snippet.as_deref().unwrap_or(""), 200),
            })
            .collect();
        Ok((hits, total))
    }
}

/// The user's words as an FTS5 query: each word quoted (so no input is FTS5
/// syntax), all required. `None` when there is no word at all.
fn fts5_query(input: &str) -> Option<String> {
    let terms: Vec<String> = input
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{w}\""))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts5_queries_never_carry_syntax() {
        assert_eq!(
            fts5_query("kube* \"OR\" -x").as_deref(),
            Some("\"kube\" \"OR\" \"x\"")
        );
        assert_eq!(fts5_query("  ** "), None);
    }
}
