//! Logs and traces of the operator, set up by the shared `switchboard-telemetry`
//! crate: logs on stdout (JSON lines by default, `--log-format=text` for people),
//! filtered by `RUST_LOG` (default `info`); OTLP/HTTP traces of every reconcile when
//! `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set.

use switchboard_telemetry::{Options, Telemetry, TelemetryError};

use crate::config::Config;

/// Service name of the spans when `OTEL_SERVICE_NAME` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "switchboard-operator";

/// Installs the global subscriber. Must run inside the Tokio runtime; keep the
/// returned guard until exit (dropping it flushes the spans still buffered).
pub fn init(config: &Config) -> Result<Telemetry, TelemetryError> {
    switchboard_telemetry::init(
        Options {
            service_name: DEFAULT_SERVICE_NAME,
            span_target: "operator",
            log_format: config.log_format,
        },
        config.telemetry_env(|name| std::env::var(name).ok()),
    )
}
