//! The runtime speaks HTTP/2 without TLS (prior knowledge, as gateways and
//! meshes do towards pods): many chats multiplexed on one connection, whole
//! and streamed, each stored. Towards a model set to `http2PriorKnowledge` it
//! speaks h2c too: its streams share one upstream connection, and a shared
//! connection that stops answering is found and replaced.

mod common;

use bytes::Bytes;
use common::{API_KEY, Db, Harness, sse_data, streamed_text};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

async fn chat(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    body: Value,
) -> (hyper::Version, u16, String) {
    let request = hyper::Request::post(url)
        .header("authorization", format!("Bearer {API_KEY}"))
        .header("content-type", "application/json")
        .header("x-switchboard-user", "h2-user")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let response = client.request(request).await.expect("h2 request");
    let version = response.version();
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (version, status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_are_served_over_http2_prior_knowledge() {
    let h = Harness::start(Db::Sqlite).await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let url = h.url("/v1/chat/completions");
    let chats = (0..20).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = json!({"stream": i % 2 == 1, "messages": [{"role": "user", "content": format!("h2 {i}")}]});
            (i, chat(&client, &url, body).await)
        }
    });
    for (i, (version, status, body)) in futures::future::join_all(chats).await {
        assert_eq!(version, hyper::Version::HTTP_2);
        assert_eq!(status, 200, "{body}");
        if i % 2 == 1 {
            let data = sse_data(&body);
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
            assert_eq!(streamed_text(&body), format!("Echo: h2 {i}"));
        } else {
            let answer: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(
                answer["choices"][0]["message"]["content"],
                format!("Echo: h2 {i}")
            );
        }
    }
    let (_, sessions) = h.get("h2-user", "/api/sessions?limit=100").await;
    assert_eq!(
        sessions["data"].as_array().map(Vec::len),
        Some(20),
        "{sessions}"
    );
}

/// A model set to `http2PriorKnowledge` is called over h2c: concurrent
/// streams share the one upstream connection the first chat opened, each
/// relayed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_share_one_h2c_connection_to_a_model_set_to_http2() {
    let h = Harness::start_with(Db::Sqlite, |config, _| {
        config.model.http2_prior_knowledge = true;
    })
    .await;
    let (status, body) = h
        .chat("h2c-user", json!([{"role": "user", "content": "first"}]))
        .await;
    assert_eq!(status, 200, "{body}");
    let connections = h.mock.connections();
    let streams = (0..10).map(|i| {
        let request = h
            .as_user(reqwest::Method::POST, "/v1/chat/completions", "h2c-user")
            .json(&json!({"stream": true, "messages": [{"role": "user", "content": format!("h2c {i}")}]}));
        let h = &h;
        async move { (i, h.stream_text(request).await) }
    });
    for (i, (status, body)) in futures::future::join_all(streams).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            sse_data(&body).last().map(String::as_str),
            Some("[DONE]"),
            "{body}"
        );
        assert_eq!(streamed_text(&body), format!("Echo: h2c {i}"));
    }
    assert_eq!(
        h.mock.connections(),
        connections,
        "the streams shared the upstream connection"
    );
    let requests = h.mock.requests();
    assert_eq!(requests.len(), 11);
    assert!(
        requests.iter().all(|r| r.version == hyper::Version::HTTP_2),
        "{:?}",
        requests.iter().map(|r| r.version).collect::<Vec<_>>()
    );
}

/// Unset, a plain-text upstream is called over HTTP/1.1 (vLLM, Ollama and
/// most self-hosted servers speak nothing else).
#[tokio::test]
async fn a_model_not_set_to_http2_is_called_over_http1() {
    let h = Harness::start(Db::Sqlite).await;
    let (status, body) = h
        .chat("h1-user", json!([{"role": "user", "content": "plain"}]))
        .await;
    assert_eq!(status, 200, "{body}");
    let requests = h.mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].version, hyper::Version::HTTP_11);
}

/// A TCP relay in front of the mock whose open connections can be frozen: their
/// bytes stop flowing both ways while both sockets stay open, as when a
/// connection dies between two hosts without either end closing it.
/// Connections made after a freeze flow.
struct FreezingRelay {
    addr: SocketAddr,
    target: Arc<OnceLock<SocketAddr>>,
    live: Arc<Mutex<CancellationToken>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FreezingRelay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let target = Arc::new(OnceLock::<SocketAddr>::new());
        let live = Arc::new(Mutex::new(CancellationToken::new()));
        // Frozen connections' sockets, kept open until the relay is dropped.
        let held = Arc::new(Mutex::new(Vec::<(TcpStream, TcpStream)>::new()));
        let accept = tokio::spawn({
            let (target, live) = (target.clone(), live.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let to = *target.get().expect("the relay's target is set");
                    let Ok(mut upstream) = TcpStream::connect(to).await else {
                        continue;
                    };
                    let frozen = live.lock().expect("lock").clone();
                    let held = held.clone();
                    tokio::spawn(async move {
                        let froze = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => false,
                            () = frozen.cancelled() => true,
                        };
                        if froze {
                            held.lock().expect("lock").push((client, upstream));
                        }
                    });
                }
            }
        });
        Self {
            addr,
            target,
            live,
            accept,
        }
    }

    fn forward_to(&self, to: SocketAddr) {
        self.target.set(to).expect("set once");
    }

    /// Freezes every connection open now.
    fn freeze(&self) {
        let mut live = self.live.lock().expect("lock");
        live.cancel();
        *live = CancellationToken::new();
    }
}

impl Drop for FreezingRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The one h2c connection to a model stops answering without being closed: the
/// next chat is sent on it, the runtime's PING finds it dead within the
/// keep-alive interval and timeout, and the chat is answered over a new
/// connection, long before the model's timeout (set to five minutes here) would
/// have given up on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_h2c_connection_is_found_by_its_ping_and_replaced() {
    let relay = FreezingRelay::start().await;
    let h = Harness::start_with(Db::Sqlite, |config, mock| {
        relay.forward_to(mock.addr());
        config.model.http2_prior_knowledge = true;
        config.model.base_url = Some(format!("http://{}/v1", relay.addr));
        config.model.timeout_seconds = 300;
    })
    .await;
    let (status, body) = h
        .chat("h2c-user", json!([{"role": "user", "content": "before"}]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.mock.connections(), 1);

    relay.freeze();
    let found_within = agent_runtime::providers::HTTP2_KEEP_ALIVE_INTERVAL
        + agent_runtime::providers::HTTP2_KEEP_ALIVE_TIMEOUT
        + Duration::from_secs(30);
    let (status, body) = tokio::time::timeout(
        found_within,
        h.chat("h2c-user", json!([{"role": "user", "content": "after"}])),
    )
    .await
    .expect("answered: the dead connection was found (a chat left waiting on it waits for the model's timeout)");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: after");
    assert_eq!(
        h.mock.connections(),
        2,
        "the chat went over a new connection"
    );
}
