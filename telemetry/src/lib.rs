//! Logs and traces, set up the same way by the operator and the agent runtime.
//! Logs go to stdout as text or JSON lines, filtered by `RUST_LOG` (default `info`).
//! Traces go over OTLP (HTTP/protobuf) only when an endpoint is configured with the
//! standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; headers, timeout, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` and the `OTEL_BSP_*` batch settings are read as the
//! specification says); `OTEL_SDK_DISABLED=true` turns them off again.

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Why logging or tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `init` ran outside a Tokio runtime (the exporter sends on it).
    #[error("tracing needs a Tokio runtime: {0}")]
    NoRuntime(#[from] tokio::runtime::TryCurrentError),
    /// The exporter's HTTP client could not be built.
    #[error("building the OTLP HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    /// The OTLP exporter refused its settings.
    #[error("building the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber was installed already.
    #[error("installing the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, the event's fields flattened into it.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format must be json or text, got {other:?}")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// What differs between the programs that call [`init`].
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `service.name` of the spans when the environment names none.
    pub service_name: &'static str,
    /// Target (crate) whose spans are exported, at INFO and above, whatever
    /// `RUST_LOG` says (the log filter applies to logs only).
    pub span_target: &'static str,
    /// How log lines are written.
    pub log_format: LogFormat,
}

/// Where traces go, read from the standard OpenTelemetry variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Base endpoint (`/v1/traces` is appended) or the traces endpoint itself.
    pub endpoint: OtlpEndpoint,
    /// Export request timeout (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, milliseconds; 10 s by default).
    pub timeout: Duration,
    /// Whether the service name comes from the environment
    /// (`OTEL_SERVICE_NAME`, or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`).
    pub service_name_given: bool,
}

/// The two ways the specification lets an endpoint be given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtlpEndpoint {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the signal path is appended.
    Base(String),
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: used as is.
    Traces(String),
}

impl OtlpSettings {
    /// Tracing is on when an endpoint is set and the SDK is not disabled.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        let endpoint = match (
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            set("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => OtlpEndpoint::Traces(traces),
            (None, Some(base)) => OtlpEndpoint::Base(base),
            (None, None) => return None,
        };
        let timeout = set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .and_then(|ms| ms.parse::<u64>().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        let service_name_given = set("OTEL_SERVICE_NAME").is_some()
            || set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| {
                attrs
                    .split(',')
                    .any(|kv| kv.trim_start().starts_with("service.name="))
            });
        Some(Self {
            endpoint,
            timeout,
            service_name_given,
        })
    }

    /// The URL spans are posted to.
    pub fn traces_url(&self) -> String {
        match &self.endpoint {
            OtlpEndpoint::Traces(url) => url.clone(),
            OtlpEndpoint::Base(base) => format!("{}/v1/traces", base.trim_end_matches('/')),
        }
    }
}

/// Flushes buffered spans when dropped (or on [`Telemetry::shutdown`]).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter.
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("could not flush traces: {err}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs the global subscriber: logs, plus OTLP traces when `var` (the
/// environment, or a view of it) names an endpoint. Must run inside the Tokio
/// runtime (the exporter sends on it).
pub fn init(
    options: Options,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Telemetry, TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (text_logs, json_logs) = match options.log_format {
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            ),
        ),
        LogFormat::Text => (Some(tracing_subscriber::fmt::layer()), None),
    };
    let settings = OtlpSettings::from_env(&var);
    let provider = settings
        .as_ref()
        .map(|s| tracer_provider(s, options.service_name))
        .transpose()?;
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(options.service_name))
            .with_error_records_to_exceptions(true)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(options.span_target, tracing::Level::INFO),
            )
    });
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    }
    tracing_subscriber::registry()
        .with(text_logs.with_filter(filter.clone()))
        .with(json_logs.with_filter(filter))
        .with(otel)
        .try_init()?;
    if let Some(settings) = settings {
        tracing::info!(endpoint = %settings.traces_url(), "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(
    settings: &OtlpSettings,
    service_name: &'static str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(TokioHttpClient::new(settings.timeout)?)
        .with_endpoint(settings.traces_url())
        .build()?;
    // `Resource::builder` reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    // without a service name the program names itself.
    let mut resource = Resource::builder();
    if !settings.service_name_given {
        resource = resource.with_service_name(service_name);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The exporter's transport: a reqwest client driven by the Tokio runtime even
/// though the batch processor calls from its own thread.
#[derive(Debug)]
struct TokioHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl TokioHttpClient {
    fn new(timeout: Duration) -> Result<Self, TelemetryError> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(timeout).build()?,
            runtime: tokio::runtime::Handle::try_current()?,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for TokioHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let mut out = Response::builder().status(response.status().as_u16());
            for (name, value) in response.headers() {
                out = out.header(name.as_str(), value.as_bytes());
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(out.body(body)?)
        });
        task.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(OtlpSettings::from_env(env(&[])), None);
        assert_eq!(
            OtlpSettings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")])),
            None
        );
    }

    #[test]
    fn base_endpoint_gets_the_traces_path() {
        let s = OtlpSettings::from_env(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318/",
        )]))
        .expect("on");
        assert_eq!(s.traces_url(), "http://collector:4318/v1/traces");
    }

    #[test]
    fn traces_endpoint_is_used_as_is_and_wins() {
        let s = OtlpSettings::from_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/custom"),
        ]))
        .expect("on");
        assert_eq!(s.traces_url(), "http://b:4318/custom");
    }

    #[test]
    fn timeout_and_service_name_follow_the_environment() {
        let s = OtlpSettings::from_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team=x, service.name=support"),
        ]))
        .expect("on");
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert!(s.service_name_given);
        let s = OtlpSettings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318")]))
            .expect("on");
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert!(!s.service_name_given);
    }

    #[test]
    fn sdk_disabled_wins() {
        assert_eq!(
            OtlpSettings::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ])),
            None
        );
    }

    #[test]
    fn log_format_parses_either_spelling_and_names_a_wrong_one() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" Text ".parse::<LogFormat>(), Ok(LogFormat::Text));
        let err = "yaml".parse::<LogFormat>().expect_err("refused");
        assert!(err.contains("json or text"), "{err}");
        assert_eq!(LogFormat::Json.to_string(), "json");
    }
}
