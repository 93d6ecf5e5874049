//! Live sync across replicas: two runtime processes (the real binary) on one
//! Postgres database. A visitor's page listens on pod B; changes to the
//! visitor's sessions made on pod A, by the page itself or through the API
//! with the tenant's key (new session, rename, pin, new message, delete),
//! reach it through the database's NOTIFY/LISTEN.

mod common;

use std::time::Duration;

use common::{API_KEY, RuntimeProcess, next_event};
use futures::StreamExt as _;
use serde_json::{Value, json};
use switchboard_tests::database::{TestDatabase, admin_url};
use switchboard_tests::mock_llm::MockLlm;

/// The page's cookies and CSRF token, as a browser holds them.
struct Visitor {
    cookie: String,
    csrf: String,
}

impl Visitor {
    async fn arrive(client: &reqwest::Client, base: &str) -> Self {
        let response = client
            .get(format!("{base}/channels/web/"))
            .send()
            .await
            .expect("page");
        assert_eq!(response.status(), 200);
        let mut pairs = Vec::new();
        let mut csrf = String::new();
        for cookie in response.headers().get_all("set-cookie") {
            let pair = cookie
                .to_str()
                .expect("cookie text")
                .split(';')
                .next()
                .expect("pair")
                .to_owned();
            if let Some(token) = pair.strip_prefix("switchboard_csrf=") {
                csrf = token.to_owned();
            }
            pairs.push(pair);
        }
        Self {
            cookie: pairs.join("; "),
            csrf,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_pod_reach_pages_listening_on_another() {
    let mock = MockLlm::start().await.expect("mock starts");
    let db = TestDatabase::create_on(&admin_url()).await;
    let config = format!(
        "agent: {{name: live}}\n\
         model: {{provider: openai, name: mock-gpt, baseUrl: \"{}\", apiKeyEnv: UPSTREAM_KEY, timeoutSeconds: 10}}\n\
         database: {{urlEnv: DATABASE_URL}}\n\
         defaultChannel: web\n\
         channels:\n- {{name: web, type: web}}\n",
        mock.openai_base_url()
    );
    let env = [("UPSTREAM_KEY", "sk-upstream"), ("DATABASE_URL", db.url())];
    let a = RuntimeProcess::spawn(&config, &env).await;
    let b = RuntimeProcess::spawn(&config, &env).await;
    let client = reqwest::Client::new();

    // The visitor's page is served by pod A; its event stream by pod B (the
    // cookie is signed with a key both pods derive from the tenant's key).
    let visitor = Visitor::arrive(&client, &a.base).await;
    let events = client
        .get(format!("{}/channels/web/api/events", b.base))
        .header("cookie", &visitor.cookie)
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), 200);
    let (mut stream, mut buffer) = (events.bytes_stream(), String::new());
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("first bytes")
        .expect("open")
        .expect("chunk");
    buffer.push_str(std::str::from_utf8(&first).expect("utf-8"));
    assert!(buffer.starts_with("retry: 2000\n"), "{buffer}");

    // The page creates a session on pod A.
    let response = client
        .post(format!("{}/channels/web/api/sessions", a.base))
        .header("cookie", &visitor.cookie)
        .header("x-csrf-token", &visitor.csrf)
        .json(&json!({}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201);
    let session: Value = response.json().await.expect("session");
    let id = session["id"].as_str().expect("id").to_owned();
    let user = session["user"].as_str().expect("user").to_owned();
    assert!(user.starts_with("visitor:"), "{session}");
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        json!({"type": "session.created", "session_id": id})
    );

    // Changes through the API with the tenant's key, for the visitor's user, on pod A.
    let api = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{}{path}", a.base))
            .bearer_auth(API_KEY)
            .header("x-switchboard-user", &user)
    };
    let renamed = api(reqwest::Method::PATCH, &format!("/api/sessions/{id}"))
        .json(&json!({"title": "renamed elsewhere"}))
        .send()
        .await
        .expect("rename");
    assert_eq!(renamed.status(), 200);
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        json!({"type": "session.updated", "session_id": id})
    );
    let pinned = api(reqwest::Method::POST, &format!("/api/sessions/{id}/pin"))
        .send()
        .await
        .expect("pin");
    assert_eq!(pinned.status(), 200);
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        json!({"type": "session.updated", "session_id": id})
    );
    let message = api(
        reqwest::Method::POST,
        &format!("/api/sessions/{id}/messages"),
    )
    .json(&json!({"content": "hello from the API"}))
    .send()
    .await
    .expect("message");
    assert_eq!(message.status(), 201);
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        json!({"type": "message.created", "session_id": id})
    );
    let created = api(reqwest::Method::POST, "/api/sessions")
        .json(&json!({"title": "made by the API"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let other: Value = created.json().await.expect("session");
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        json!({"type": "session.created", "session_id": other["id"]})
    );
    // The OpenAI API's `user` field names the user too.
    let chat = client
        .post(format!("{}/v1/chat/completions", a.base))
        .bearer_auth(API_KEY)
        .header("x-conversation-id", "from-openai")
        .json(&json!({"user": user, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat");
    assert_eq!(chat.status(), 200);
    let chat_session = chat.headers()["x-session-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        json!({"type": "message.created", "session_id": chat_session})
    );
    let deleted = api(reqwest::Method::DELETE, &format!("/api/sessions/{id}"))
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success());
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        json!({"type": "session.deleted", "session_id": id})
    );

    // Another user's change is not this visitor's business; the API key does
    // not open the stream.
    let status = client
        .post(format!("{}/api/sessions", a.base))
        .bearer_auth(API_KEY)
        .header("x-switchboard-user", "someone-else")
        .json(&json!({}))
        .send()
        .await
        .expect("create")
        .status();
    assert_eq!(status, 201);
    let with_key = client
        .get(format!("{}/channels/web/api/events", b.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("events");
    assert_eq!(with_key.status(), 404);
    let body: Value = with_key.json().await.expect("json");
    assert_eq!(body["error"]["code"], "events_not_served");
    // The visitor's own next change is the next event seen (the other user's
    // was skipped).
    let pinned = api(
        reqwest::Method::POST,
        &format!("/api/sessions/{}/pin", other["id"].as_str().expect("id")),
    )
    .send()
    .await
    .expect("pin");
    assert_eq!(pinned.status(), 200);
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        json!({"type": "session.updated", "session_id": other["id"]})
    );
}
