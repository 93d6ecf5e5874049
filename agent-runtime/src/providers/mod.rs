//! Model providers: the [`ChatProvider`] trait, its OpenAI-compatible and
//! Anthropic implementations, and the [`ModelChain`] that tries the primary
//! model and then the fallbacks. Retries, circuit breaking and rate limits wrap
//! providers in this chain.

mod anthropic;
mod openai;
pub mod resilience;
mod sse;

use std::sync::Arc;
use std::time::Duration;

use crds::runtime_config::{LimitsConfig, ModelConfig, ModelProvider};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use resilience::{Admission, CircuitBreaker, CircuitState, RetryPolicy};

use crate::metrics::Metrics;

pub use anthropic::AnthropicProvider;
pub use openai::OpenAiProvider;

use crate::domain::Role;

/// One message sent upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
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
    /// Why it stopped (`stop`, `length`, ...).
    pub finish_reason: String,
}

/// One event of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// More text.
    Delta(String),
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
}

/// Shared HTTP client for upstream calls (rustls, webpki roots).
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
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

/// The primary model followed by its fallbacks, each behind its own circuit
/// breaker and retried per [`RetryPolicy`].
#[derive(Clone)]
pub struct ModelChain {
    models: Vec<Arc<dyn ChatProvider>>,
    breakers: Vec<Arc<CircuitBreaker>>,
    policy: RetryPolicy,
    metrics: Option<Arc<Metrics>>,
}

/// Every model in the chain failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("every model failed: {}", .attempts.iter().map(|(m, e)| format!("{m}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct ChainError {
    /// Model name and its error, one per attempt, in the order tried (a model
    /// skipped by its open circuit shows [`ProviderError::CircuitOpen`]).
    pub attempts: Vec<(String, ProviderError)>,
}

impl ChainError {
    /// The last error that came from an upstream (else the last one), which
    /// decides the status answered.
    pub fn last(&self) -> Option<&ProviderError> {
        self.attempts
            .iter()
            .rev()
            .map(|(_, e)| e)
            .find(|e| !matches!(e, ProviderError::CircuitOpen))
            .or_else(|| self.attempts.last().map(|(_, e)| e))
    }
}

/// Releases a half-open circuit's probe slot if the probe ends without a
/// verdict (its future dropped, or an error that says nothing about health).
struct ProbeGuard<'a> {
    breaker: &'a CircuitBreaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.release_probe();
        }
    }
}

impl ModelChain {
    /// A chain of providers, tried in order, with the default policy and no metrics.
    pub fn new(models: Vec<Arc<dyn ChatProvider>>) -> Self {
        Self::with_policy(models, &LimitsConfig::default(), None)
    }

    /// A chain with retries and breakers configured by `limits`.
    pub fn with_policy(
        models: Vec<Arc<dyn ChatProvider>>,
        limits: &LimitsConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let breakers = models
            .iter()
            .map(|_| {
                Arc::new(CircuitBreaker::new(
                    limits.circuit_failure_threshold,
                    Duration::from_secs(limits.circuit_open_seconds),
                ))
            })
            .collect();
        let chain = Self {
            models,
            breakers,
            policy: RetryPolicy::from_limits(limits),
            metrics,
        };
        for i in 0..chain.models.len() {
            chain.export_state(i);
        }
        chain
    }

    /// The providers in order.
    pub fn models(&self) -> &[Arc<dyn ChatProvider>] {
        &self.models
    }

    /// Each model's circuit state, in chain order.
    pub fn circuit_states(&self) -> Vec<(String, CircuitState)> {
        self.models
            .iter()
            .zip(&self.breakers)
            .map(|(m, b)| (m.model().to_owned(), b.state()))
            .collect()
    }

    /// Some model in the chain has a closed circuit and its last call did not fail.
    pub fn healthy(&self) -> bool {
        self.breakers.iter().any(|b| b.healthy())
    }

    fn export_state(&self, index: usize) {
        if let (Some(metrics), Some(model), Some(breaker)) = (
            &self.metrics,
            self.models.get(index),
            self.breakers.get(index),
        ) {
            metrics
                .circuit_state
                .with_label_values(&[model.model()])
                .set(breaker.state().gauge());
        }
    }

    /// Runs `call` against each model in turn (retrying per the policy, skipping
    /// open circuits) until one succeeds.
    async fn run<'a, T, F>(
        &'a self,
        defer_verdict: bool,
        mut call: F,
    ) -> Result<(T, usize), ChainError>
    where
        F: FnMut(&'a Arc<dyn ChatProvider>) -> BoxFuture<'a, Result<T, ProviderError>>,
    {
        let mut attempts = Vec::new();
        let mut previous: Option<&str> = None;
        for (index, (model, breaker)) in self.models.iter().zip(&self.breakers).enumerate() {
            let mut attempt = 1;
            loop {
                let admission = breaker.admit();
                if admission == Admission::Rejected {
                    tracing::debug!(model = model.model(), "circuit open: model skipped");
                    attempts.push((model.model().to_owned(), ProviderError::CircuitOpen));
                    break;
                }
                self.export_state(index);
                if attempt == 1
                    && let (Some(from), Some(metrics)) = (previous, &self.metrics)
                {
                    metrics
                        .upstream_fallbacks
                        .with_label_values(&[from, model.model()])
                        .inc();
                }
                let mut guard = ProbeGuard {
                    breaker,
                    armed: admission == Admission::Probe,
                };
                let result = call(model).await;
                match result {
                    Ok(value) => {
                        guard.armed = false;
                        // A deferred verdict waits for the end of the stream,
                        // except for a half-open probe: holding it open for a
                        // whole (perhaps stalled) stream would keep every
                        // other call off a recovered model.
                        if !defer_verdict || admission == Admission::Probe {
                            breaker.on_success();
                            self.export_state(index);
                        }
                        return Ok((value, index));
                    }
                    Err(err) => {
                        if resilience::counts_as_failure(&err) {
                            guard.armed = false;
                            if breaker.on_failure() {
                                tracing::warn!(model = model.model(), "circuit opened");
                            }
                        }
                        drop(guard);
                        self.export_state(index);
                        tracing::warn!(model = model.model(), attempt, error = %err, "model call failed");
                        let delay = (breaker.state() == CircuitState::Closed)
                            .then(|| self.policy.delay_after(attempt, &err))
                            .flatten();
                        let reason = err.metric_label();
                        attempts.push((model.model().to_owned(), err));
                        let Some(delay) = delay else { break };
                        if let Some(metrics) = &self.metrics {
                            metrics
                                .upstream_retries
                                .with_label_values(&[model.model(), reason])
                                .inc();
                        }
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                }
            }
            previous = Some(model.model());
        }
        Err(ChainError { attempts })
    }

    /// The first whole answer any model gives, with the provider that gave it.
    pub async fn complete(
        &self,
        request: &ChatRequest,
    ) -> Result<(Completion, Arc<dyn ChatProvider>), ChainError> {
        let (completion, index) = self.run(false, |model| model.complete(request)).await?;
        Ok((completion, self.models[index].clone()))
    }

    /// The first stream any model starts. A stream counts as started once its
    /// first event arrived without error, so a model failing before any text
    /// is retried or replaced by the next. Whether the model was healthy is
    /// only known when the stream ends: the caller settles the returned
    /// [`StreamVerdict`], so a model whose streams break after the first token
    /// opens its circuit like one that refuses outright.
    pub async fn stream(
        &self,
        request: &ChatRequest,
    ) -> Result<(EventStream, Arc<dyn ChatProvider>, StreamVerdict), ChainError> {
        let (events, index) = self
            .run(true, |model| {
                Box::pin(async move {
                    let mut events = model.stream(request).await?;
                    match events.next().await {
                        Some(Err(err)) => Err(err),
                        None => Err(ProviderError::Truncated),
                        Some(Ok(first)) => Ok(futures::stream::once(async move { Ok(first) })
                            .chain(events)
                            .boxed()),
                    }
                })
            })
            .await?;
        let model = self.models[index].clone();
        let verdict = StreamVerdict {
            breaker: self.breakers[index].clone(),
            gauge: self
                .metrics
                .as_ref()
                .map(|m| m.circuit_state.with_label_values(&[model.model()])),
            model: model.model().to_owned(),
        };
        Ok((events, model, verdict))
    }
}

/// The health verdict on a model whose stream is under way, for its circuit
/// breaker. Dropped unsettled (client gone, shutdown), it counts neither way.
pub struct StreamVerdict {
    breaker: Arc<CircuitBreaker>,
    gauge: Option<prometheus::IntGauge>,
    model: String,
}

impl StreamVerdict {
    /// The stream ended well.
    pub fn succeeded(self) {
        self.breaker.on_success();
        self.export();
    }

    /// The stream broke with `err`: counted against the model when the error
    /// says it is unhealthy.
    pub fn failed(self, err: &ProviderError) {
        if resilience::counts_as_failure(err) {
            if self.breaker.on_failure() {
                tracing::warn!(model = %self.model, "circuit opened (stream broke midway)");
            }
            self.export();
        }
    }

    fn export(&self) {
        if let Some(gauge) = &self.gauge {
            gauge.set(self.breaker.state().gauge());
        }
    }
}

/// Parses `Retry-After` given in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Turns a non-success response into [`ProviderError::Status`] with the
/// upstream's own message when it sent one.
async fn status_error(response: reqwest::Response) -> ProviderError {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    ProviderError::Status {
        status,
        message,
        retry_after,
    }
}

/// Sends a request, bounding the wait for response headers.
async fn send(
    builder: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderError> {
    let response = tokio::time::timeout(timeout, builder.send())
        .await
        .map_err(|_| ProviderError::Timeout(timeout))?
        .map_err(ProviderError::from_reqwest)?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(status_error(response).await)
    }
}

/// Reads a whole JSON body, bounding the wait.
async fn read_json(
    response: reqwest::Response,
    timeout: Duration,
) -> Result<serde_json::Value, ProviderError> {
    let bytes = tokio::time::timeout(timeout, response.bytes())
        .await
        .map_err(|_| ProviderError::Timeout(timeout))?
        .map_err(ProviderError::from_reqwest)?;
    serde_json::from_slice(&bytes).map_err(|e| ProviderError::Malformed(e.to_string()))
}
