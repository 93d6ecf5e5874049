//! Accepting connections and serving HTTP/1.1 and HTTP/2 without TLS (h2c,
//! prior knowledge) on the one port, the two told apart by peeking at what the
//! client sent first.
//!
//! Why not `axum::serve`: it hands every connection to hyper-util's automatic
//! builder, which reads the first bytes (up to HTTP/2's 24-byte preface) to
//! choose, then replays them to the chosen protocol. hyper's HTTP/1.1 side
//! then receives a request head in two reads (the replayed bytes, then the
//! rest) and must grow its 8 KiB read buffer to 16 KiB to keep the first part,
//! a buffer each HTTP/1.1 connection keeps for its life (heaptrack: 16 KiB
//! per idle stream; docs/performance.md). A peek leaves the bytes in the
//! socket, so hyper reads the head once, into its usual 8 KiB. The rest is
//! what `axum::serve` does: `TCP_NODELAY`, a failed accept retried, and at
//! shutdown no new connections while the open ones finish what they serve.
//! Unlike `axum::serve`, a new connection gets a limited time to bring its
//! first request's whole head (`server.clientTimeoutSeconds`), so connections
//! that send nothing, or part of a head, or a head slowly, do not stay open
//! for good: each holds a task and hyper's buffers (16 KiB over HTTP/1.1). A
//! kept-alive connection that has served a request is not timed while idle:
//! the proxies in front (ingress-nginx, Envoy, cloud load balancers) keep
//! their upstream connections for 60 s to an hour, and one closed under them
//! as they reuse it fails a chat (a `POST` is not retried).

use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// What an HTTP/2 client without TLS sends first (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's first bytes say it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
    /// A part of HTTP/2's preface so far: looked at again or, with no client
    /// timeout, left to hyper-util to read on and decide.
    Undecided,
}

/// Reads `first` (at least one byte a client sent).
fn protocol(first: &[u8]) -> Protocol {
    if !PREFACE.starts_with(first) {
        Protocol::Http1
    } else if first.len() == PREFACE.len() {
        Protocol::Http2
    } else {
        Protocol::Undecided
    }
}

/// Reads the client's first bytes without taking them from the socket;
/// `None` if it closed without sending any. With `wait_for_more` (a client
/// timeout bounds the wait), a client that has sent only a part of HTTP/2's
/// preface is looked at again until its bytes tell (a peek cannot wait for
/// more than it has seen): after 1 ms, 2 ms, ..., then every second, so that
/// clients which stop there cost a few wake-ups until the timeout closes them.
/// Without it, such a part is [`Protocol::Undecided`] (hyper-util reads on).
async fn first_bytes(tcp: &TcpStream, wait_for_more: bool) -> io::Result<Option<Protocol>> {
    let mut first = [0u8; PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = tcp.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        let seen = protocol(&first[..n]);
        if seen != Protocol::Undecided || !wait_for_more {
            return Ok(Some(seen));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Passes requests on, cancelling `arrived` at the first.
fn first_request_seen<B>(
    arrived: CancellationToken,
) -> impl FnMut(axum::http::Request<B>) -> axum::http::Request<B> + Clone {
    move |request| {
        if !arrived.is_cancelled() {
            arrived.cancel();
        }
        request
    }
}

/// Resolves at `deadline` unless `first_request` was cancelled (the
/// connection's first request reached the service) by then; never without a
/// deadline.
async fn first_request_late(first_request: CancellationToken, deadline: Option<Instant>) {
    if let Some(deadline) = deadline
        && tokio::time::timeout_at(deadline, first_request.cancelled())
            .await
            .is_err()
    {
        return;
    }
    std::future::pending().await
}

/// Serves `app` on `listener` until `shutdown` resolves; then accepts no more
/// connections, lets each open one finish (an HTTP/1.1 connection its request
/// in flight, an HTTP/2 one its open streams, after a `GOAWAY`) and returns
/// once all are closed. `head_timeout` bounds the wait for a connection's
/// first request head (see the module's docs); `None` waits for ever.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
    head_timeout: Option<Duration>,
) {
    let stop = CancellationToken::new();
    // Every connection's task holds a receiver; the sender sees them all gone.
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (app, stop, open) = (app.clone(), stop.clone(), open_rx.clone());
        tokio::spawn(async move {
            serve_connection(tcp, app, stop, head_timeout).await;
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    stop.cancel();
    open_tx.closed().await;
}

/// As `axum::serve`: a connection that failed before it was accepted is the
/// client's business; anything else (out of file descriptors) is logged and
/// accepting waits a second, for connections to close.
async fn accept_failed(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn serve_connection(
    tcp: TcpStream,
    app: Router,
    stop: CancellationToken,
    head_timeout: Option<Duration>,
) {
    // No Nagle: a streamed answer is many small writes, and each would wait
    // for the client's (delayed) acknowledgement of the one before.
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
    // A new connection's first request head is due by then; `first_request`
    // is cancelled when it is whole (it reaches the app). One timer covers the
    // peek below and hyper's reading of the head.
    let deadline = head_timeout.map(|limit| Instant::now() + limit);
    let first_request = CancellationToken::new();
    let mut late = pin!(first_request_late(first_request.clone(), deadline));
    let first = tokio::select! {
        first = first_bytes(&tcp, deadline.is_some()) => first,
        () = stop.cancelled() => return,
        () = late.as_mut() => {
            tracing::debug!(
                "closing a connection that did not start a request (or HTTP/2's preface) in the client timeout"
            );
            return;
        }
    };
    let builder = Builder::new(TokioExecutor::new());
    let builder = match first {
        Ok(Some(Protocol::Http1)) => builder.http1_only(),
        Ok(Some(Protocol::Http2)) => builder.http2_only(),
        Ok(Some(Protocol::Undecided)) => builder,
        Ok(None) | Err(_) => return,
    };
    let app = app.map_request(first_request_seen(first_request));
    let connection = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app));
    let mut connection = pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = late => {
            tracing::debug!("closing a connection whose first request head did not arrive in the client timeout");
            // HTTP/1.1: closed at once (no request is in progress); HTTP/2:
            // a `GOAWAY`, no stream having been opened.
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(Duration::from_secs(1), connection).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(err) = result {
        tracing::trace!(error = %err, "a connection ended in an error");
    }
}

#[cfg(test)]
mod tests {
    use super::{PREFACE, Protocol, protocol};

    #[test]
    fn the_first_bytes_tell_the_protocols_apart() {
        assert_eq!(
            protocol(b"POST /v1/chat/completions HTTP/1.1\r\n"),
            Protocol::Http1
        );
        assert_eq!(protocol(b"G"), Protocol::Http1);
        // The methods that start as the preface does differ by their second or
        // third byte.
        assert_eq!(protocol(b"PUT"), Protocol::Http1);
        assert_eq!(protocol(b"PATCH"), Protocol::Http1);
        assert_eq!(protocol(b"PROPFIND"), Protocol::Http1);
        assert_eq!(protocol(PREFACE), Protocol::Http2);
        assert_eq!(protocol(b"P"), Protocol::Undecided);
        assert_eq!(protocol(b"PRI * HTTP/2.0\r\n"), Protocol::Undecided);
        assert_eq!(protocol(b"PRI * HTTP/2.0\r\n\r\nSX"), Protocol::Http1);
    }
}
