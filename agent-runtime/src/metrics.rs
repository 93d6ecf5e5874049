//! Prometheus metrics, all prefixed `switchboard_runtime_` with units in their
//! names, and the middleware that counts HTTP requests by route and status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// Tokens by model, channel and direction (`in` = prompt, `out` = generated).
    pub tokens: IntCounterVec,
    /// Upstream calls by provider, model and outcome.
    pub upstream_requests: IntCounterVec,
    /// Upstream call duration (whole answer) by provider and model.
    pub upstream_duration: HistogramVec,
    /// Streams being served now.
    pub active_streams: IntGauge,
    /// Retries of a model call by model and the error retried.
    pub upstream_retries: IntCounterVec,
    /// Moves to the next model of the chain, by the model left and the model tried.
    pub upstream_fallbacks: IntCounterVec,
    /// Models of the chain passed over for a request they cannot take, by model
    /// and reason (`images`: the prompt has images and the model accepts none;
    /// `unsupported`: a field its wire format cannot honour).
    pub upstream_skips: IntCounterVec,
    /// Circuit state per model: 0 closed, 1 half-open, 2 open.
    pub circuit_state: IntGaugeVec,
    /// Requests refused by a rate limit, by scope (`user`, `channel`, `tokens`).
    pub rate_limited: IntCounterVec,
    /// Turns waiting for an upstream call slot.
    pub queue_depth: IntGauge,
    /// Upstream calls (turns) holding a slot.
    pub upstream_in_flight: IntGauge,
    /// Turns refused because the queue was full or the wait too long.
    pub queue_rejected: IntCounter,
    /// Database operation latency by operation.
    pub db_duration: HistogramVec,
    /// Database operations retried because the database was unreachable,
    /// restarting or busy, by operation.
    pub db_retries: IntCounterVec,
    /// One-message writes committed together (group commit), per commit.
    pub db_batch_size: Histogram,
    /// Messages stored (user and assistant), by role.
    pub messages: IntCounterVec,
    /// Webhook answers accepted but not yet delivered, by channel.
    pub webhook_outbox_pending: IntGaugeVec,
    /// Age of the oldest undelivered webhook answer, by channel.
    pub webhook_outbox_oldest_age: GaugeVec,
    /// Server-side tool calls by tool, source and outcome.
    pub tool_calls: IntCounterVec,
    /// Server-side tool call duration by tool and source.
    pub tool_duration: HistogramVec,
    /// Approvals of server-side tool calls by tool and outcome.
    pub tool_approvals: IntCounterVec,
    /// Whether each tool source was reachable with tools at its last listing (1) or not (0).
    pub tool_source_up: IntGaugeVec,
    messages_total: AtomicU64,
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
            &["model", "channel", "direction"],
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
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_upstream_retries_total",
                "Model calls retried, by the error retried.",
            ),
            &["model", "reason"],
        )?;
        let upstream_fallbacks = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_upstream_fallbacks_total",
                "Turns moved on to the next model of the chain.",
            ),
            &["from_model", "to_model"],
        )?;
        let upstream_skips = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_upstream_skips_total",
                "Models of the chain passed over for a request they cannot take, by reason.",
            ),
            &["model", "reason"],
        )?;
        let circuit_state = IntGaugeVec::new(
            Opts::new(
                "switchboard_runtime_upstream_circuit_state",
                "Circuit breaker state per model: 0 closed, 1 half-open, 2 open.",
            ),
            &["model"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_rate_limited_requests_total",
                "Requests refused with 429 by a rate limit, by scope.",
            ),
            &["scope"],
        )?;
        let queue_depth = IntGauge::new(
            "switchboard_runtime_upstream_queue_depth",
            "Turns waiting for an upstream call slot.",
        )?;
        let upstream_in_flight = IntGauge::new(
            "switchboard_runtime_upstream_in_flight",
            "Turns holding an upstream call slot.",
        )?;
        let queue_rejected = IntCounter::new(
            "switchboard_runtime_upstream_queue_rejected_total",
            "Turns refused with 503 because the upstream queue was full.",
        )?;
        let db_duration = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_runtime_database_duration_seconds",
                "Database operation latency.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            &["operation"],
        )?;
        let db_retries = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_database_retries_total",
                "Database operations retried because the database was unreachable, restarting or busy.",
            ),
            &["operation"],
        )?;
        let db_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "switchboard_runtime_database_batch_size",
                "One-message writes (a user message opening or joining its session, an answer) committed together, per commit: concurrent writes share one statement (Postgres) or one transaction (SQLite).",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )?;
        let messages = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_messages_total",
                "Messages stored since start, by role.",
            ),
            &["role"],
        )?;
        let webhook_outbox_pending = IntGaugeVec::new(
            Opts::new(
                "switchboard_runtime_webhook_outbox_pending",
                "Webhook deliveries accepted but not yet delivered to the callback, by channel (the agent's whole outbox, as this pod last counted it).",
            ),
            &["channel"],
        )?;
        let webhook_outbox_oldest_age = GaugeVec::new(
            Opts::new(
                "switchboard_runtime_webhook_outbox_oldest_age_seconds",
                "Age of the oldest undelivered webhook delivery, by channel (0 when none waits).",
            ),
            &["channel"],
        )?;
        let tool_calls = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_tool_calls_total",
                "Server-side tool calls by tool, source and outcome (ok, error, timeout, invalid_arguments, unavailable, rejected).",
            ),
            &["tool", "source", "outcome"],
        )?;
        let tool_duration = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_runtime_tool_call_duration_seconds",
                "Duration of server-side tool calls (without the wait for an approval).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["tool", "source"],
        )?;
        let tool_approvals = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_tool_approvals_total",
                "Approvals of server-side tool calls by tool and outcome (approved, rejected, expired).",
            ),
            &["tool", "outcome"],
        )?;
        let tool_source_up = IntGaugeVec::new(
            Opts::new(
                "switchboard_runtime_tool_source_up",
                "1 when the tool source answered its last listing with tools, else 0.",
            ),
            &["source"],
        )?;
        for collector in [
            Box::new(webhook_outbox_pending.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tool_calls.clone()),
            Box::new(tool_duration.clone()),
            Box::new(tool_approvals.clone()),
            Box::new(tool_source_up.clone()),
            Box::new(webhook_outbox_oldest_age.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(upstream_fallbacks.clone()),
            Box::new(upstream_skips.clone()),
            Box::new(circuit_state.clone()),
            Box::new(rate_limited.clone()),
            Box::new(queue_depth.clone()),
            Box::new(upstream_in_flight.clone()),
            Box::new(queue_rejected.clone()),
            Box::new(db_duration.clone()),
            Box::new(db_retries.clone()),
            Box::new(db_batch_size.clone()),
            Box::new(messages.clone()),
        ] {
            registry.register(collector)?;
        }
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
            upstream_retries,
            upstream_fallbacks,
            upstream_skips,
            circuit_state,
            rate_limited,
            queue_depth,
            upstream_in_flight,
            queue_rejected,
            db_duration,
            db_retries,
            db_batch_size,
            messages,
            webhook_outbox_pending,
            webhook_outbox_oldest_age,
            tool_calls,
            tool_duration,
            tool_approvals,
            tool_source_up,
            messages_total: AtomicU64::new(0),
        })
    }

    /// Registers a further collector (the cost accounting's exact figures).
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// Counts stored messages.
    pub fn count_messages(&self, role: crate::domain::Role, n: u64) {
        self.messages.with_label_values(&[role.as_str()]).inc_by(n);
        self.messages_total.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages stored since start.
    pub fn messages_total(&self) -> u64 {
        self.messages_total.load(Ordering::Relaxed)
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }

    /// Adds tokens used by `model` for a turn on `channel`.
    pub fn count_tokens(&self, model: &str, channel: &str, tokens_in: u64, tokens_out: u64) {
        self.tokens
            .with_label_values(&[model, channel, "in"])
            .inc_by(tokens_in);
        self.tokens
            .with_label_values(&[model, channel, "out"])
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
