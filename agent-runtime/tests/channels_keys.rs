//! Keys and users: a channel with a key of its own (`clientKey: Channel`) is
//! opened by that key alone, and only on its own routes; the agent key opens the
//! default channel and the channels without one; admin routes need the admin
//! key. Users named through a channel's own key are that channel's: another key
//! cannot read their sessions. Keys are files re-read while serving: a rotated
//! key works at once and the one it replaced keeps working for the grace period.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_KEY, API_KEY, Db, Harness, TempDir};
use crds::runtime_config::{ChannelConfig, ChannelType, ClientKeyMode};
use reqwest::Method;
use serde_json::{Value, json};

const PARTNERS_KEY: &str = "partners-key-1";
const VENDORS_KEY: &str = "vendors-key-1";

struct World {
    h: Harness,
    keys: TempDir,
}

async fn start(db: Db, grace_seconds: u64) -> World {
    let keys = TempDir::new();
    std::fs::write(keys.0.join("channel.partners"), PARTNERS_KEY).expect("write key");
    std::fs::write(keys.0.join("channel.vendors"), format!("{VENDORS_KEY}\n")).expect("write key");
    let dir = keys.0.display().to_string();
    let h = Harness::start_with(db, move |config, _| {
        config.auth.keys_dir = Some(dir);
        config.auth.keys_reload_seconds = 1;
        config.auth.key_rotation_grace_seconds = grace_seconds;
        let own = |name: &str| ChannelConfig {
            name: name.into(),
            channel_type: ChannelType::Openai,
            client_key: ClientKeyMode::Channel,
            ..ChannelConfig::default()
        };
        config.channels = vec![
            own("partners"),
            own("vendors"),
            ChannelConfig {
                name: "web".into(),
                ..ChannelConfig::default()
            },
            common::trusted_header_channel("staff"),
        ];
        config.default_channel = Some("web".into());
    })
    .await;
    World { h, keys }
}

impl World {
    fn request(
        &self,
        method: Method,
        path: &str,
        key: &str,
        user: &str,
    ) -> reqwest::RequestBuilder {
        self.h
            .client
            .request(method, self.h.url(path))
            .bearer_auth(key)
            .header("x-switchboard-user", user)
    }

    async fn status(&self, method: Method, path: &str, key: &str) -> u16 {
        let body = json!({"messages": [{"role": "user", "content": "hi"}]});
        self.h
            .json(self.request(method, path, key, "alice").json(&body))
            .await
            .0
    }

    async fn chat(&self, path: &str, key: &str, user: &str, text: &str) -> Value {
        let body = json!({"messages": [{"role": "user", "content": text}]});
        let (status, body) = self
            .h
            .json(self.request(Method::POST, path, key, user).json(&body))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn sessions(&self, path: &str, key: &str, user: &str) -> Vec<Value> {
        let (status, body) = self
            .h
            .json(self.request(Method::GET, path, key, user))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }
}

async fn each_key_opens_only_its_own_routes(db: Db) {
    let w = start(db, 60).await;
    let chat = "/v1/chat/completions";
    let cases = [
        // (path, key, expected)
        ("/channels/partners/v1/chat/completions", PARTNERS_KEY, 200),
        ("/channels/vendors/v1/chat/completions", PARTNERS_KEY, 401),
        ("/channels/web/v1/chat/completions", PARTNERS_KEY, 401),
        (chat, PARTNERS_KEY, 401),
        ("/channels/partners/v1/chat/completions", API_KEY, 401),
        ("/channels/vendors/v1/chat/completions", VENDORS_KEY, 200),
        (chat, API_KEY, 200),
        ("/channels/web/v1/chat/completions", API_KEY, 200),
        // The admin key opens the admin routes and nothing else.
        (chat, ADMIN_KEY, 401),
        ("/channels/partners/v1/chat/completions", ADMIN_KEY, 401),
    ];
    for (path, key, expected) in cases {
        assert_eq!(
            w.status(Method::POST, path, key).await,
            expected,
            "POST {path} with {key}"
        );
    }
    // Naming the channel by header on the root routes needs that channel's key.
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    for (key, expected) in [(PARTNERS_KEY, 200), (API_KEY, 401)] {
        let (status, _) =
            w.h.json(
                w.request(Method::POST, chat, key, "alice")
                    .header("x-switchboard-channel", "partners")
                    .json(&body),
            )
            .await;
        assert_eq!(status, expected, "header channel with {key}");
    }
    // Every admin route: the admin key is let through (to the route's own
    // answer), the client key and the channel keys are refused.
    let admin_routes = [
        (Method::GET, "/api/admin/failures", 200),
        (Method::GET, "/api/admin/conversations", 200),
        (Method::GET, "/api/admin/conversations/some-id", 404),
        (Method::GET, "/api/admin/stats", 200),
        (Method::GET, "/api/admin/channels", 200),
        (Method::GET, "/api/admin/outbox", 200),
        (Method::POST, "/api/admin/outbox/some-id/retry", 404),
    ];
    for (method, path, admitted) in admin_routes {
        for (key, expected) in [
            (ADMIN_KEY, admitted),
            (API_KEY, 401),
            (PARTNERS_KEY, 401),
            (VENDORS_KEY, 401),
        ] {
            let (status, body) =
                w.h.json(
                    w.h.client
                        .request(method.clone(), w.h.url(path))
                        .bearer_auth(key),
                )
                .await;
            assert_eq!(status, expected, "{method} {path} with {key}: {body}");
            assert!(body["error"]["code"].is_string() || status == 200, "{body}");
        }
        // Naming a channel does not help a channel's key in.
        let (status, _) =
            w.h.json(
                w.h.client
                    .request(method.clone(), w.h.url(path))
                    .bearer_auth(PARTNERS_KEY)
                    .header("x-switchboard-channel", "partners"),
            )
            .await;
        assert_eq!(
            status, 401,
            "{method} {path} with the partners key and channel"
        );
    }
    // Nor does a channel's own path.
    for path in [
        "/channels/partners/api/admin/stats",
        "/channels/web/api/admin/conversations",
    ] {
        for key in [API_KEY, PARTNERS_KEY] {
            let (status, body) =
                w.h.json(w.h.client.get(w.h.url(path)).bearer_auth(key))
                    .await;
            assert_eq!(status, 401, "{path} with {key}: {body}");
        }
    }
}

async fn one_channels_key_cannot_read_another_channels_sessions(db: Db) {
    let w = start(db, 60).await;
    w.chat(
        "/channels/partners/v1/chat/completions",
        PARTNERS_KEY,
        "alice",
        "partner secret plans",
    )
    .await;
    let mine = w
        .sessions("/channels/partners/api/sessions", PARTNERS_KEY, "alice")
        .await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(
        mine[0]["user"], "alice",
        "shown as the channel named the user"
    );
    let id = mine[0]["id"].as_str().expect("id").to_owned();
    // Another channel's key naming the same user sees nothing of it.
    assert!(
        w.sessions("/channels/vendors/api/sessions", VENDORS_KEY, "alice")
            .await
            .is_empty()
    );
    // Nor does the agent key, on the root or any channel it opens.
    for path in ["/api/sessions", "/channels/web/api/sessions"] {
        assert!(
            w.sessions(path, API_KEY, "alice").await.is_empty(),
            "{path}"
        );
    }
    for (path, key) in [
        (format!("/channels/vendors/api/sessions/{id}"), VENDORS_KEY),
        (format!("/api/sessions/{id}"), API_KEY),
        (
            format!("/channels/vendors/api/sessions/{id}/messages"),
            VENDORS_KEY,
        ),
    ] {
        assert_eq!(w.status(Method::GET, &path, key).await, 404, "{path}");
    }
    let (status, body) =
        w.h.json(w.request(
            Method::GET,
            "/channels/vendors/api/sessions/search?q=secret",
            VENDORS_KEY,
            "alice",
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().map(Vec::len), Some(0), "{body}");
    // The agent key's own users are apart from the channel's too.
    w.chat("/v1/chat/completions", API_KEY, "alice", "root chat")
        .await;
    assert_eq!(
        w.sessions("/channels/partners/api/sessions", PARTNERS_KEY, "alice")
            .await
            .len(),
        1
    );
    // The admin sees both alices, each under her channel and as she was named.
    let (status, page) = w.h.admin_get("/api/admin/conversations?user=alice").await;
    assert_eq!(status, 200, "{page}");
    let mut seen: Vec<(String, String)> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| (c["channel"].to_string(), c["user"].to_string()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("\"partners\"".to_owned(), "\"alice\"".to_owned()),
            ("\"web\"".to_owned(), "\"alice\"".to_owned()),
        ],
        "{page}"
    );
    let (_, partners) =
        w.h.admin_get("/api/admin/conversations?user=alice&channel=partners")
            .await;
    assert_eq!(partners["data"][0]["id"], id.as_str(), "{partners}");
}

/// Polls `check` until it holds (the reloader runs every second).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_rotated_key_works_at_once_and_the_old_one_until_the_grace_ends(db: Db) {
    let w = start(db, 3).await;
    let route = "/channels/partners/v1/models";
    assert_eq!(w.status(Method::GET, route, PARTNERS_KEY).await, 200);
    // Kubernetes swaps a mounted Secret's files atomically: write, then rename.
    let staged = w.keys.0.join(".staged");
    std::fs::write(&staged, "partners-key-2").expect("write");
    std::fs::rename(&staged, w.keys.0.join("channel.partners")).expect("rename");
    eventually("the new key to be read", async || {
        w.status(Method::GET, route, "partners-key-2").await == 200
    })
    .await;
    let rotated_at = Instant::now();
    assert_eq!(
        w.status(Method::GET, route, PARTNERS_KEY).await,
        200,
        "the old key still works during the grace period"
    );
    eventually("the old key to expire", async || {
        w.status(Method::GET, route, PARTNERS_KEY).await == 401
    })
    .await;
    assert!(
        rotated_at.elapsed() >= Duration::from_secs(1),
        "the old key lasted into its grace period"
    );
    assert_eq!(w.status(Method::GET, route, "partners-key-2").await, 200);
    // The agent key and the other channel were never disturbed.
    assert_eq!(w.status(Method::GET, "/v1/models", API_KEY).await, 200);
    assert_eq!(
        w.status(Method::GET, "/channels/vendors/v1/models", VENDORS_KEY)
            .await,
        200
    );
}

/// The page's live-sync stream carries its own user's changes only: a
/// partner's "alice" (a user of a channel opened by its own key) is not the
/// staff page's "alice", so her chat is not announced there; the agent key's
/// "alice" is the same person, and hers is.
async fn live_sync_keeps_a_channels_own_users_apart(db: Db) {
    let w = start(db, 30).await;
    let page =
        w.h.client
            .get(w.h.url("/channels/staff/api/events"))
            .header("x-forwarded-user", "alice")
            .send()
            .await
            .expect("events");
    assert_eq!(page.status(), 200);
    let mut stream = page.bytes_stream();
    let chat = |path: &str, key: &str| {
        w.request(Method::POST, path, key, "alice")
            .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let partner = chat("/channels/partners/v1/chat/completions", PARTNERS_KEY)
        .await
        .expect("sent");
    assert_eq!(partner.status(), 200);
    let own = chat("/v1/chat/completions", API_KEY).await.expect("sent");
    assert_eq!(own.status(), 200);
    let session = own.headers()["x-session-id"]
        .to_str()
        .expect("text")
        .to_owned();
    let event = common::next_event(&mut stream, &mut String::new()).await;
    assert_eq!(
        event,
        json!({"type": "message.created", "session_id": session}),
        "the first event is the agent key's alice's, not the partner's"
    );
}

on_both_databases!(
    live_sync_keeps_a_channels_own_users_apart,
    each_key_opens_only_its_own_routes,
    one_channels_key_cannot_read_another_channels_sessions,
    a_rotated_key_works_at_once_and_the_old_one_until_the_grace_ends,
);
