//! Model providers: the [`ChatProvider`] trait, one HTTP core
//! ([`HttpProvider`]) over the OpenAI-compatible and Anthropic wire formats
//! (typed in the `model-wire` crate), and the [`ModelChain`] that tries the
//! primary model and then the fallbacks. Retries, circuit breaking and rate
//! limits wrap providers in this chain.

mod anthropic;
mod chain;
mod http;
mod openai;
mod request;
pub mod resilience;
mod sse;

use std::sync::Arc;
use std::time::Duration;

use crds::runtime_config::{ModelConfig, ModelProvider};
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use anthropic::AnthropicProvider;
pub use chain::{ChainError, ModelChain, StreamVerdict};
pub use http::HttpProvider;
pub use openai::OpenAiProvider;
pub use request::{ImagePart, Refusal, RequestOptions, ResponseFormat, ToolChoice, ToolSpec};
pub use resilience::{Admission, CircuitBreaker, CircuitState, RetryPolicy};

use crate::domain::Role;
pub use crate::domain::ToolCall;

/// One message sent upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// The tools an assistant message called.
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
    /// Images of a user message (after its text).
    pub images: Vec<ImagePart>,
}

impl PromptMessage {
    /// A message of plain text.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            images: Vec::new(),
        }
    }
}

/// The first image part of `messages` as the client names it
/// (`messages[2].content[1]`, indexes into `messages`), if any.
pub fn first_image_field(messages: &[PromptMessage]) -> Option<String> {
    messages.iter().enumerate().find_map(|(i, m)| {
        m.images
            .first()
            .map(|image| format!("messages[{i}].content[{}]", image.part))
    })
}

/// What to ask a model.
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    /// The prompt, system messages first.
    pub messages: Vec<PromptMessage>,
    /// Sampling temperature (the client's, else the model config's).
    pub temperature: Option<f64>,
    /// Answer length cap (the client's, else the model config's).
    pub max_output_tokens: Option<u32>,
    /// Tools, answer format and the other options.
    pub options: RequestOptions,
}

/// Token usage an upstream reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
}

/// A whole answer.
#[derive(Clone, Debug)]
pub struct Completion {
    /// Text.
    pub content: String,
    /// Usage, when reported.
    pub usage: Option<Usage>,
    /// Why it stopped (`stop`, `length`, `tool_calls`, ...).
    pub finish_reason: String,
    /// The tools the model calls.
    pub tool_calls: Vec<ToolCall>,
}

/// A piece of a streamed tool call: the first piece of a call carries its id
/// and name, later ones more of its arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the answer (0, 1, ...).
    pub index: u32,
    /// The call's id (first piece).
    pub id: Option<String>,
    /// The function's name (first piece).
    pub name: Option<String>,
    /// More argument text.
    pub arguments: String,
}

/// One event of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// More text.
    Delta(String),
    /// A piece of a tool call.
    ToolCall(ToolCallDelta),
    /// Usage figures (may come more than once; the last wins).
    Usage(Usage),
    /// The answer is complete.
    Finished {
        /// Why it stopped.
        finish_reason: String,
    },
}

/// A streamed answer; it ends after [`StreamEvent::Finished`] or with an error.
pub type EventStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// Why a model call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The upstream answered with an error status.
    #[error("upstream answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The upstream's message (never contains our key).
        message: String,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// No answer within the configured timeout.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection failed or was cut.
    #[error("upstream connection failed: {0}")]
    Connection(String),
    /// The answer was not in the expected format.
    #[error("upstream sent a malformed answer: {0}")]
    Malformed(String),
    /// A stream ended before the answer was complete.
    #[error("upstream stream ended before the answer was complete")]
    Truncated,
    /// The model's circuit is open: it failed repeatedly and is skipped for now.
    #[error("skipped: the model failed repeatedly and its circuit is open")]
    CircuitOpen,
    /// The request asks for something this model cannot honour: skipped.
    #[error("skipped: {0}")]
    Unsupported(Refusal),
}

impl ProviderError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Status { status: 429, .. } => "rate_limited",
            Self::Status { status, .. } if *status >= 500 => "server_error",
            Self::Status { .. } => "client_error",
            Self::Timeout(_) => "timeout",
            Self::Connection(_) => "connection",
            Self::Malformed(_) => "malformed",
            Self::Truncated => "truncated",
            Self::CircuitOpen => "circuit_open",
            Self::Unsupported(_) => "unsupported",
        }
    }

    fn from_reqwest(err: reqwest::Error) -> Self {
        // `without_url` keeps query strings (and anything in them) out of messages.
        let err = err.without_url();
        if err.is_timeout() {
            Self::Timeout(Duration::ZERO)
        } else if err.is_decode() {
            Self::Malformed(err.to_string())
        } else {
            Self::Connection(error_chain(&err))
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A model behind some wire protocol.
pub trait ChatProvider: Send + Sync {
    /// `openai` or `anthropic`.
    fn provider(&self) -> &'static str;
    /// The model name sent upstream.
    fn model(&self) -> &str;
    /// The first part of `request` this model cannot honour, if any (checked
    /// before the request is sent: a refused field is never dropped).
    fn refuses(&self, request: &ChatRequest) -> Option<Refusal> {
        let _ = request;
        None
    }
    /// Whether the model accepts image parts (its config's `acceptsImages`): a
    /// request with images skips a model that does not.
    fn accepts_images(&self) -> bool {
        true
    }
    /// Asks for a whole answer.
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>>;
    /// Asks for a streamed answer; resolves once the upstream has accepted the
    /// request (response headers received).
    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>>;
    /// Checks, without a chat call (no tokens spent), that the upstream answers and
    /// takes the credentials. A provider with no such check is taken as reachable.
    fn check_reachable(&self) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Shared HTTP client for upstream calls (rustls, webpki roots). HTTP/1.1 to
/// plain-text upstreams (one connection per call in flight); towards TLS
/// upstreams HTTP/2 when they offer it (ALPN), every call then sharing one
/// connection.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    upstream_client_builder().build()
}

/// The client for models set to `http2PriorKnowledge`: HTTP/2 from the first
/// byte over plain text (h2c), so every call to the upstream shares one
/// connection. Only for `http://` upstreams (see [`client_for`]).
pub fn http2_prior_knowledge_client() -> Result<reqwest::Client, reqwest::Error> {
    upstream_client_builder().http2_prior_knowledge().build()
}

/// With calls open on an HTTP/2 upstream connection and nothing received on it
/// for this long, the runtime sends a PING.
pub const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A PING not answered within this long closes the connection: its calls fail
/// as connection errors (retried on a new connection), and calls after them open a
/// new one. Every call to a model set to `http2PriorKnowledge` shares one
/// connection, so one that dies without being closed (a middlebox dropping it, a
/// peer gone without a reset) would otherwise hold each of them for its whole
/// `timeoutSeconds`, attempt after attempt. No PING goes out on an idle
/// connection (servers may count those as abuse); one that died while idle is found
/// by the first call made on it.
pub const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Redirects are not followed: a `301`/`302` turns a POST into a GET without
/// its body, so a model call or an answer POSTed to a webhook callback would
/// reach the new place empty, and a callback's `2xx` would then mark an answer
/// delivered that nobody received. A redirect is reported as the status it is.
pub(crate) fn upstream_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
}

/// The client a model's calls go through: `h2c` (the prior-knowledge client)
/// for a plain-text upstream set to `http2PriorKnowledge`, else `shared` (an
/// `https://` upstream negotiates its protocol by ALPN).
pub fn client_for(
    config: &ModelConfig,
    shared: &reqwest::Client,
    h2c: Option<&reqwest::Client>,
) -> reqwest::Client {
    let plain_text = config.effective_base_url().starts_with("http://");
    if config.http2_prior_knowledge && !plain_text {
        // The CRD refuses this; a hand-written runtime file is told here.
        tracing::warn!(
            model = %config.name,
            base_url = %config.effective_base_url(),
            "http2PriorKnowledge is for plain-text http:// upstreams; this one negotiates its protocol itself (ALPN)"
        );
    }
    match h2c {
        Some(h2c) if config.http2_prior_knowledge && plain_text => h2c.clone(),
        _ => shared.clone(),
    }
}

/// Builds the provider for one model config.
pub fn build_provider(
    client: reqwest::Client,
    config: &ModelConfig,
    api_key: Option<String>,
) -> Arc<dyn ChatProvider> {
    match config.provider {
        ModelProvider::Openai => Arc::new(OpenAiProvider::new(client, config, api_key)),
        ModelProvider::Anthropic => Arc::new(AnthropicProvider::new(client, config, api_key)),
    }
}
