//! The mocks against the platforms' documented examples, driven by plain websocket and
//! HTTP clients: what a correct bot sends gets the documented answers, and every
//! injected fault shows up on the wire as documented.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mock_chatapps::discord::{DiscordMock, GatewayFault, RateLimitFault};
use mock_chatapps::slack::{self, EventsSender, SlackMock};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// JSON bodies without reqwest's `json` feature (not enabled in the workspace).
trait JsonBody {
    fn json_body(self, v: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }
}

trait JsonValue {
    async fn json_value(self) -> reqwest::Result<Value>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> reqwest::Result<Value> {
        Ok(serde_json::from_str(&self.text().await?).expect("a JSON body"))
    }
}

const TOKEN: &str = "mock-bot-token";
const APP: &str = "1100000000000000000";
const WAIT: Duration = Duration::from_secs(10);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("{url}/?v=10&encoding=json"))
        .await
        .expect("gateway accepts")
        .0
}

/// Next JSON payload (skipping pings); `None` when the connection ends.
async fn recv(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")?
        {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("JSON")),
            Ok(Message::Close(frame)) => {
                return Some(json!({"close": frame.map(|f| u16::from(f.code))}));
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

fn identify(token: &str) -> Value {
    json!({"op": 2, "d": {"token": token, "intents": 37376, "properties": {"os": "linux", "browser": "test", "device": "test"}}})
}

#[tokio::test]
async fn gateway_hello_identify_heartbeat_and_dispatches() {
    let mock = DiscordMock::start(TOKEN, APP, Duration::from_millis(45_000))
        .await
        .unwrap();
    let mut ws = connect(&mock.gateway_url()).await;
    // Hello, as in the docs: {"op":10,"d":{"heartbeat_interval":45000}}.
    let hello = recv(&mut ws).await.unwrap();
    assert_eq!(hello["op"], 10);
    assert_eq!(hello["d"]["heartbeat_interval"], 45_000);

    send(&mut ws, json!({"op": 1, "d": null})).await;
    assert_eq!(recv(&mut ws).await.unwrap()["op"], 11);

    send(&mut ws, identify(TOKEN)).await;
    let ready = recv(&mut ws).await.unwrap();
    assert_eq!(
        (
            ready["op"].as_u64(),
            ready["t"].as_str(),
            ready["s"].as_u64()
        ),
        (Some(0), Some("READY"), Some(1))
    );
    assert_eq!(ready["d"]["v"], 10);
    assert_eq!(ready["d"]["resume_gateway_url"], mock.gateway_url());
    assert!(
        ready["d"]["session_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(ready["d"]["application"]["id"], APP);

    let id = mock
        .user_message(
            Some("1000000000000000001"),
            "1000000000000000002",
            "hello bot",
            true,
        )
        .unwrap();
    let created = recv(&mut ws).await.unwrap();
    assert_eq!(
        (created["t"].as_str(), created["s"].as_u64()),
        (Some("MESSAGE_CREATE"), Some(2))
    );
    assert_eq!(created["d"]["id"], id.as_str());
    assert_eq!(created["d"]["content"], "hello bot");
    assert_eq!(created["d"]["guild_id"], "1000000000000000001");
    assert_eq!(
        created["d"]["mentions"][0]["id"],
        mock_chatapps::discord::BOT_USER_ID
    );
    assert_eq!(mock.gateway_counts().heartbeats, 1);
}

#[tokio::test]
async fn gateway_refuses_a_wrong_token_with_4004() {
    let mock = DiscordMock::start(TOKEN, APP, Duration::from_secs(45))
        .await
        .unwrap();
    let mut ws = connect(&mock.gateway_url()).await;
    recv(&mut ws).await.unwrap();
    send(&mut ws, identify("wrong")).await;
    assert_eq!(recv(&mut ws).await.unwrap()["close"], 4004);
}

#[tokio::test]
async fn resume_after_a_drop_replays_missed_dispatches_then_resumed() {
    let mock = DiscordMock::start(TOKEN, APP, Duration::from_secs(45))
        .await
        .unwrap();
    let mut ws = connect(&mock.gateway_url()).await;
    recv(&mut ws).await.unwrap();
    send(&mut ws, identify(TOKEN)).await;
    let ready = recv(&mut ws).await.unwrap();
    let session = ready["d"]["session_id"].as_str().unwrap().to_owned();

    mock.gateway_fault(GatewayFault::Drop).unwrap();
    assert!(recv(&mut ws).await.is_none_or(|v| v.get("close").is_some()));
    // Sent while the bot is away: kept for the resume.
    let missed = mock
        .user_message(None, "1000000000000000003", "while you were away", false)
        .unwrap();

    let mut ws = connect(ready["d"]["resume_gateway_url"].as_str().unwrap()).await;
    recv(&mut ws).await.unwrap();
    send(
        &mut ws,
        json!({"op": 6, "d": {"token": TOKEN, "session_id": session, "seq": 1}}),
    )
    .await;
    let replayed = recv(&mut ws).await.unwrap();
    assert_eq!(
        (replayed["t"].as_str(), replayed["s"].as_u64()),
        (Some("MESSAGE_CREATE"), Some(2))
    );
    assert_eq!(replayed["d"]["id"], missed.as_str());
    let resumed = recv(&mut ws).await.unwrap();
    assert_eq!(resumed["t"], "RESUMED");
    assert_eq!(mock.gateway_counts().resumes, 1);

    // Live again: dispatches continue the session's sequence.
    mock.user_message(None, "1000000000000000003", "back", false)
        .unwrap();
    let m = recv(&mut ws).await.unwrap();
    assert_eq!(m["t"], "MESSAGE_CREATE");
    assert_eq!(m["s"].as_u64(), Some(resumed["s"].as_u64().unwrap() + 1));
}

#[tokio::test]
async fn reconnect_op7_then_resume_replays_what_the_client_did_not_see() {
    let mock = DiscordMock::start(TOKEN, APP, Duration::from_secs(45))
        .await
        .unwrap();
    let mut ws = connect(&mock.gateway_url()).await;
    recv(&mut ws).await.unwrap();
    send(&mut ws, identify(TOKEN)).await;
    let ready = recv(&mut ws).await.unwrap();
    let session = ready["d"]["session_id"].as_str().unwrap().to_owned();
    mock.user_message(None, "1000000000000000003", "first", false)
        .unwrap();
    mock.gateway_fault(GatewayFault::Reconnect).unwrap();
    // The client saw READY (s=1) only: the first message arrives, then op 7.
    assert_eq!(recv(&mut ws).await.unwrap()["t"], "MESSAGE_CREATE");
    assert_eq!(recv(&mut ws).await.unwrap()["op"], 7);
    ws.close(None).await.ok();

    let mut ws = connect(&mock.gateway_url()).await;
    recv(&mut ws).await.unwrap();
    // Resume from s=1 as if the first message was lost: it is replayed.
    send(
        &mut ws,
        json!({"op": 6, "d": {"token": TOKEN, "session_id": session, "seq": 1}}),
    )
    .await;
    let replayed = recv(&mut ws).await.unwrap();
    assert_eq!(
        (replayed["t"].as_str(), replayed["s"].as_u64()),
        (Some("MESSAGE_CREATE"), Some(2))
    );
    assert_eq!(recv(&mut ws).await.unwrap()["t"], "RESUMED");
}

#[tokio::test]
async fn invalid_session_false_forgets_the_session() {
    let mock = DiscordMock::start(TOKEN, APP, Duration::from_secs(45))
        .await
        .unwrap();
    let mut ws = connect(&mock.gateway_url()).await;
    recv(&mut ws).await.unwrap();
    send(&mut ws, identify(TOKEN)).await;
    let session = recv(&mut ws).await.unwrap()["d"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    mock.gateway_fault(GatewayFault::InvalidSession { resumable: true })
        .unwrap();
    let op9 = recv(&mut ws).await.unwrap();
    assert_eq!(
        (op9["op"].as_u64(), op9["d"].as_bool()),
        (Some(9), Some(true))
    );

    mock.gateway_fault(GatewayFault::InvalidSession { resumable: false })
        .unwrap();
    let op9 = recv(&mut ws).await.unwrap();
    assert_eq!(
        (op9["op"].as_u64(), op9["d"].as_bool()),
        (Some(9), Some(false))
    );
    // A resume of the forgotten session is answered with op 9 d=false.
    send(
        &mut ws,
        json!({"op": 6, "d": {"token": TOKEN, "session_id": session, "seq": 1}}),
    )
    .await;
    let op9 = recv(&mut ws).await.unwrap();
    assert_eq!(
        (op9["op"].as_u64(), op9["d"].as_bool()),
        (Some(9), Some(false))
    );
    // Identify works again.
    send(&mut ws, identify(TOKEN)).await;
    assert_eq!(recv(&mut ws).await.unwrap()["t"], "READY");
    assert_eq!(mock.gateway_counts().identifies, 2);
}

#[tokio::test]
async fn close_code_fault_and_outage() {
    let mock = DiscordMock::start(TOKEN, APP, Duration::from_secs(45))
        .await
        .unwrap();
    let mut ws = connect(&mock.gateway_url()).await;
    recv(&mut ws).await.unwrap();
    send(&mut ws, identify(TOKEN)).await;
    recv(&mut ws).await.unwrap();
    mock.gateway_fault(GatewayFault::Close(4000)).unwrap();
    assert_eq!(recv(&mut ws).await.unwrap()["close"], 4000);

    mock.outage(Duration::from_secs(30));
    assert!(
        tokio_tungstenite::connect_async(mock.gateway_url())
            .await
            .is_err(),
        "the gateway refuses connections during an outage"
    );
    let status = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v10/channels/1000000000000000002/messages",
            mock.rest_addr()
        ))
        .header("authorization", format!("Bot {TOKEN}"))
        .json_body(&json!({"content": "x"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 503);
}

#[tokio::test]
async fn rest_create_message_rate_limits_typing_and_interactions() {
    let mock = DiscordMock::start(TOKEN, APP, Duration::from_secs(45))
        .await
        .unwrap();
    let base = format!("http://{}/api/v10", mock.rest_addr());
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .header("authorization", format!("Bot {TOKEN}"))
            .json_body(&body)
            .send()
    };
    let route = "POST /channels/{id}/messages";
    mock.rate_limit(
        route,
        RateLimitFault {
            retry_after: 0.25,
            global: false,
        },
    );
    let r = post(
        "/channels/1000000000000000002/messages",
        json!({"content": "hi"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(r.headers()["x-ratelimit-scope"], "user");
    assert!(r.headers().contains_key("x-ratelimit-bucket"));
    let body: Value = r.json_value().await.unwrap();
    assert_eq!(
        body,
        json!({"message": "You are being rate limited.", "retry_after": 0.25, "global": false})
    );

    mock.rate_limit(
        route,
        RateLimitFault {
            retry_after: 1.0,
            global: true,
        },
    );
    let r = post(
        "/channels/1000000000000000002/messages",
        json!({"content": "hi"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-global"], "true");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.json_value().await.unwrap()["global"], true);

    let r = post(
        "/channels/1000000000000000002/messages",
        json!({"content": "answer", "message_reference": {"message_id": "1200000000000000009"}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit"], "5");
    let m: Value = r.json_value().await.unwrap();
    assert_eq!(m["message_reference"]["message_id"], "1200000000000000009");
    let posts = mock.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].reply_to.as_deref(), Some("1200000000000000009"));

    // Discord refuses content over 2,000 characters.
    let r = post(
        "/channels/1000000000000000002/messages",
        json!({"content": "x".repeat(2001)}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    let r = post("/channels/1000000000000000002/typing", json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(mock.typing(), vec!["1000000000000000002".to_owned()]);

    // Deferred interaction answer, then the follow-up webhook.
    let r = http
        .post(format!(
            "{base}/interactions/1200000000000000100/itoken/callback"
        ))
        .json_body(&json!({"type": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .post(format!("{base}/webhooks/{APP}/itoken?wait=true"))
        .json_body(&json!({"content": "the answer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.interaction_callbacks()[0].1["type"], 5);
    assert_eq!(mock.followups()[0].1["content"], "the answer");

    let r = http
        .post(format!("{base}/channels/1/messages"))
        .json_body(&json!({"content": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the bot token is required");
}

#[test]
fn slack_v0_signature_matches_the_docs_example() {
    // https://api.slack.com/authentication/verifying-requests-from-slack
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    assert_eq!(
        slack::sign_v0("8f742231b10e8888abcd99yyyzzz85a5", 1_531_420_618, body),
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    );
}

/// A stand-in app endpoint that records what the sender delivers.
async fn recording_app() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, String)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/slack/events",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                let _ = tx.send((headers, body));
                match v["challenge"].as_str() {
                    Some(c) => c.to_owned(),
                    None => String::new(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/slack/events"), rx)
}

#[tokio::test]
async fn slack_events_are_signed_and_retried_with_headers() {
    let secret = "signing-secret";
    let (url, mut seen) = recording_app().await;
    let sender = EventsSender::new(&url, secret);

    let d = sender
        .url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
        .await;
    assert_eq!(
        d.body,
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    seen.recv().await.unwrap();

    let event = slack::app_mention(
        "T0MOCK0001",
        "C0MOCK0001",
        "U0USER0001",
        "hello",
        "1700000000.000100",
        None,
        "Ev0MOCK0001",
    );
    let deliveries = sender.send_with_retries(&event, 3, "http_timeout").await;
    assert_eq!(
        deliveries.iter().map(|d| d.retry_num).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    for n in 0..4u32 {
        let (headers, body) = seen.recv().await.unwrap();
        let ts: i64 = headers["x-slack-request-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            headers["x-slack-signature"].to_str().unwrap(),
            slack::sign_v0(secret, ts, &body)
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["event_id"], "Ev0MOCK0001", "the same event every time");
        assert_eq!(v["event"]["type"], "app_mention");
        if n == 0 {
            assert!(!headers.contains_key("x-slack-retry-num"));
        } else {
            assert_eq!(
                headers["x-slack-retry-num"].to_str().unwrap(),
                n.to_string()
            );
            assert_eq!(headers["x-slack-retry-reason"], "http_timeout");
        }
    }
}

#[tokio::test]
async fn slack_post_message_rate_limit_and_socket_mode() {
    let mock = SlackMock::start("xoxb-mock", "xapp-mock").await.unwrap();
    let http = reqwest::Client::new();
    let post = || {
        http.post(format!("{}chat.postMessage", mock.api_url()))
            .bearer_auth("xoxb-mock")
            .json_body(&json!({"channel": "C0MOCK0001", "text": "answer", "thread_ts": "1700000000.000100"}))
            .send()
    };
    mock.rate_limit_posts(1, 2);
    let r = post().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    let r: Value = post().await.unwrap().json_value().await.unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(r["message"]["thread_ts"], "1700000000.000100");
    let posts = mock.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].thread_ts.as_deref(), Some("1700000000.000100"));
    assert_eq!(mock.post_attempts(), 2);

    // Form-encoded arguments work too.
    let r: Value = http
        .post(format!("{}chat.postMessage", mock.api_url()))
        .bearer_auth("xoxb-mock")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("channel=D0MOCK0001&text=hi%20there")
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(mock.posts()[1].text, "hi there");

    let r: Value = http
        .post(format!("{}auth.test", mock.api_url()))
        .bearer_auth("xoxb-wrong")
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    assert_eq!(r["error"], "invalid_auth");

    // Socket Mode: apps.connections.open with the app-level token, hello, envelope, ack.
    let open: Value = http
        .post(format!("{}apps.connections.open", mock.api_url()))
        .bearer_auth("xapp-mock")
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    assert_eq!(open["ok"], true);
    let (mut ws, _) = tokio_tungstenite::connect_async(open["url"].as_str().unwrap())
        .await
        .unwrap();
    let hello = recv(&mut ws).await.unwrap();
    assert_eq!(hello["type"], "hello");
    let event = slack::direct_message(
        "T0MOCK0001",
        "D0MOCK0001",
        "U0USER0001",
        "hi",
        "1700000000.000200",
        "Ev0MOCK0002",
    );
    let envelope_id = mock.socket_event(event, 0).unwrap();
    let envelope = recv(&mut ws).await.unwrap();
    assert_eq!(envelope["type"], "events_api");
    assert_eq!(envelope["envelope_id"], envelope_id.as_str());
    assert_eq!(envelope["payload"]["event"]["channel_type"], "im");
    send(&mut ws, json!({"envelope_id": envelope_id})).await;
    assert!(
        mock.wait_until(WAIT, |m| m.acks() == vec![envelope_id.clone()])
            .await
    );
}
