//! `sessions.retentionDays`: sessions deleted longer ago are purged with their
//! messages; sessions deleted recently, and old sessions in use, stay.

mod common;

use common::Harness;
use serde_json::json;
use switchboard_tests::database::{TestDatabase, admin_url};

/// Needs Postgres (`make unit` skips `postgres::` tests).
mod on_postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_deleted_longer_ago_than_the_retention_are_purged() {
        let db = TestDatabase::create_on(&admin_url()).await;
        let url = db.url().to_owned();
        let h = Harness::start_on(Some(db), |config, _| {
            config.sessions.retention_days = Some(90);
        })
        .await;
        for question in [
            "an old question",
            "a recent question",
            "an old kept question",
        ] {
            let (status, body) = h
                .chat("erin", json!([{"role": "user", "content": question}]))
                .await;
            assert_eq!(status, 200, "{body}");
        }
        let (_, sessions) = h.get("erin", "/api/sessions").await;
        assert_eq!(
            sessions["data"].as_array().map(Vec::len),
            Some(3),
            "{sessions}"
        );
        let pool = sqlx::PgPool::connect(&url).await.expect("database");
        // Deleted 91 days ago; deleted just now; in use, last changed 91 days ago.
        for sql in [
            "UPDATE sessions SET status = 'deleted' \
             WHERE title IN ('an old question', 'a recent question')",
            "UPDATE sessions SET updated_at = updated_at - interval '91 days', \
             created_at = created_at - interval '91 days' WHERE title LIKE '%old%'",
        ] {
            sqlx::query(sql).execute(&pool).await.expect("updated");
        }
        let purged = agent_runtime::conversation::retention::purge_expired(&h.state)
            .await
            .expect("purged");
        assert_eq!(purged, 1);
        let mut titles: Vec<String> = sqlx::query_scalar("SELECT title FROM sessions")
            .fetch_all(&pool)
            .await
            .expect("titles");
        titles.sort();
        assert_eq!(titles, ["a recent question", "an old kept question"]);
        let orphans: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE session_id NOT IN (SELECT id FROM sessions)",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        assert_eq!(orphans, 0, "the messages went with their session");
        assert_eq!(
            agent_runtime::conversation::retention::purge_expired(&h.state)
                .await
                .expect("purged"),
            0,
            "nothing more to purge"
        );
        pool.close().await;
    }
}
