//! Prometheus metrics, all prefixed `switchboard_runtime_` with units in their
//! names, and the middleware that counts HTTP requests by route and status.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The runtime's metrics.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency (until response headers) by route, method and status.
    pub http_duration: HistogramVec,
    /// Time from request to the first streamed token, by model.
    pub time_to_first_token: HistogramVec,
    /// Tokens by model and direction (`in` = prompt, `out` = generated).
    pub tokens: IntCounterVec,
    /// Upstream calls by provider, model and outcome.
    pub upstream_requests: IntCounterVec,
    /// Upstream call duration (whole answer) by provider and model.
    pub upstream_duration: HistogramVec,
    /// Streams being served now.
    pub active_streams: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_http_requests_total",
                "HTTP requests served.",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_runtime_http_request_duration_seconds",
                "Time until the response headers were ready (streams: until the stream started).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )?;
        let time_to_first_token = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_runtime_time_to_first_token_seconds",
                "Time from the request to the first generated token.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_tokens_total",
                "Tokens by model; direction in = prompt, out = generated.",
            ),
            &["model", "direction"],
        )?;
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_upstream_requests_total",
                "Model calls by outcome.",
            ),
            &["provider", "model", "outcome"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_runtime_upstream_duration_seconds",
                "Duration of model calls, whole answer.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider", "model"],
        )?;
        let active_streams = IntGauge::new(
            "switchboard_runtime_active_streams",
            "Streamed answers in progress.",
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(time_to_first_token.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(upstream_requests.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(active_streams.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            time_to_first_token,
            tokens,
            upstream_requests,
            upstream_duration,
            active_streams,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }

    /// Adds tokens used by `model`.
    pub fn count_tokens(&self, model: &str, tokens_in: u64, tokens_out: u64) {
        self.tokens
            .with_label_values(&[model, "in"])
            .inc_by(tokens_in);
        self.tokens
            .with_label_values(&[model, "out"])
            .inc_by(tokens_out);
    }
}

/// Middleware: counts and times every request by its route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let elapsed = start.elapsed();
    let labels = [route.as_str(), method.as_str(), status.as_str()];
    metrics.http_requests.with_label_values(&labels).inc();
    metrics
        .http_duration
        .with_label_values(&labels)
        .observe(elapsed.as_secs_f64());
    tracing::debug!(%route, %method, %status, latency_ms = elapsed.as_millis() as u64, "request served");
    response
}
