//! Logs and traces of the runtime, set up by the shared `switchboard-telemetry`
//! crate: logs on stdout (text, or JSON lines with `SWITCHBOARD_LOG_FORMAT=json`),
//! filtered by `RUST_LOG`; OTLP/HTTP traces when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with the standard `OTEL_*`
//! variables applying and `OTEL_SDK_DISABLED=true` turning them off again.
//!
//! Spans: one server span per HTTP request (continuing the caller's W3C
//! `traceparent`), one client span per chat turn following the OpenTelemetry
//! GenAI semantic conventions (`chat {model}`, `gen_ai.*` attributes), and the
//! turn's retries and fallbacks as events inside it.

pub use switchboard_telemetry::{LogFormat, OtlpEndpoint, OtlpSettings, Telemetry};

/// Service name when `OTEL_SERVICE_NAME` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "switchboard-agent-runtime";

/// Installs the global subscriber: logs, plus OTLP traces when configured.
/// Must run inside the Tokio runtime (the exporter sends on it).
pub fn init(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Telemetry, switchboard_telemetry::TelemetryError> {
    // Anything but `json` keeps the text format, as before the setting had a parser.
    let log_format = match var("SWITCHBOARD_LOG_FORMAT") {
        Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    switchboard_telemetry::init(
        switchboard_telemetry::Options {
            service_name: DEFAULT_SERVICE_NAME,
            span_target: "agent_runtime",
            log_format,
        },
        var,
    )
}
