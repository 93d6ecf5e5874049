//! Mock LLM upstream speaking the OpenAI Chat Completions and Anthropic Messages
//! wire formats (typed by the `model-wire` crate, as the agent runtime's
//! providers are), streaming included, with faults a test injects per request
//! (see [`faults`]). Replies are deterministic (`Echo: <last user message>`), so
//! tests can assert content. Start it in-process with [`MockLlm::start`], or run
//! the `mock-llm` binary for benchmarks and the demo.
//!
//! Endpoints: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/messages`,
//! `GET /healthz`.

mod anthropic;
pub mod faults;
mod openai;
mod reply;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{Behaviour, Fault};

/// How many requests the mock remembers for [`MockLlm::requests`].
const REQUEST_LOG_CAPACITY: usize = 1000;

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Selected headers (`authorization`, `x-api-key`, `anthropic-version`,
    /// `content-type`), lower-cased names.
    pub headers: BTreeMap<String, String>,
    /// The JSON body (`null` when it was not JSON).
    pub body: serde_json::Value,
    /// The HTTP version it came over (`HTTP/1.1`, or `HTTP/2.0` for h2c).
    pub version: axum::http::Version,
    /// When it arrived.
    pub received_at: std::time::Instant,
}

impl RecordedRequest {
    /// The `model` field of the body.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(serde_json::Value::as_str)
    }
}

/// Shared state of a running mock.
#[derive(Default)]
pub struct MockState {
    requests: Mutex<VecDeque<RecordedRequest>>,
    total: std::sync::atomic::AtomicU64,
    /// Requests seen per `times`-limited marker.
    marker_counts: Mutex<std::collections::HashMap<String, u64>>,
    /// Streamed bodies being sent now.
    open_streams: std::sync::atomic::AtomicI64,
    /// Streamed bodies dropped before their end (the client went away).
    abandoned_streams: std::sync::atomic::AtomicU64,
    /// Connections accepted.
    connections: std::sync::atomic::AtomicU64,
}

impl MockState {
    fn record(&self, request: RecordedRequest) {
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut log) = self.requests.lock() {
            if log.len() == REQUEST_LOG_CAPACITY {
                log.pop_front();
            }
            log.push_back(request);
        }
    }
}

/// The mock's routes, for embedding or serving.
pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/messages", post(anthropic::messages))
        .with_state(state)
}

/// A running mock server; stops when dropped.
pub struct MockLlm {
    addr: SocketAddr,
    state: Arc<MockState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockLlm {
    /// Starts the mock on `127.0.0.1` with a free port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts the mock on `addr`.
    pub async fn start_on(addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState::default());
        let app = router(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, state.clone(), rx));
        Ok(Self {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for OpenAI-compatible clients (`http://127.0.0.1:PORT/v1`).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for Anthropic clients (`http://127.0.0.1:PORT`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The most recent requests (up to 1000), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .map(|log| log.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Streamed responses being sent right now.
    pub fn open_streams(&self) -> i64 {
        self.state
            .open_streams
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Streamed responses whose client closed the connection before their end.
    pub fn abandoned_streams(&self) -> u64 {
        self.state
            .abandoned_streams
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many connections it has accepted in all.
    pub fn connections(&self) -> u64 {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many requests it has received in all.
    pub fn request_count(&self) -> u64 {
        self.state.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Serves `app` over HTTP/1.1 and HTTP/2 without TLS (h2c, prior knowledge)
/// until `shutdown`, then shuts the open connections down gracefully (as
/// `axum::serve` does). Served with hyper-util directly because `axum::serve`
/// caps an HTTP/2 connection at 200 concurrent streams, and a client that
/// multiplexes its streams over one connection (the agent runtime with
/// `http2PriorKnowledge`) holds thousands in the benchmark.
async fn serve(
    listener: TcpListener,
    app: Router,
    state: Arc<MockState>,
    mut shutdown: oneshot::Receiver<()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(None::<u32>);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait, then accept again.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        state
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection that ends in an error is said on stderr, so a test or
            // bench whose calls fail can tell why; not a client that hung up in the
            // middle of an exchange (a bench stopping a runtime with open streams).
            if let Err(e) = connection.await {
                let hung_up = e
                    .downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_incomplete_message);
                if !hung_up {
                    eprintln!("mock-llm: a connection ended in an error: {e:?}");
                }
            }
        });
    }
    graceful.shutdown().await;
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
