//! Small helpers every end-to-end test needs: polling until something holds, and a
//! free loopback port.

use std::time::Duration;

/// Polls `check` every 250 ms until it returns `Some`, or panics after `timeout`
/// saying what it waited for.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A loopback port on which nothing listens, held for as long as this lives:
/// the socket is bound but not listening, so a connection to it is refused
/// and no other test can take the port meanwhile (a port found free and let
/// go can be taken by a test running beside this one).
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    /// `127.0.0.1:port`.
    pub addr: std::net::SocketAddr,
}

impl ClosedPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind a loopback port");
        let addr = socket.local_addr().expect("its address");
        Self {
            _socket: socket,
            addr,
        }
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}
