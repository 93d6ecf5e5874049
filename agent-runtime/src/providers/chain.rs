//! The [`ModelChain`]: the primary model and then its fallbacks, each behind
//! its own circuit breaker and retried per the [`RetryPolicy`].

use std::sync::Arc;
use std::time::Duration;

use crds::runtime_config::LimitsConfig;
use futures::StreamExt;
use futures::future::BoxFuture;

use super::resilience::{self, Admission, CircuitBreaker, CircuitState, RetryPolicy};
use super::{
    ChatProvider, ChatRequest, Completion, EventStream, ProviderError, Refusal, first_image_field,
};
use crate::metrics::Metrics;

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
    /// The model's own refusal of the request as invalid (HTTP 400 or 422
    /// from the last model that answered): the client's to fix, answered as a
    /// 400, never with the fallback response.
    pub fn invalid_request(&self) -> Option<&str> {
        match self.last() {
            Some(ProviderError::Status {
                status: 400 | 422,
                message,
                ..
            }) => Some(message),
            _ => None,
        }
    }

    /// The last error that came from an upstream (else the last one), which
    /// decides the status answered.
    pub fn last(&self) -> Option<&ProviderError> {
        self.attempts
            .iter()
            .rev()
            .map(|(_, e)| e)
            .find(|e| {
                !matches!(
                    e,
                    ProviderError::CircuitOpen | ProviderError::Unsupported(_)
                )
            })
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

    /// Checks that each model is reachable (see [`ChatProvider::check_reachable`])
    /// unless a call or check gave a verdict within `every`, and records the result,
    /// so an idle agent whose every model is unreachable stops reporting healthy.
    /// Returns the models found unreachable, with why.
    pub async fn check_reachability(&self, every: Duration) -> Vec<(String, ProviderError)> {
        let checks = self
            .models
            .iter()
            .zip(&self.breakers)
            .filter(|(_, breaker)| breaker.check_due(every))
            .map(|(model, breaker)| async move {
                let result = model.check_reachable().await;
                breaker.on_check(result.is_ok());
                result.err().map(|e| (model.model().to_owned(), e))
            });
        futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect()
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
    /// A model that cannot honour the request (see [`ChatProvider::refuses`])
    /// is skipped like one whose circuit is open: the conversation service
    /// refuses the request up front when the primary cannot honour it, so a
    /// fallback that cannot is passed over rather than sent a request it would
    /// answer differently. A model that does not accept images is skipped the
    /// same way for a prompt that carries one (the conversation service refuses
    /// the request up front when no model accepts them).
    async fn run<'a, T, F>(
        &'a self,
        request: &ChatRequest,
        defer_verdict: bool,
        mut call: F,
    ) -> Result<(T, usize), ChainError>
    where
        F: FnMut(&'a Arc<dyn ChatProvider>) -> BoxFuture<'a, Result<T, ProviderError>>,
    {
        let mut attempts = Vec::new();
        let mut previous: Option<&str> = None;
        let image = first_image_field(&request.messages);
        for (index, (model, breaker)) in self.models.iter().zip(&self.breakers).enumerate() {
            let skip = match &image {
                Some(field) if !model.accepts_images() => Some((
                    "images",
                    Refusal {
                        field: field.clone(),
                        provider: model.provider().to_owned(),
                        model: model.model().to_owned(),
                        reason: "the model does not accept images (acceptsImages: false)"
                            .to_owned(),
                    },
                )),
                _ => model.refuses(request).map(|r| ("unsupported", r)),
            };
            if let Some((reason, refusal)) = skip {
                tracing::info!(model = model.model(), %reason, field = %refusal.field, "model cannot take the request: skipped");
                if let Some(metrics) = &self.metrics {
                    metrics
                        .upstream_skips
                        .with_label_values(&[model.model(), reason])
                        .inc();
                }
                attempts.push((
                    model.model().to_owned(),
                    ProviderError::Unsupported(refusal),
                ));
                continue;
            }
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
        let (completion, index) = self
            .run(request, false, |model| model.complete(request))
            .await?;
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
            .run(request, true, |model| {
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
