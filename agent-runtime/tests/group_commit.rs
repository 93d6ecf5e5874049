//! Group commit: one-message writes (a user message opening or joining its
//! session, an answer) that wait while another is written share one commit.
//! Each caller still gets its own rows, a bad row fails only its own write,
//! and across connection failures every message is stored exactly once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_runtime::db::{NewMessage, NewSession, Store, StoreError};
use agent_runtime::domain::Role;
use common::{API_KEY, Db, Harness};
use futures::future::join_all;
use serde_json::json;
use sqlx::Connection;
use switchboard_tests::database::{TestDatabase, admin_url};

fn message(session: &str, role: Role, content: &str, tokens: i64) -> NewMessage {
    NewMessage {
        id: NewMessage::new_id(),
        session_id: session.to_owned(),
        parent_id: None,
        role,
        content: content.to_owned(),
        model: (role == Role::Assistant).then(|| "m".to_owned()),
        tokens_in: tokens,
        tokens_out: 2 * tokens,
        latency_ms: (role == Role::Assistant).then_some(7),
        error: None,
        chain_hash: format!("hash of {content}"),
        tool_calls: Vec::new(),
        tool_call_id: None,
        author: None,
    }
}

fn new_session(user: &str) -> NewSession {
    NewSession {
        user_id: user.to_owned(),
        channel: "api".to_owned(),
        external_id: None,
        title: None,
    }
}

/// Stores a session of `user` opened with one user message per text, in one
/// write; returns its id.
async fn store_texts(store: &Store, user: &str, texts: impl Iterator<Item = String>) -> String {
    let id = NewMessage::new_id();
    let messages: Vec<NewMessage> = texts.map(|t| message(&id, Role::User, &t, 1)).collect();
    store
        .create_session_with_messages(&id, new_session(user), &messages)
        .await
        .expect("stored");
    id
}

/// Session number `s`'s texts: `each` of them.
fn numbered(s: usize, each: usize) -> impl Iterator<Item = String> {
    (0..each).map(move |m| format!("message {m} of {s}"))
}

/// A store on a fresh SQLite file, and what opens it again.
struct Fresh {
    _dir: common::TempDir,
    path: std::path::PathBuf,
    target: agent_runtime::settings::DatabaseTarget,
}

impl Fresh {
    async fn new() -> (Self, Store) {
        let dir = common::TempDir::new();
        let path = dir.0.join("rt.db");
        let target = agent_runtime::settings::DatabaseTarget::Sqlite(path.display().to_string());
        let store = Store::connect(&target).await.expect("store");
        (
            Self {
                _dir: dir,
                path,
                target,
            },
            store,
        )
    }
}

/// A connection of the test's own to the store's file.
async fn connect(path: &std::path::Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect")
}

/// Reads `state` every 100 ms until `done` holds of it, for 5 s at most;
/// returns the last read.
async fn within_5s<T, F>(mut state: impl FnMut() -> F, done: impl Fn(&T) -> bool) -> T
where
    F: std::future::Future<Output = T>,
{
    let mut now = state().await;
    for _ in 0..50 {
        if done(&now) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = state().await;
    }
    now
}

/// Runs `futures` at once, each polled for the first time in one pass, and
/// returns their outputs in order.
///
/// `join_all` of more than 30 futures polls them through `FuturesUnordered`,
/// which yields to the executor after two of them yield; nested `join_all`s
/// of at most 30 poll every future on each poll. With a Postgres `database`,
/// its `messages` table is locked until a write waits on it: a write whose
/// answer is already there when it reads (Postgres on the other core was
/// quicker than the runtime's next step) finishes within the poll that sent
/// it, before the next write arrives, and leaves nothing to batch. The test
/// would then measure how fast Postgres answers, not what group commit does
/// with writes that arrive together.
async fn together<F: std::future::Future>(
    database: Option<&str>,
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<F> = futures.into_iter().collect();
    let mut chunks = Vec::new();
    while !futures.is_empty() {
        let rest = futures.split_off(futures.len().min(30));
        chunks.push(join_all(std::mem::replace(&mut futures, rest)));
    }
    assert!(chunks.len() <= 30, "at most 900 futures");
    let joined = async { join_all(chunks).await.into_iter().flatten().collect() };
    let Some(url) = database else {
        return joined.await;
    };
    let mut lock = sqlx::PgConnection::connect(url).await.expect("connect");
    for statement in ["BEGIN", "LOCK TABLE messages IN SHARE MODE"] {
        sqlx::query(statement)
            .execute(&mut lock)
            .await
            .expect(statement);
    }
    let release = async {
        for _ in 0..1_000 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE relation = 'messages'::regclass \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND NOT granted",
            )
            .fetch_one(&mut lock)
            .await
            .expect("locks");
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sqlx::query("COMMIT")
            .execute(&mut lock)
            .await
            .expect("commit");
    };
    let (outputs, ()) = tokio::join!(joined, release);
    outputs
}

/// Commits and writes counted by `switchboard_runtime_database_batch_size`.
async fn batches(h: &Harness) -> (f64, f64) {
    (
        h.metric_sum("switchboard_runtime_database_batch_size_count")
            .await,
        h.metric_sum("switchboard_runtime_database_batch_size_sum")
            .await,
    )
}

/// Opens `n` sessions at once, each with its user message.
async fn open_sessions(
    database: Option<&str>,
    store: &Store,
    n: usize,
) -> Vec<(String, NewMessage)> {
    let opening: Vec<(String, NewMessage)> = (0..n)
        .map(|i| {
            let id = NewMessage::new_id();
            let first = message(&id, Role::User, &format!("hello {i}\nsecond line"), 1);
            (id, first)
        })
        .collect();
    let opened = together(
        database,
        opening.iter().enumerate().map(|(i, (id, first))| {
            store.create_session_with_messages(
                id,
                new_session(&format!("user-{i}")),
                std::slice::from_ref(first),
            )
        }),
    )
    .await;
    for (i, ((id, first), opened)) in opening.iter().zip(opened).enumerate() {
        let (session, stored) = opened.unwrap_or_else(|e| panic!("opening {i}: {e}"));
        assert_eq!(session.id, *id);
        assert_eq!(session.user_id, format!("user-{i}"));
        assert_eq!(
            session.title.as_deref(),
            Some(format!("hello {i}").as_str())
        );
        assert_eq!(session.message_count, 1);
        assert_eq!((session.tokens_in, session.tokens_out), (1, 2));
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].id, first.id);
        assert_eq!(stored[0].session_id, *id);
        assert_eq!(stored[0].content, first.content);
        // What the write returned is what a read finds (times included: a
        // batch writes them as a write of its own does).
        let read = store
            .get_session(&session.user_id, id)
            .await
            .expect("session");
        assert_eq!(read.created_at, session.created_at, "session {i}");
        assert_eq!(read.updated_at, session.updated_at, "session {i}");
        assert_eq!(read.last_message_at, session.last_message_at, "session {i}");
        assert_eq!((read.message_count, read.title), (1, session.title));
        let messages = store
            .all_messages(&session.user_id, id)
            .await
            .expect("messages");
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].created_at, stored[0].created_at, "session {i}");
    }
    opening
}

async fn concurrent_writes_share_commits_and_each_caller_gets_its_own_rows(db: Db) {
    let h = Harness::start(db).await;
    let store = &h.state.store;
    let (commits_before, writes_before) = batches(&h).await;
    let n = 40;
    let opening = open_sessions(h.database_url(), store, n).await;

    // Two writes per session at once (an answer and a follow-up): a batch
    // grows one session's counters by two.
    let follow: Vec<NewMessage> = opening
        .iter()
        .enumerate()
        .flat_map(|(i, (id, _))| {
            [
                message(id, Role::Assistant, &format!("answer {i}"), 10),
                message(id, Role::User, &format!("follow-up {i}"), 100),
            ]
        })
        .collect();
    let stored = together(
        h.database_url(),
        follow
            .iter()
            .map(|m| store.append_messages(std::slice::from_ref(m))),
    )
    .await;
    for (m, stored) in follow.iter().zip(stored) {
        let stored = stored.unwrap_or_else(|e| panic!("{}: {e}", m.content));
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].id, m.id);
        assert_eq!(stored[0].content, m.content);
        assert_eq!(stored[0].role, m.role);
        assert_eq!(stored[0].latency_ms, m.latency_ms);
        assert_eq!(stored[0].chain_hash, m.chain_hash);
    }

    for (i, (id, first)) in opening.iter().enumerate() {
        let user = format!("user-{i}");
        let session = store.get_session(&user, id).await.expect("session");
        assert_eq!(session.message_count, 3, "session {i}");
        assert_eq!(session.tokens_in, 1 + 10 + 100, "session {i}");
        assert_eq!(session.tokens_out, 2 + 20 + 200, "session {i}");
        assert_eq!(
            session.title.as_deref(),
            Some(format!("hello {i}").as_str()),
            "the first title stays"
        );
        let messages = store.all_messages(&user, id).await.expect("messages");
        let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents.len(), 3, "{contents:?}");
        assert_eq!(contents[0], first.content);
        assert!(contents.contains(&format!("answer {i}").as_str()));
        assert!(contents.contains(&format!("follow-up {i}").as_str()));
        // The latest message's time, whichever batch committed last (up to
        // four are in flight at once with Postgres).
        assert_eq!(
            session.last_message_at,
            messages.iter().map(|m| m.created_at).max(),
            "session {i}"
        );
        // The full-text index has the batched rows too.
        let (hits, total) = store
            .search(&user, &format!("follow-up {i}"), 10, 0)
            .await
            .expect("search");
        assert_eq!(total, 1, "session {i}: {}", hits.len());
    }

    let (commits, writes) = batches(&h).await;
    let (commits, writes) = (commits - commits_before, writes - writes_before);
    assert_eq!(writes, (3 * n) as f64, "every write counted once");
    let retries = h
        .metric_sum("switchboard_runtime_database_retries_total{")
        .await;
    assert!(
        commits <= writes / 4.0,
        "{writes} concurrent one-message writes took {commits} commits ({retries} retries)"
    );
}

async fn a_failing_row_fails_only_its_own_write(db: Db) {
    let h = Harness::start(db).await;
    let store = &h.state.store;
    let opening = open_sessions(h.database_url(), store, 2).await;
    let (session, _) = &opening[0];
    let (commits_before, writes_before) = batches(&h).await;

    let mut writes: Vec<NewMessage> = (0..12)
        .map(|i| message(session, Role::Assistant, &format!("fine {i}"), 1))
        .collect();
    // A session that does not exist, and a message id stored already.
    writes.insert(3, message("no-such-session", Role::User, "orphan", 1));
    let mut duplicate = message(session, Role::User, "duplicate", 1);
    duplicate.id = opening[1].1.id.clone();
    writes.insert(7, duplicate);
    let results = together(
        h.database_url(),
        writes
            .iter()
            .map(|m| store.append_messages(std::slice::from_ref(m))),
    )
    .await;
    for (m, result) in writes.iter().zip(&results) {
        match m.content.as_str() {
            "orphan" | "duplicate" => assert!(
                matches!(result, Err(StoreError::Database(_))),
                "{}: {result:?}",
                m.content
            ),
            _ => {
                let stored = result
                    .as_ref()
                    .unwrap_or_else(|e| panic!("{}: {e}", m.content));
                assert_eq!(stored[0].id, m.id);
            }
        }
    }
    let (commits, batched) = batches(&h).await;
    assert!(
        commits - commits_before < batched - writes_before,
        "the writes were batched"
    );

    let got = store.get_session("user-0", session).await.expect("session");
    assert_eq!(got.message_count, 13, "the opening and the 12 fine ones");
    assert_eq!(got.tokens_in, 13);
    let contents: Vec<String> = store
        .all_messages("user-0", session)
        .await
        .expect("messages")
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(contents.len(), 13, "{contents:?}");
    assert!(!contents.iter().any(|c| c == "orphan" || c == "duplicate"));
    let other = store
        .get_session("user-1", &opening[1].0)
        .await
        .expect("session");
    assert_eq!(other.message_count, 1, "the duplicate left the other alone");
}

on_both_databases!(
    concurrent_writes_share_commits_and_each_caller_gets_its_own_rows,
    a_failing_row_fails_only_its_own_write,
);

/// Postgres only (the module's name keeps `make unit`, which runs the SQLite
/// halves without a Postgres server, from picking it).
mod faults {
    pub mod postgres {
        use super::super::*;

        /// The runtime's connections are killed again and again while clients chat:
        /// batches fail mid-flight (before or after their commit), every caller
        /// retries, and each message is stored exactly once, with session counters
        /// that match the messages.
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn messages_are_stored_exactly_once_when_connections_fail() {
            let db = TestDatabase::create_on(&admin_url()).await;
            let (name, url) = (db.name().to_owned(), db.url().to_owned());
            let h = Harness::start_on(Some(db), |_, _| {}).await;
            let base = h.url("");
            let stop = Arc::new(AtomicBool::new(false));
            // Kills that found connections to kill: the clients chat until
            // there were several (a fast runtime answers the first ten chats
            // of each client before the second kill).
            let kills = Arc::new(std::sync::atomic::AtomicU64::new(0));

            let killer = {
                let (stop, kills) = (stop.clone(), kills.clone());
                tokio::spawn(async move {
                    let mut admin = sqlx::PgConnection::connect(&admin_url())
                        .await
                        .expect("admin connection");
                    let mut killed = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let n: i64 = sqlx::query_scalar(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                        )
                        .bind(&name)
                        .fetch_one(&mut admin)
                        .await
                        .expect("terminate");
                        killed += n as u64;
                        if n > 0 {
                            kills.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    killed
                })
            };

            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client");
            let workers = join_all((0..12).map(|w| {
                let (client, base, kills) = (client.clone(), base.clone(), kills.clone());
                async move {
                    let mut answered = Vec::new();
                    for i in 0..2_000 {
                        if i >= 10 && kills.load(Ordering::Relaxed) >= 6 {
                            break;
                        }
                        let content = format!("w{w}-{i}");
                        let response = client
                            .post(format!("{base}/v1/chat/completions"))
                            .bearer_auth(API_KEY)
                            .header("x-switchboard-user", format!("w{w}"))
                            .json(&json!({"messages": [{"role": "user", "content": content}]}))
                            .send()
                            .await
                            .unwrap_or_else(|e| panic!("{content}: {e}"));
                        let status = response.status().as_u16();
                        assert!(status == 200 || status == 503, "{content}: {status}");
                        if status == 200 {
                            answered.push(content);
                        }
                    }
                    answered
                }
            }))
            .await;
            stop.store(true, Ordering::Relaxed);
            let killed = killer.await.expect("killer");
            let answered: Vec<String> = workers.into_iter().flatten().collect();
            assert!(killed > 0, "no connection was killed");
            assert!(!answered.is_empty(), "nothing was answered");
            let retries = h
                .metric_sum("switchboard_runtime_database_retries_total{")
                .await;
            assert!(
                retries > 0.0,
                "no write was retried: the test proved nothing"
            );

            let mut check = sqlx::PgConnection::connect(&url).await.expect("connect");
            let duplicates: Vec<(String, i64)> = sqlx::query_as(
                "SELECT content, count(*) FROM messages GROUP BY session_id, role, content \
             HAVING count(*) > 1",
            )
            .fetch_all(&mut check)
            .await
            .expect("duplicates");
            assert!(duplicates.is_empty(), "stored twice: {duplicates:?}");
            for content in &answered {
                let (users, answers): (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT count(*) FROM messages WHERE role = 'user' AND content = $1), \
                   (SELECT count(*) FROM messages a JOIN messages u ON a.parent_id = u.id \
                    WHERE u.role = 'user' AND u.content = $1 AND a.role = 'assistant')",
                )
                .bind(content)
                .fetch_one(&mut check)
                .await
                .expect("count");
                assert_eq!((users, answers), (1, 1), "{content}");
            }
            let wrong: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT s.id, s.message_count, (SELECT count(*) FROM messages m WHERE m.session_id = s.id) \
             FROM sessions s WHERE s.message_count <> \
               (SELECT count(*) FROM messages m WHERE m.session_id = s.id)",
        )
        .fetch_all(&mut check)
        .await
        .expect("counters");
            assert!(wrong.is_empty(), "counters off: {wrong:?}");
        }
        /// A TCP proxy in front of the harness's Postgres counting the `Sync`
        /// messages its clients send: one per statement, and one per ping
        /// (a ping is a `Sync` alone). Returns the store URL through it.
        async fn counting_syncs(url: &str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (head, rest) = url.split_once('@').expect("a URL with credentials");
            let (server, path) = rest.split_once('/').expect("a URL with a database");
            let path = path.split('?').next().unwrap_or(path);
            let server = server.to_owned();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let proxied = format!(
                "{head}@{}/{path}?sslmode=disable",
                listener.local_addr().expect("addr")
            );
            let counted = syncs.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let Ok(upstream) = tokio::net::TcpStream::connect(&server).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = upstream.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let counted = counted.clone();
                    tokio::spawn(async move {
                        // The startup message has no type byte; every later one has.
                        let mut typed = false;
                        loop {
                            let mut kind = [0u8; 1];
                            if typed && client_read.read_exact(&mut kind).await.is_err() {
                                return;
                            }
                            let Ok(len) = client_read.read_u32().await else {
                                return;
                            };
                            let mut body = vec![0u8; (len as usize).saturating_sub(4)];
                            if client_read.read_exact(&mut body).await.is_err() {
                                return;
                            }
                            if typed && kind[0] == b'S' {
                                counted.fetch_add(1, Ordering::Relaxed);
                            }
                            let mut frame = Vec::with_capacity(5 + body.len());
                            if typed {
                                frame.push(kind[0]);
                            }
                            frame.extend_from_slice(&len.to_be_bytes());
                            frame.extend_from_slice(&body);
                            if server_write.write_all(&frame).await.is_err() {
                                return;
                            }
                            typed = true;
                        }
                    });
                }
            });
            (proxied, syncs)
        }

        /// A statement leaves its connection ready for the next one: one
        /// round trip per one-message write, not a second for the pool's ping
        /// of every connection that comes back to it (docs/performance.md).
        #[tokio::test]
        async fn a_write_costs_one_round_trip_to_postgres() {
            let db = TestDatabase::create_on(&admin_url()).await;
            let (url, syncs) = counting_syncs(db.url()).await;
            let store = Store::connect(&agent_runtime::settings::DatabaseTarget::Postgres(url))
                .await
                .expect("store");
            let opening = open_sessions(None, &store, 1).await;
            let session = &opening[0].0;
            // Each statement is prepared once per connection (a round trip
            // of its own): warm the append on the connection first.
            for i in 0..3 {
                let warm = message(session, Role::Assistant, &format!("warm {i}"), 1);
                store
                    .append_messages(std::slice::from_ref(&warm))
                    .await
                    .expect("warm");
            }
            // What the migrations' and the opening's connections sent on their
            // way back to the pool has arrived.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = syncs.load(Ordering::Relaxed);
            let writes = 20;
            for i in 0..writes {
                let m = message(session, Role::User, &format!("one at a time {i}"), 1);
                store
                    .append_messages(std::slice::from_ref(&m))
                    .await
                    .expect("append");
            }
            let sent = syncs.load(Ordering::Relaxed) - before;
            // A stall of a second or more between two writes costs a ping.
            assert!(
                (writes..=writes + 2).contains(&sent),
                "{sent} Syncs for {writes} one-statement writes (a ping per statement would be {})",
                2 * writes
            );
            let got = store.get_session("user-0", session).await.expect("session");
            assert_eq!(got.message_count, 1 + 3 + writes as i64);
            store.close().await;
        }
    }
}

/// Postgres only (see `faults`): a young database's tables are analyzed by the
/// runtime as it fills them, so no connection keeps plans made for a few pages
/// (docs/performance.md, round twenty-six); a settled one is left to autovacuum.
mod young {
    pub mod postgres {
        use super::super::*;

        /// `ANALYZE`s run on `sessions` by a client (autovacuum's are counted
        /// apart, in `autoanalyze_count`).
        async fn analyzed(url: &str) -> i64 {
            let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query_scalar(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'sessions'",
            )
            .fetch_one(&mut c)
            .await
            .expect("statistics")
        }

        /// Stores `sessions` sessions of `each` messages, a session a statement.
        async fn store_sessions(store: &Store, sessions: usize, each: usize) {
            for s in 0..sessions {
                store_texts(store, "grower", numbered(s, each)).await;
            }
        }

        /// Waits up to 30 s for `sessions` to have been analyzed `at_least`
        /// times (statistics reach the view within a second or so).
        async fn wait_analyzed(url: &str, at_least: i64) -> i64 {
            let mut seen = analyzed(url).await;
            for _ in 0..300 {
                if seen >= at_least {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                seen = analyzed(url).await;
            }
            seen
        }

        #[tokio::test]
        async fn a_young_database_is_analyzed_as_it_fills() {
            let db = TestDatabase::create_on(&admin_url()).await;
            let url = db.url().to_owned();
            let store = Store::connect(&agent_runtime::settings::DatabaseTarget::Postgres(
                url.clone(),
            ))
            .await
            .expect("store");
            store_sessions(&store, 29, 100).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(analyzed(&url).await, 0, "analyzed before 3,000 messages");
            store_sessions(&store, 1, 100).await;
            assert_eq!(
                wait_analyzed(&url, 1).await,
                1,
                "one ANALYZE once 3,000 messages are stored"
            );
            store.close().await;
        }

        #[tokio::test]
        async fn a_settled_database_is_left_to_autovacuum() {
            let db = TestDatabase::create_on(&admin_url()).await;
            let url = db.url().to_owned();
            let target = agent_runtime::settings::DatabaseTarget::Postgres(url.clone());
            // The tables, then 30,000 sessions, analyzed, before the runtime starts.
            Store::connect(&target)
                .await
                .expect("migrated")
                .close()
                .await;
            let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query(
                "INSERT INTO sessions (id, user_id, channel, created_at, updated_at) \
                 SELECT 'old-' || i, 'old', 'api', now(), now() FROM generate_series(1, 30000) i",
            )
            .execute(&mut c)
            .await
            .expect("old sessions");
            sqlx::query("ANALYZE sessions")
                .execute(&mut c)
                .await
                .expect("analyze");
            let before = wait_analyzed(&url, 1).await;
            assert_eq!(before, 1, "the test's own ANALYZE is counted");
            let store = Store::connect(&target).await.expect("store");
            store_sessions(&store, 31, 100).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(
                analyzed(&url).await,
                before,
                "a settled database was analyzed"
            );
            store.close().await;
        }
    }
}

/// SQLite's search indexes (messages, session titles) are filled in batches
/// shortly after the rows are written (src/db/fts_batch.rs), not by a trigger
/// per row.
mod search_index {
    use super::*;

    /// The last message indexed and the last stored (0 when none is left),
    /// after FTS5's own check of the index: against the table once no message
    /// waits to be indexed (an
    /// error if the index holds a row the table does not, or misses one), of
    /// the index alone before.
    async fn index_state(path: &std::path::Path) -> (i64, i64) {
        let mut c = connect(path).await;
        let (indexed, stored): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT seq FROM messages_fts_indexed), \
             (SELECT coalesce(max(seq), 0) FROM messages)",
        )
        .fetch_one(&mut c)
        .await
        .expect("index state");
        sqlx::query("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', $1)")
            .bind(i64::from(indexed >= stored))
            .execute(&mut c)
            .await
            .expect("the index holds exactly the indexed messages");
        (indexed, stored)
    }

    /// How many sessions' titles wait to be indexed, after FTS5's own check of
    /// the title index: against the table once none waits, of the index alone
    /// before.
    async fn titles_pending(path: &std::path::Path) -> i64 {
        let mut c = connect(path).await;
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions_fts_pending")
            .fetch_one(&mut c)
            .await
            .expect("pending titles");
        sqlx::query("INSERT INTO sessions_fts (sessions_fts, rank) VALUES ('integrity-check', $1)")
            .bind(i64::from(pending == 0))
            .execute(&mut c)
            .await
            .expect("the index holds exactly the indexed titles");
        pending
    }

    /// The ids of user `u`'s sessions that a search for `q` finds.
    async fn found(store: &Store, q: &str) -> Vec<String> {
        let (hits, _) = store.search("u", q, 10, 0).await.expect("search");
        hits.into_iter().map(|h| h.session.id).collect()
    }

    async fn titled(store: &Store, user: &str, title: &str) -> String {
        let mut new = new_session(user);
        new.title = Some(title.to_owned());
        store.create_session(new).await.expect("created").id
    }

    async fn store_session(store: &Store, user: &str, words: &[&str]) -> String {
        store_texts(
            store,
            user,
            words.iter().map(|w| format!("about {w} today")),
        )
        .await
    }

    #[tokio::test]
    async fn messages_are_indexed_in_batches_and_found_at_once() {
        let (fresh, store) = Fresh::new().await;
        let path = &fresh.path;
        store_session(&store, "u", &["zebra", "yak"]).await;
        let (indexed, stored) = index_state(path).await;
        assert!(indexed < stored, "indexed at once: {indexed} of {stored}");
        // A search finds what is not indexed yet: it indexes it first.
        let (hits, total) = store.search("u", "zebra", 10, 0).await.expect("search");
        assert_eq!((hits.len(), total), (1, 1));
        assert_eq!(index_state(path).await, (stored, stored));
        // Without a search, the indexer catches up on its own.
        store_session(&store, "u", &["walrus"]).await;
        let state = within_5s(|| index_state(path), |s| s.0 == s.1).await;
        assert_eq!(state.0, state.1, "indexed within 5 s of being stored");
        // More than a chunk (512) waiting: indexed in several transactions.
        let many: Vec<String> = (0..1_100).map(|i| format!("w{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        store_session(&store, "u", &many).await;
        let (hits, total) = store.search("u", "w1099", 10, 0).await.expect("search");
        assert_eq!((hits.len(), total), (1, 1));
        let (indexed, stored) = index_state(path).await;
        assert_eq!(indexed, stored, "every chunk indexed");
        store.close().await;
    }

    #[tokio::test]
    async fn messages_gone_before_they_are_indexed_leave_the_index_whole() {
        let (fresh, store) = Fresh::new().await;
        let path = &fresh.path;
        let indexed = store_session(&store, "u", &["otter"]).await;
        store.search("u", "otter", 10, 0).await.expect("search");
        let gone = store_session(&store, "u", &["otter", "heron"]).await;
        let kept = store_session(&store, "u", &["ibis", "otter"]).await;
        // Deleted (their messages with them) before and after being indexed.
        let mut c = connect(path).await;
        sqlx::query("DELETE FROM sessions WHERE id IN ($1, $2)")
            .bind(&gone)
            .bind(&indexed)
            .execute(&mut c)
            .await
            .expect("deleted");
        // A message edited before it is indexed is indexed as it is now.
        sqlx::query("UPDATE messages SET content = 'about puffin today' WHERE session_id = $1")
            .bind(&kept)
            .execute(&mut c)
            .await
            .expect("edited");
        // The store stops before its indexer runs; the next one indexes at start.
        store.close().await;
        drop(store);
        let (before, stored) = index_state(path).await;
        assert!(before < stored, "indexed before the restart");
        let store = Store::connect(&fresh.target).await.expect("store again");
        assert_eq!(index_state(path).await, (stored, stored));
        assert_eq!(found(&store, "otter").await, Vec::<String>::new());
        assert_eq!(found(&store, "heron").await, Vec::<String>::new());
        assert_eq!(found(&store, "puffin").await, vec![kept.clone()]);
        // Deleting indexed messages takes them out of the index.
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(&kept)
            .execute(&mut c)
            .await
            .expect("deleted");
        assert_eq!(found(&store, "puffin").await, Vec::<String>::new());
        let (indexed, stored) = index_state(path).await;
        assert!(indexed >= stored, "{indexed} {stored}");
        store.close().await;
    }

    #[tokio::test]
    async fn session_titles_are_indexed_in_batches_and_found_at_once() {
        let (fresh, store) = Fresh::new().await;
        let path = &fresh.path;
        let id = titled(&store, "u", "Quokka plans").await;
        assert_eq!(titles_pending(path).await, 1, "indexed at once");
        // A search finds a title not indexed yet: it indexes it first.
        assert_eq!(found(&store, "quokka").await, vec![id.clone()]);
        assert_eq!(titles_pending(path).await, 0);
        // Renamed: the old title leaves the index, the new one waits for it.
        store
            .set_title("u", &id, "Wombat plans")
            .await
            .expect("renamed");
        assert_eq!(titles_pending(path).await, 1);
        assert_eq!(found(&store, "quokka").await, Vec::<String>::new());
        assert_eq!(found(&store, "wombat").await, vec![id.clone()]);
        // Without a search, the indexer catches up on its own, for a rename
        // and for a session opened by a message alike.
        store
            .set_title("u", &id, "Numbat plans")
            .await
            .expect("renamed");
        store_session(&store, "u", &["bilby"]).await;
        let pending = within_5s(|| titles_pending(path), |n| *n == 0).await;
        assert_eq!(pending, 0, "indexed within 5 s of being written");
        assert_eq!(found(&store, "numbat").await, vec![id.clone()]);
        // More than a chunk (512) waiting: indexed in several transactions.
        for i in 0..600 {
            titled(&store, "v", &format!("t{i}")).await;
        }
        let (hits, total) = store.search("v", "t599", 10, 0).await.expect("search");
        assert_eq!((hits.len(), total), (1, 1));
        assert_eq!(titles_pending(path).await, 0, "every chunk indexed");
        store.close().await;
    }

    #[tokio::test]
    async fn titles_changed_or_gone_before_they_are_indexed_leave_the_index_whole() {
        let (fresh, store) = Fresh::new().await;
        let path = &fresh.path;
        let indexed = titled(&store, "u", "alpha").await;
        let renamed = titled(&store, "u", "beta").await;
        let last = titled(&store, "u", "gamma").await;
        store.search("u", "alpha", 10, 0).await.expect("search");
        assert_eq!(titles_pending(path).await, 0);
        let pending_gone = titled(&store, "u", "delta").await;
        let mut c = connect(path).await;
        let rid = "SELECT rid FROM sessions WHERE id = $1";
        // Gone before being indexed, and gone after.
        sqlx::query("DELETE FROM sessions WHERE id IN ($1, $2)")
            .bind(&pending_gone)
            .bind(&indexed)
            .execute(&mut c)
            .await
            .expect("deleted");
        // Renamed twice, once indexed and once waiting.
        store
            .set_title("u", &renamed, "epsilon")
            .await
            .expect("renamed");
        store
            .set_title("u", &renamed, "zeta")
            .await
            .expect("renamed");
        // The last session's rid comes back for the next one (rid is not
        // AUTOINCREMENT), and the new session waits to be indexed under it.
        let last_rid: i64 = sqlx::query_scalar(rid)
            .bind(&last)
            .fetch_one(&mut c)
            .await
            .expect("rid");
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(&last)
            .execute(&mut c)
            .await
            .expect("deleted");
        let reused = titled(&store, "u", "eta").await;
        let reused_rid: i64 = sqlx::query_scalar(rid)
            .bind(&reused)
            .fetch_one(&mut c)
            .await
            .expect("rid");
        assert_eq!(reused_rid, last_rid, "the rid came back");
        assert_eq!(titles_pending(path).await, 2);
        // The store stops before its indexer runs; the next one indexes at start.
        store.close().await;
        drop(store);
        let store = Store::connect(&fresh.target).await.expect("store again");
        assert_eq!(titles_pending(path).await, 0);
        for gone in ["alpha", "beta", "gamma", "delta", "epsilon"] {
            assert_eq!(found(&store, gone).await, Vec::<String>::new(), "{gone}");
        }
        assert_eq!(found(&store, "zeta").await, vec![renamed.clone()]);
        assert_eq!(found(&store, "eta").await, vec![reused.clone()]);
        // Deleting and renaming indexed sessions keeps the index whole.
        store
            .set_title("u", &reused, "theta")
            .await
            .expect("renamed");
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(&renamed)
            .execute(&mut c)
            .await
            .expect("deleted");
        assert_eq!(found(&store, "zeta").await, Vec::<String>::new());
        assert_eq!(found(&store, "theta").await, vec![reused]);
        assert_eq!(titles_pending(path).await, 0);
        store.close().await;
    }
}

/// SQLite's `CHECK`s of a status or a role are comparisons joined by `OR`, not
/// lists of constants, each of which SQLite evaluates through a temporary
/// b-tree on every insert (src/db/sqlite_checks.rs).
mod check_lists {
    use super::*;
    use agent_runtime::settings::DatabaseTarget;

    /// Whether the statement's program builds a temporary b-tree. (A program
    /// run reads the definitions again if the schema's version changed; an
    /// `EXPLAIN` does not, so a read runs first, and the `EXPLAIN` is prepared
    /// anew.)
    async fn ephemeral(c: &mut sqlx::SqliteConnection, statement: &str) -> bool {
        use sqlx::Row;
        sqlx::query("SELECT 1 FROM sessions LIMIT 1")
            .fetch_optional(&mut *c)
            .await
            .expect("read");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {statement}")))
            .persistent(false)
            .fetch_all(&mut *c)
            .await
            .expect("explain");
        rows.iter()
            .any(|row| row.get::<String, _>("opcode") == "OpenEphemeral")
    }

    /// Each table's insert with a value its `CHECK` accepts, and one it refuses.
    const INSERTS: [(&str, &str, &str); 3] = [
        (
            "INSERT INTO sessions (id, user_id, channel, status, created_at, updated_at) \
             VALUES ('s-{n}', 'u', 'api', '{v}', 'now', 'now')",
            "archived",
            "gone",
        ),
        (
            "INSERT INTO messages (id, session_id, role, content, chain_hash, created_at) \
             VALUES ('m-{n}', 's-old', '{v}', 'hi', 'h', 'now')",
            "tool",
            "robot",
        ),
        (
            "INSERT INTO webhook_outbox (id, channel, inbound_key, conversation_id, user_id, \
             text, callback_url, status, next_attempt_at, created_at) \
             VALUES ('o-{n}', 'c', 'k-{n}', 'c', 'u', 't', 'http://127.0.0.1:1/', '{v}', 0, 0)",
            "failed",
            "lost",
        ),
    ];

    fn insert(template: &str, n: &str, value: &str) -> String {
        template.replace("{n}", n).replace("{v}", value)
    }

    async fn schema_version(c: &mut sqlx::SqliteConnection) -> i64 {
        sqlx::query_scalar("PRAGMA schema_version")
            .fetch_one(&mut *c)
            .await
            .expect("schema_version")
    }

    #[tokio::test]
    async fn a_file_migrated_before_gets_comparisons_and_keeps_its_rows_and_refusals() {
        let dir = common::TempDir::new();
        let path = dir.0.join("rt.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        // A file as the releases before made it: every migration, lists kept.
        let mut old = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        sqlx::migrate::Migrator::new(migrations)
            .await
            .expect("migrations")
            .run(&mut old)
            .await
            .expect("migrated");
        sqlx::raw_sql(
            "INSERT INTO sessions (id, user_id, channel, created_at, updated_at) \
             VALUES ('s-old', 'u', 'api', 'then', 'then'); \
             INSERT INTO messages (id, session_id, role, content, chain_hash, created_at) \
             VALUES ('m-old', 's-old', 'user', 'kept', 'h', 'then')",
        )
        .execute(&mut old)
        .await
        .expect("rows of before");
        for (template, valid, _) in INSERTS {
            assert!(
                ephemeral(&mut old, &insert(template, "x", valid)).await,
                "a list's temporary b-tree is seen: {template}"
            );
        }
        let version = schema_version(&mut old).await;

        let target = DatabaseTarget::Sqlite(path.display().to_string());
        let store = Store::connect(&target).await.expect("store");
        // The connection open before reads the new definitions too.
        for (template, valid, _) in INSERTS {
            assert!(
                !ephemeral(&mut old, &insert(template, "x", valid)).await,
                "{template}"
            );
        }
        assert_eq!(schema_version(&mut old).await, version + 1);
        let mut c = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut c)
            .await
            .expect("integrity_check");
        assert_eq!(check, "ok");
        let kept: String = sqlx::query_scalar("SELECT content FROM messages WHERE id = 'm-old'")
            .fetch_one(&mut c)
            .await
            .expect("the row of before");
        assert_eq!(kept, "kept");
        for (i, (template, valid, refused)) in INSERTS.into_iter().enumerate() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(insert(
                template,
                &format!("ok{i}"),
                valid,
            )))
            .execute(&mut c)
            .await
            .expect(valid);
            let err = sqlx::raw_sql(sqlx::AssertSqlSafe(insert(
                template,
                &format!("no{i}"),
                refused,
            )))
            .execute(&mut c)
            .await
            .expect_err(refused)
            .to_string();
            assert!(err.contains("CHECK constraint failed"), "{refused}: {err}");
        }
        // The store's own writes go through the new definitions.
        let id = NewMessage::new_id();
        store
            .create_session_with_messages(
                &id,
                new_session("u"),
                &[message(&id, Role::Assistant, "hi", 1)],
            )
            .await
            .expect("stored");
        store.close().await;
        drop(store);
        // Opened again, a file already edited is left as it is.
        let store = Store::connect(&target).await.expect("store again");
        assert_eq!(schema_version(&mut c).await, version + 1);
        store.close().await;
    }
}

/// SQLite's WAL is copied into the database file by a connection of its own,
/// not by the commit that takes it past a size (src/db/checkpoint.rs).
mod checkpoints {
    use super::*;

    fn size(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// The file's size once it is larger than `before`, or after 5 s.
    async fn grown(path: &std::path::Path, before: u64) -> u64 {
        within_5s(|| async { size(path) }, |now| *now > before).await
    }

    /// Held by each test of this module while it runs: what they read (file
    /// sizes, how soon a checkpoint runs) depends on the checkpointer keeping
    /// up, and another of them writing thousands of messages at the same time
    /// (their runtimes share the machine's cores) delays it: the log grew to
    /// 27-29 MB in 2 of 5 runs of the whole file with them in parallel.
    async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
        static ONE_AT_A_TIME: std::sync::LazyLock<tokio::sync::Mutex<()>> =
            std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));
        ONE_AT_A_TIME.lock().await
    }

    /// The write-ahead log's file of the database at `path`.
    fn log_file(path: &std::path::Path) -> std::path::PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push("-wal");
        name.into()
    }

    /// The messages the database at `path` holds, read on a connection of
    /// the test's own.
    async fn messages_in(path: &std::path::Path) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messages")
            .fetch_one(&mut connect(path).await)
            .await
            .expect("count")
    }

    /// `sessions` sessions of `each` messages, `at_once` writes at a time.
    async fn write(store: &Store, sessions: usize, each: usize, at_once: usize) {
        let numbers: Vec<usize> = (0..sessions).collect();
        for batch in numbers.chunks(at_once) {
            join_all(
                batch
                    .iter()
                    .map(|&s| store_texts(store, "u", numbered(s, each))),
            )
            .await;
        }
    }

    #[tokio::test]
    async fn stored_messages_reach_the_database_file_without_a_commit_copying_them() {
        let _alone = alone().await;
        let (fresh, store) = Fresh::new().await;
        let before = size(&fresh.path);
        // 80 messages: a few hundred pages of log, short of the 1,000 at
        // which a commit would have copied them by SQLite's default.
        write(&store, 20, 4, 1).await;
        let now = grown(&fresh.path, before).await;
        assert!(
            now > before,
            "the database file still holds {before} bytes 5 s after 80 messages"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_few_messages_reach_the_database_file_once_writes_stop() {
        let _alone = alone().await;
        let (fresh, store) = Fresh::new().await;
        let before = size(&fresh.path);
        // Fewer than a checkpoint's 64 messages: copied 5 s after they stop.
        write(&store, 1, 10, 1).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let now = grown(&fresh.path, before).await;
        assert!(
            now > before,
            "the database file still holds {before} bytes 9 s after 10 messages"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_log_starts_again_under_a_steady_stream_of_writes() {
        let _alone = alone().await;
        let (fresh, store) = Fresh::new().await;
        let wal = log_file(&fresh.path);
        // ~4,000 messages, 32 writes at a time: far more log than a
        // checkpoint copies at a time, written while checkpoints run.
        write(&store, 2_000, 2, 32).await;
        // The log file keeps the largest size it reached: below the 16 MB at
        // which the writer copies what the checkpointer left (and well below
        // the 40 MB at which a commit would).
        let largest = size(&wal);
        assert!(largest < 20 << 20, "the log grew to {largest} bytes");
        let stored = messages_in(&fresh.path).await;
        assert_eq!(stored, 4_000);
        store.close().await;
    }

    #[tokio::test]
    async fn the_log_file_is_emptied_only_once_writes_stop() {
        let _alone = alone().await;
        let (fresh, store) = Fresh::new().await;
        let wal = log_file(&fresh.path);
        // A message a second for 8 s: fewer than a checkpoint's 64, never 5 s
        // without one. The log is not copied or emptied meanwhile: it only
        // grows, read just before each next message.
        let mut sizes = Vec::new();
        for s in 0..8 {
            store_texts(&store, "u", numbered(s, 1)).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            sizes.push(size(&wal));
        }
        assert!(
            sizes.windows(2).all(|w| w[0] > 0 && w[0] <= w[1]),
            "the log file shrank while messages kept coming: {sizes:?}"
        );
        // 5 s after the last one it is emptied.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let emptied = within_5s(|| async { size(&wal) }, |now| *now == 0).await;
        assert_eq!(emptied, 0, "the log file holds {emptied} bytes once idle");
        store.close().await;
    }

    #[tokio::test]
    async fn a_reader_in_the_way_only_delays_emptying_the_log_file() {
        let _alone = alone().await;
        let (fresh, store) = Fresh::new().await;
        let wal = log_file(&fresh.path);
        store_texts(&store, "u", numbered(0, 10)).await;
        // A reader holds a snapshot across the moment the idle checkpoint runs
        // (5 s after the last write: the messages, or the search indexer's run
        // 1 s after them), so emptying the file has to wait for it.
        let mut reader = connect(&fresh.path).await;
        sqlx::raw_sql("BEGIN; SELECT count(*) FROM messages;")
            .execute(&mut reader)
            .await
            .expect("a read transaction");
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(size(&wal) > 0, "the log file was emptied under a reader");
        sqlx::raw_sql("COMMIT")
            .execute(&mut reader)
            .await
            .expect("the reader ends");
        // Once it is gone, the checkpointer's next try empties the file.
        let emptied = within_5s(|| async { size(&wal) }, |now| *now == 0).await;
        assert_eq!(emptied, 0, "the log file holds {emptied} bytes once idle");
        assert_eq!(messages_in(&fresh.path).await, 10);
        store.close().await;
    }

    #[tokio::test]
    async fn the_log_file_is_emptied_once_writes_stop() {
        let _alone = alone().await;
        let (fresh, store) = Fresh::new().await;
        let wal = log_file(&fresh.path);
        write(&store, 400, 2, 32).await;
        let written = size(&wal);
        assert!(written > 1 << 20, "the log holds {written} bytes");
        // 5 s after the last write the idle checkpoint copies the log and
        // empties its file.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let emptied = within_5s(|| async { size(&wal) }, |now| *now == 0).await;
        assert_eq!(emptied, 0, "the log file holds {emptied} bytes once idle");
        // The store writes on, and everything is there.
        write(&store, 10, 2, 1).await;
        let stored = messages_in(&fresh.path).await;
        assert_eq!(stored, 820);
        store.close().await;
    }
}
