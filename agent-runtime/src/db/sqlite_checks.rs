//! SQLite's `CHECK`s without lists of constants.
//!
//! SQLite evaluates `x IN ('a', 'b', 'c')` with three or more constants through
//! a temporary b-tree (`OP_OpenEphemeral`: its own page cache, a zeroed page),
//! built each time a statement runs. The `CHECK`s of `sessions.status`,
//! `messages.role` (migration 0001) and `webhook_outbox.status` (0002) were
//! such lists, evaluated on every insert: three temporary b-trees per chat, a
//! tenth of an SQLite chat's instructions (docs/performance.md, round
//! twenty-nine). The same conditions written as comparisons joined by `OR`
//! accept and refuse the same values without one.
//!
//! A `CHECK` is not stored in the rows, so the tables' definitions are edited
//! in place, by SQLite's documented procedure for constraint changes that
//! leave the file's content as it is (<https://www.sqlite.org/lang_altertable.html#otheralter>):
//! in one transaction, the definitions are updated in `sqlite_schema` and the
//! schema's version is incremented, so that every connection open on the file
//! reads them again. Rebuilding the tables instead would copy a tenant's whole
//! history at start. A file already edited has nothing to do: one read of
//! `sqlite_schema`.

use sqlx::{Connection, SqliteConnection};

/// Each table, its `CHECK` as the migrations wrote it, and the same condition
/// without a list.
const REWRITES: [(&str, &str, &str); 3] = [
    (
        "sessions",
        "CHECK (status IN ('active', 'archived', 'deleted'))",
        "CHECK (status = 'active' OR status = 'archived' OR status = 'deleted')",
    ),
    (
        "messages",
        "CHECK (role IN ('user', 'assistant', 'system', 'tool'))",
        "CHECK (role = 'user' OR role = 'assistant' OR role = 'system' OR role = 'tool')",
    ),
    (
        "webhook_outbox",
        "CHECK (status IN ('pending', 'delivered', 'failed'))",
        "CHECK (status = 'pending' OR status = 'delivered' OR status = 'failed')",
    ),
];

/// Rewrites the listed `CHECK`s still found in the tables' definitions;
/// returns the tables edited. Schema editing is off again when this returns,
/// whatever the outcome; on an error nothing was changed.
pub(super) async fn rewrite(conn: &mut SqliteConnection) -> Result<Vec<&'static str>, sqlx::Error> {
    let edited = edit(conn).await;
    // `RESET` also makes this connection read the definitions again.
    sqlx::raw_sql("PRAGMA writable_schema = RESET")
        .execute(&mut *conn)
        .await?;
    edited
}

async fn edit(conn: &mut SqliteConnection) -> Result<Vec<&'static str>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    // Every table's definition (a few dozen rows), read once.
    let tables: Vec<(String, String)> =
        sqlx::query_as("SELECT name, sql FROM sqlite_schema WHERE type = 'table'")
            .fetch_all(&mut *tx)
            .await?;
    let todo: Vec<(&str, String)> = REWRITES
        .iter()
        .filter_map(|&(table, listed, compared)| {
            let (_, sql) = tables.iter().find(|(name, _)| name == table)?;
            sql.contains(listed)
                .then(|| (table, sql.replace(listed, compared)))
        })
        .collect();
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    let version: i64 = sqlx::query_scalar("PRAGMA schema_version")
        .fetch_one(&mut *tx)
        .await?;
    sqlx::raw_sql("PRAGMA writable_schema = ON")
        .execute(&mut *tx)
        .await?;
    for (table, sql) in &todo {
        sqlx::query("UPDATE sqlite_schema SET sql = $1 WHERE type = 'table' AND name = $2")
            .bind(sql)
            .bind(table)
            .execute(&mut *tx)
            .await?;
    }
    // A pragma takes no parameter; the value is the integer just read.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA schema_version = {}; PRAGMA writable_schema = RESET",
        version + 1
    )))
    .execute(&mut *tx)
    .await?;
    // The definitions are read again here: one that did not parse fails the
    // transaction, which then rolls back.
    for (table, _) in &todo {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM \"{table}\" LIMIT 0"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(todo.into_iter().map(|(table, _)| table).collect())
}
