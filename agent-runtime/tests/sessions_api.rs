//! The sessions API end to end on SQLite and Postgres: lifecycle, listing with
//! filters and pagination, ranked search, posting messages (whole and
//! streamed), history, stats, and isolation between users.

mod common;

use common::{Db, Harness, assert_error, sse_data, streamed_text};
use reqwest::Method;
use serde_json::{Value, json};

async fn create(h: &Harness, user: &str, title: &str) -> String {
    let (status, body) = h.post(user, "/api/sessions", json!({"title": title})).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

async fn say(h: &Harness, user: &str, id: &str, content: &str) -> Value {
    let (status, body) = h
        .post(
            user,
            &format!("/api/sessions/{id}/messages"),
            json!({"content": content}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|s| {
            s["id"]
                .as_str()
                .or_else(|| s["session"]["id"].as_str())
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

async fn session_lifecycle(db: Db) {
    let h = Harness::start(db).await;
    let id = create(&h, "alice", "Trip planning").await;
    let (status, s) = h.get("alice", &format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            s["title"].as_str(),
            s["status"].as_str(),
            s["pinned"].as_bool()
        ),
        (Some("Trip planning"), Some("active"), Some(false))
    );
    assert_eq!(s["user"], "alice");

    let (status, s) = h
        .json(
            h.as_user(Method::PATCH, &format!("/api/sessions/{id}"), "alice")
                .json(&json!({"title": "Trip to Lisbon"})),
        )
        .await;
    assert_eq!((status, s["title"].as_str()), (200, Some("Trip to Lisbon")));

    let (_, s) = h
        .post("alice", &format!("/api/sessions/{id}/pin"), json!({}))
        .await;
    assert_eq!(s["pinned"], true);
    let (_, s) = h
        .post("alice", &format!("/api/sessions/{id}/unpin"), json!({}))
        .await;
    assert_eq!(s["pinned"], false);
    let (_, s) = h
        .post("alice", &format!("/api/sessions/{id}/archive"), json!({}))
        .await;
    assert_eq!(s["status"], "archived");
    let (_, archived) = h.get("alice", "/api/sessions?status=archived").await;
    assert_eq!(ids(&archived), std::slice::from_ref(&id));
    let (_, active) = h.get("alice", "/api/sessions?status=active").await;
    assert!(ids(&active).is_empty());
    let (_, s) = h
        .post("alice", &format!("/api/sessions/{id}/unarchive"), json!({}))
        .await;
    assert_eq!(s["status"], "active");

    let (status, s) = h
        .json(h.as_user(Method::DELETE, &format!("/api/sessions/{id}"), "alice"))
        .await;
    assert_eq!((status, s["status"].as_str()), (200, Some("deleted")));
    // Soft-deleted: gone from reads and listings, still listed under status=deleted.
    assert_error(
        &h.get("alice", &format!("/api/sessions/{id}")).await,
        404,
        "session_not_found",
    );
    let (_, all) = h.get("alice", "/api/sessions").await;
    assert!(ids(&all).is_empty());
    let (_, deleted) = h.get("alice", "/api/sessions?status=deleted").await;
    assert_eq!(ids(&deleted), [id]);
}

async fn listing_filters_sorts_and_paginates(db: Db) {
    let h = Harness::start(db).await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(create(&h, "alice", &format!("session {i}")).await);
    }
    h.post(
        "alice",
        &format!("/api/sessions/{}/pin", created[2]),
        json!({}),
    )
    .await;

    let mut seen = Vec::new();
    for page in 0..3 {
        let (status, body) = h
            .get(
                "alice",
                &format!("/api/sessions?limit=3&offset={}", page * 3),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["pagination"]["total"], 7);
        assert_eq!(body["pagination"]["has_more"], page < 2);
        seen.extend(ids(&body));
    }
    // Pinned first, then newest first; every session exactly once.
    let mut expected = vec![created[2].clone()];
    expected.extend(
        created
            .iter()
            .rev()
            .filter(|id| **id != created[2])
            .cloned(),
    );
    assert_eq!(seen, expected);

    let (_, pinned) = h.get("alice", "/api/sessions?pinned=true").await;
    assert_eq!(ids(&pinned), [created[2].clone()]);
    let (_, by_title) = h
        .get(
            "alice",
            "/api/sessions?sort=title&order=asc&pinned=false&limit=2",
        )
        .await;
    assert_eq!(ids(&by_title), [created[0].clone(), created[1].clone()]);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("sort=color", "sort"),
        ("status=gone", "status"),
    ] {
        let refused = h.get("alice", &format!("/api/sessions?{query}")).await;
        assert_error(&refused, 400, "invalid_query");
        assert_eq!(refused.1["error"]["param"], field, "{query}: {}", refused.1);
    }
}

async fn search_is_ranked_and_paginated(db: Db) {
    let h = Harness::start(db).await;
    let strong = create(&h, "alice", "Kubernetes operators").await;
    say(
        &h,
        "alice",
        &strong,
        "how do kubernetes operators reconcile",
    )
    .await;
    say(&h, "alice", &strong, "and kubernetes finalizers?").await;
    let weak = create(&h, "alice", "Cooking").await;
    say(&h, "alice", &weak, "a recipe, then maybe kubernetes later").await;
    let none = create(&h, "alice", "Gardening").await;
    say(&h, "alice", &none, "tomatoes need sun").await;
    let other_user = create(&h, "bob", "Kubernetes for bob").await;
    say(&h, "bob", &other_user, "kubernetes kubernetes kubernetes").await;

    let (status, body) = h.get("alice", "/api/sessions/search?q=kubernetes").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), [strong.clone(), weak.clone()], "{body}");
    assert_eq!(body["pagination"]["total"], 2);
    let scores: Vec<f64> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["score"].as_f64().unwrap_or(0.0))
        .collect();
    assert!(scores[0] > scores[1] && scores[1] > 0.0, "{scores:?}");
    assert!(
        body["data"][0]["snippet"]
            .as_str()
            .is_some_and(|s| s.to_lowercase().contains("kubernetes"))
    );

    let (_, page2) = h
        .get(
            "alice",
            "/api/sessions/search?q=kubernetes&limit=1&offset=1",
        )
        .await;
    assert_eq!(ids(&page2), [weak]);
    assert_eq!(page2["pagination"]["has_more"], false);
    // All words must match; punctuation is not query syntax.
    let (_, both) = h
        .get("alice", "/api/sessions/search?q=kubernetes%20finalizers")
        .await;
    assert_eq!(ids(&both), [strong]);
    // A host, a path or a version is found as written (Postgres indexes each as one
    // word).
    let links = create(&h, "alice", "Links").await;
    say(
        &h,
        "alice",
        &links,
        "the guide is at example.com/guide, v1.30",
    )
    .await;
    for query in ["example.com", "v1.30"] {
        let (_, found) = h
            .get("alice", &format!("/api/sessions/search?q={query}"))
            .await;
        assert_eq!(
            ids(&found),
            std::slice::from_ref(&links),
            "{query}: {found}"
        );
    }
    // Web-search syntax is not read on either backend: `-word` is the word,
    // `or` a word that must be there too.
    let (_, minus) = h.get("alice", "/api/sessions/search?q=-zzzqx").await;
    assert_eq!(minus["data"], serde_json::json!([]), "{minus}");
    let (_, either) = h
        .get("alice", "/api/sessions/search?q=kubernetes%20or%20zzzqx")
        .await;
    assert_eq!(either["data"], serde_json::json!([]), "{either}");
    let (status, odd) = h
        .get("alice", "/api/sessions/search?q=%22%28*%20OR%20-")
        .await;
    assert_eq!(status, 200, "{odd}");
    for path in [
        "/api/sessions/search?q=%20",
        "/api/sessions/search",
        "/api/sessions/search?q=a%00b",
    ] {
        let refused = h.get("alice", path).await;
        assert_error(&refused, 400, "invalid_query");
        assert_eq!(refused.1["error"]["param"], "q", "{path}: {}", refused.1);
    }
}

/// Chinese, Japanese, Korean and Thai write words without spaces between them (or
/// with particles attached): a word is found inside the run of text that holds it,
/// in a message or a title, alone or with spaced words.
async fn search_finds_words_of_scripts_written_without_spaces(db: Db) {
    let h = Harness::start(db).await;
    let chinese = create(&h, "alice", "数据库迁移").await;
    say(
        &h,
        "alice",
        &chinese,
        "我们讨论了Kubernetes集群的数据库迁移问题",
    )
    .await;
    let japanese = create(&h, "alice", "Meeting").await;
    say(&h, "alice", &japanese, "明日は東京で会議があります").await;
    let korean = create(&h, "alice", "Trip").await;
    say(&h, "alice", &korean, "서울에서 만나요").await;
    let thai = create(&h, "alice", "Thai").await;
    say(&h, "alice", &thai, "ผมชอบภาษาไทยมาก").await;
    let other_user = create(&h, "bob", "数据库").await;
    say(&h, "bob", &other_user, "数据库 东京").await;

    for (query, expected) in [
        ("数据库", vec![chinese.clone()]),
        ("東京", vec![japanese.clone()]),
        ("서울", vec![korean.clone()]),
        ("ภาษาไทย", vec![thai.clone()]),
        // Every word required, spaced words through the index alike.
        ("kubernetes 集群", vec![chinese.clone()]),
        ("kubernetes 東京", vec![]),
        ("集群 东京", vec![]),
    ] {
        // Percent-encoded by the client.
        let path = format!("/api/sessions/search?q={query}");
        let (status, body) = h.get("alice", &path).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body), expected, "{query}: {body}");
        assert_eq!(body["pagination"]["total"], expected.len(), "{query}");
    }
    // A title hit counts double, as for spaced words; the snippet is the best hit.
    let (_, found) = h.get("alice", "/api/sessions/search?q=数据库迁移").await;
    assert_eq!(ids(&found), [chinese], "{found}");
    // The title 2, the message and the mock's echo of it 1 each.
    assert_eq!(found["data"][0]["score"], 4.0, "{found}");
    assert_eq!(found["data"][0]["snippet"], "数据库迁移", "{found}");
}

async fn posting_messages_streams_and_keeps_history(db: Db) {
    let h = Harness::start(db).await;
    let id = create(&h, "alice", "Chat").await;
    let turn = say(&h, "alice", &id, "what is two plus two").await;
    assert_eq!(turn["user_message"]["role"], "user");
    assert_eq!(
        turn["assistant_message"]["content"],
        "Echo: what is two plus two"
    );
    assert_eq!(
        turn["assistant_message"]["parent_id"],
        turn["user_message"]["id"]
    );

    let (status, text) = h
        .stream_text(
            h.as_user(
                Method::POST,
                &format!("/api/sessions/{id}/messages"),
                "alice",
            )
            .json(&json!({"content": "and three", "stream": true})),
        )
        .await;
    assert_eq!(status, 200);
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let streamed = streamed_text(&text);
    assert_eq!(streamed, "Echo: and three");

    // The model saw the earlier turn.
    let sent = h.mock.requests().pop().expect("called");
    assert_eq!(
        sent.body["messages"].as_array().map(Vec::len),
        Some(4),
        "{}",
        sent.body
    );

    let (_, history) = h.get("alice", &format!("/api/sessions/{id}/history")).await;
    assert_eq!(
        history["messages"],
        json!([
            {"role": "user", "content": "what is two plus two"},
            {"role": "assistant", "content": "Echo: what is two plus two"},
            {"role": "user", "content": "and three"},
            {"role": "assistant", "content": "Echo: and three"}
        ])
    );
    let (_, page) = h
        .get("alice", &format!("/api/sessions/{id}/messages?limit=3"))
        .await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(3));
    assert_eq!(page["pagination"]["total"], 4);
    assert_eq!(page["pagination"]["has_more"], true);

    let (_, summaries) = h.get("alice", "/api/sessions/summaries").await;
    assert_eq!(summaries["data"][0]["id"], id.as_str());
    assert_eq!(
        summaries["data"][0]["last_message"]["content"],
        "Echo: and three"
    );

    let (_, stats) = h.get("alice", "/api/stats").await;
    assert_eq!(stats["sessions"], 1);
    assert_eq!(stats["messages"], 4);
    assert_eq!(stats["user_messages"], 2);
    assert_eq!(stats["assistant_messages"], 2);
    assert!(stats["tokens_out"].as_i64().is_some_and(|n| n > 0));
    let (_, bob_stats) = h.get("bob", "/api/stats").await;
    assert_eq!(bob_stats["sessions"], 0);
}

async fn users_never_see_each_others_sessions(db: Db) {
    let h = Harness::start(db).await;
    let id = create(&h, "alice", "private").await;
    say(&h, "alice", &id, "my secret").await;
    for path in [
        format!("/api/sessions/{id}"),
        format!("/api/sessions/{id}/messages"),
        format!("/api/sessions/{id}/history"),
    ] {
        assert_error(&h.get("mallory", &path).await, 404, "session_not_found");
    }
    for action in ["archive", "unarchive", "pin", "unpin"] {
        assert_error(
            &h.post(
                "mallory",
                &format!("/api/sessions/{id}/{action}"),
                json!({}),
            )
            .await,
            404,
            "session_not_found",
        );
    }
    assert_error(
        &h.post(
            "mallory",
            &format!("/api/sessions/{id}/messages"),
            json!({"content": "hi"}),
        )
        .await,
        404,
        "session_not_found",
    );
    assert_error(
        &h.json(h.as_user(Method::DELETE, &format!("/api/sessions/{id}"), "mallory"))
            .await,
        404,
        "session_not_found",
    );
    let (_, list) = h.get("mallory", "/api/sessions").await;
    assert_eq!(list["pagination"]["total"], 0);
    let (_, found) = h.get("mallory", "/api/sessions/search?q=secret").await;
    assert_eq!(found["pagination"]["total"], 0);
    // Alice's session is untouched.
    let (status, s) = h.get("alice", &format!("/api/sessions/{id}")).await;
    assert_eq!(
        (status, s["status"].as_str(), s["message_count"].as_i64()),
        (200, Some("active"), Some(2))
    );
}

on_both_databases!(
    session_lifecycle,
    listing_filters_sorts_and_paginates,
    search_is_ranked_and_paginated,
    search_finds_words_of_scripts_written_without_spaces,
    posting_messages_streams_and_keeps_history,
    users_never_see_each_others_sessions,
);
