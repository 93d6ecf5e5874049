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

/// A runtime whose connections get `seconds` to bring their first request
/// head, and bodies `seconds` between their parts.
async fn with_client_timeout(seconds: u64) -> Harness {
    Harness::start_with(Db::Sqlite, |config, _| {
        config.server.client_timeout_seconds = Some(seconds);
    })
    .await
}

/// Reads from `tcp` until the runtime closes it (a reset counts), within
/// `limit`; what it sent before. Panics if it is still open then.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration, what: &str) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: still open after {limit:?}");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether `tcp` is still open (nothing to read, no end) after `wait`.
async fn still_open_after(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut chunk = [0u8; 16];
    tokio::time::timeout(wait, tcp.read(&mut chunk))
        .await
        .is_err()
}

#[tokio::test]
async fn clients_that_send_no_whole_head_in_time_are_closed() {
    let h = with_client_timeout(2).await;
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: runtime\r\n\
                authorization: Bearer x\r\ncontent-type: application/json\r\n\
                content-length: 2\r\n\r\n{}";

    // Silent from the start: open for a while (a timer cannot fire early),
    // then closed without a byte.
    let mut silent = TcpStream::connect(h.addr).await.expect("connects");
    assert!(still_open_after(&mut silent, Duration::from_millis(500)).await);
    let answer = read_until_closed(&mut silent, Duration::from_secs(15), "silent").await;
    assert_eq!(answer, "");

    // Part of a head, then nothing: closed, nothing answered.
    let mut partial = TcpStream::connect(h.addr).await.expect("connects");
    partial
        .write_all(&head.as_bytes()[..40])
        .await
        .expect("writes");
    let answer = read_until_closed(&mut partial, Duration::from_secs(15), "partial").await;
    assert_eq!(answer, "");

    // A part of HTTP/2's preface, then nothing (the runtime cannot tell the
    // protocol yet): closed too.
    let mut preface = TcpStream::connect(h.addr).await.expect("connects");
    preface.write_all(b"PRI * HTTP/2").await.expect("writes");
    let answer = read_until_closed(&mut preface, Duration::from_secs(15), "preface").await;
    assert_eq!(answer, "");

    // A head sent a byte every 100 ms (it would take ~17 s whole): each byte
    // does not restart the clock, so the connection is closed mid-head.
    let mut trickle = TcpStream::connect(h.addr).await.expect("connects");
    let (mut reader, mut writer) = trickle.split();
    let sent = async {
        let mut sent = 0;
        for byte in head.as_bytes() {
            if writer.write_all(std::slice::from_ref(byte)).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    };
    let closed = async {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer).await;
        answer
    };
    let (sent, answer) = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::select! {
            answer = closed => (None, answer),
            sent = sent => (Some(sent), Vec::new()),
        }
    })
    .await
    .expect("the trickle is cut within 15 s");
    assert_eq!(sent, None, "the whole head went through");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    // A whole head, then part of the body and nothing more: answered 408,
    // naming the setting.
    let request = raw_chat("a stalled body");
    let mut stalled = TcpStream::connect(h.addr).await.expect("connects");
    let cut = request.len() - 10;
    stalled.write_all(&request[..cut]).await.expect("writes");
    let answer = read_until_closed(&mut stalled, Duration::from_secs(15), "stalled body").await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("server.clientTimeoutSeconds"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");

    // A body that keeps arriving, slowly (in four parts 0.8 s apart, 3.2 s in
    // all), is read to its end: the time between parts counts.
    let head_end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let body = request.len() - head_end;
    let split: Vec<usize> = (1..4).map(|i| head_end + body * i / 4).collect();
    let mut slow = TcpStream::connect(h.addr).await.expect("connects");
    slow.write_all(&request[..head_end]).await.expect("writes");
    let mut from = head_end;
    for &to in split.iter().chain(std::iter::once(&request.len())) {
        tokio::time::sleep(Duration::from_millis(800)).await;
        slow.write_all(&request[from..to]).await.expect("writes");
        from = to;
    }
    let answer = read_until_closed(&mut slow, Duration::from_secs(15), "slow body").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Echo: a stalled body"), "{answer}");

    // The runtime serves on.
    let answer = send_in_pieces(&h, &raw_chat("after the slow ones"), &[]).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

#[tokio::test]
async fn a_kept_alive_connection_stays_open_for_a_proxy_to_reuse() {
    let h = with_client_timeout(1).await;
    let tcp = TcpStream::connect(h.addr).await.expect("connects");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("handshake");
    let mut connection = tokio::spawn(connection);
    let chat = |content: &str, stream: bool| {
        hyper::Request::post("/v1/chat/completions")
            .header("host", "runtime")
            .header("authorization", format!("Bearer {API_KEY}"))
            .header("content-type", "application/json")
            .header("x-switchboard-user", "kept-alive-user")
            .body(Full::new(Bytes::from(
                json!({"stream": stream, "messages": [{"role": "user", "content": content}]})
                    .to_string(),
            )))
            .expect("request")
    };
    // Sends `request` when the connection is ready; the answer's body, after
    // a 200.
    async fn ask(
        sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        request: hyper::Request<Full<Bytes>>,
    ) -> String {
        sender.ready().await.expect("the connection is still open");
        let answer = sender.send_request(request).await.expect("answered");
        assert_eq!(answer.status(), 200);
        let body = answer.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }
    // Requests 0.6 s apart, 2.4 s in all on the one connection: only the
    // first had to arrive in time.
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let text = ask(&mut sender, chat(&format!("kept alive {i}"), false)).await;
        assert!(text.contains(&format!("Echo: kept alive {i}")), "{text}");
    }
    // A model that takes longer than the timeout to answer, whole and
    // streamed (2.5 s, five words 0.5 s apart): the clock does not run while
    // a request is being answered.
    let text = ask(&mut sender, chat("slow [[mock: latency_ms=1500]]", false)).await;
    assert!(text.contains("Echo: slow"), "{text}");
    let text = ask(
        &mut sender,
        chat("streamed [[mock: words=5; chunk_delay_ms=500]]", true),
    )
    .await;
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // Then idle for longer than the timeout, as in a proxy's pool: still
    // open, and it serves the next request.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !connection.is_finished(),
        "the runtime closed an idle kept-alive connection"
    );
    ask(&mut sender, chat("after a pause", false)).await;
    drop(sender);
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut connection).await;
}

#[tokio::test]
async fn an_http2_connection_that_opens_no_stream_in_time_is_closed() {
    let h = with_client_timeout(1).await;
    let tcp = TcpStream::connect(h.addr).await.expect("connects");
    let (_sender, connection) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("handshake");
    // The preface and settings go out, then no request: the runtime ends the
    // connection (a GOAWAY), and the client's side of it finishes.
    let ended = tokio::time::timeout(Duration::from_secs(15), connection).await;
    assert!(ended.is_ok(), "the h2c connection is still open");
}
