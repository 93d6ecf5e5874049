//! HTTP/1.1 and HTTP/2 without TLS on the one port, told apart by the first
//! bytes a client sends, however they arrive.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{API_KEY, Db, Harness};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A whole chat request, its head and body as HTTP/1.1 sends them.
fn raw_chat(content: &str) -> Vec<u8> {
    let body = json!({"messages": [{"role": "user", "content": content}]}).to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: runtime\r\n\
         authorization: Bearer {API_KEY}\r\nx-switchboard-user: raw-user\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `request` over a new connection in the pieces `split` cuts it into,
/// 50 ms apart, and reads the answer until the runtime closes the connection.
async fn send_in_pieces(h: &Harness, request: &[u8], split: &[usize]) -> String {
    let mut tcp = TcpStream::connect(h.addr).await.expect("connects");
    tcp.set_nodelay(true).expect("nodelay");
    let mut from = 0;
    for &to in split.iter().chain(std::iter::once(&request.len())) {
        tcp.write_all(&request[from..to]).await.expect("writes");
        tcp.flush().await.expect("flushes");
        from = to;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the runtime answers and closes")
        .expect("reads");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_request_head_that_arrives_in_pieces_is_served() {
    let h = Harness::start(Db::Sqlite).await;
    // Whole; after its first byte; after "PR", which HTTP/2's preface starts
    // with too (so the runtime reads on before it chooses); in many pieces.
    let cases: [(&str, &[usize]); 4] = [
        ("whole", &[]),
        ("one byte first", &[1]),
        ("two bytes first", &[2]),
        ("many pieces", &[1, 2, 5, 17, 40, 90]),
    ];
    for (case, split) in cases {
        let answer = send_in_pieces(&h, &raw_chat(case), split).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{case}: {answer}"
        );
        assert!(
            answer.contains(&format!("Echo: {case}")),
            "{case}: {answer}"
        );
    }
    // A request that is neither (it starts as the preface does) is refused as
    // HTTP/1.1 refuses a malformed head, not left waiting.
    let answer = send_in_pieces(
        &h,
        b"PRI * HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        &[3],
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
}

#[tokio::test]
async fn connections_that_send_nothing_hold_up_no_one() {
    let h = Harness::start(Db::Sqlite).await;
    // Connections opened and left silent, or closed before a byte.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(h.addr).await.expect("connects"));
        drop(TcpStream::connect(h.addr).await.expect("connects"));
    }
    let h1 = reqwest::Client::new();
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for i in 0..3 {
        let content = format!("after the silent ones {i}");
        let answer = h1
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(API_KEY)
            .header("x-switchboard-user", "silent-user")
            .json(&json!({"messages": [{"role": "user", "content": content}]}))
            .send()
            .await
            .expect("HTTP/1.1 chat");
        assert_eq!(answer.version(), reqwest::Version::HTTP_11);
        assert_eq!(answer.status(), 200);
        let text = answer.text().await.expect("body");
        assert!(text.contains(&format!("Echo: {content}")), "{text}");
        let request = hyper::Request::post(h.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {API_KEY}"))
            .header("content-type", "application/json")
            .header("x-switchboard-user", "silent-user")
            .body(Full::new(Bytes::from(
                json!({"messages": [{"role": "user", "content": content}]}).to_string(),
            )))
            .expect("request");
        let answer = h2.request(request).await.expect("h2c chat");
        assert_eq!(answer.version(), hyper::Version::HTTP_2);
        assert_eq!(answer.status(), 200);
        let body = answer.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(&format!("Echo: {content}")), "{text}");
    }
    drop(silent);
}
