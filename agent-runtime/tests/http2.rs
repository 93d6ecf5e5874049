//! The runtime speaks HTTP/2 without TLS (prior knowledge, as gateways and
//! meshes do towards pods): many chats multiplexed on one connection, whole
//! and streamed, each stored.

mod common;

use bytes::Bytes;
use common::{API_KEY, Db, Harness, sse_data, streamed_text};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

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
