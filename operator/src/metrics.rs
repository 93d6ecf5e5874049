//! Prometheus metrics of the operator, prefixed `switchboard_operator_`: reconciles,
//! their durations, failures by error category, reconciles running, write requests
//! sent to the API, and the health of the watches (errors, restarts).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The operator's metrics and the registry that serves them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started, by controller.
    pub reconciles: IntCounterVec,
    /// Reconcile durations in seconds, by controller.
    pub reconcile_duration: HistogramVec,
    /// Failed reconciles, by controller and error category.
    pub failures: IntCounterVec,
    /// Write requests sent to the Kubernetes API, by kind and verb.
    pub writes: IntCounterVec,
    /// Every request the client sent to the Kubernetes API, by HTTP method: counted
    /// under the client itself, so no write (a finalizer patch, an event) escapes it.
    pub requests: IntCounterVec,
    /// 1 while this process holds the leader Lease.
    pub leader: IntGauge,
    /// Errors of the watches (list or watch failed; retried with backoff), by kind.
    pub watch_errors: IntCounterVec,
    /// Watches that started over with a fresh list (after an error or an expired
    /// resource version), by kind.
    pub watch_restarts: IntCounterVec,
    /// Reconciles running now, by controller: the work the queue is handing out.
    pub reconciles_in_flight: IntGaugeVec,
}

/// Counts one reconcile as running until dropped.
pub struct InFlight(prometheus::IntGauge, Option<prometheus::HistogramTimer>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
        if let Some(timer) = self.1.take() {
            timer.observe_duration();
        }
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_reconciles_total",
                "Reconciles started, by controller.",
            ),
            &["controller"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_operator_reconcile_duration_seconds",
                "Duration of reconciles, by controller.",
            )
            .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["controller"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_reconcile_failures_total",
                "Failed reconciles, by controller and error category.",
            ),
            &["controller", "category"],
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_kube_writes_total",
                "Write requests sent to the Kubernetes API, by kind and verb.",
            ),
            &["kind", "verb"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_kube_requests_total",
                "Requests the operator's client sent to the Kubernetes API, by HTTP method.",
            ),
            &["method"],
        )?;
        let leader = IntGauge::new(
            "switchboard_operator_leader",
            "1 while this process holds the leader Lease.",
        )?;
        let watch_errors = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_watch_errors_total",
                "Errors of the operator's watches (retried with backoff), by kind.",
            ),
            &["kind"],
        )?;
        let watch_restarts = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_watch_restarts_total",
                "Watches started over with a fresh list after the first, by kind.",
            ),
            &["kind"],
        )?;
        let reconciles_in_flight = IntGaugeVec::new(
            Opts::new(
                "switchboard_operator_reconciles_in_flight",
                "Reconciles running now, by controller.",
            ),
            &["controller"],
        )?;
        registry.register(Box::new(watch_errors.clone()))?;
        registry.register(Box::new(watch_restarts.clone()))?;
        registry.register(Box::new(reconciles_in_flight.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_duration,
            failures,
            writes,
            requests,
            leader,
            watch_errors,
            watch_restarts,
            reconciles_in_flight,
        })
    }

    /// One reconcile of `controller`: counted now, in flight and timed until
    /// the guard drops.
    pub fn reconcile_started(&self, controller: &str) -> InFlight {
        self.reconciles.with_label_values(&[controller]).inc();
        let gauge = self.reconciles_in_flight.with_label_values(&[controller]);
        gauge.inc();
        let timer = self
            .reconcile_duration
            .with_label_values(&[controller])
            .start_timer();
        InFlight(gauge, Some(timer))
    }

    /// Makes every kind's watch series exist from the start (at zero).
    pub fn declare_watch(&self, kind: &str) {
        self.watch_errors.with_label_values(&[kind]);
        self.watch_restarts.with_label_values(&[kind]);
    }

    /// Counts one write request.
    pub fn write(&self, kind: &str, verb: &str) {
        self.writes.with_label_values(&[kind, verb]).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// Whether a request of `method` changes something on the API server.
pub fn is_write(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
}
