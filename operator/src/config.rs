//! The operator's configuration: command-line flags, each with an environment
//! variable fallback, so the same binary runs in a Deployment and from a shell.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use switchboard_telemetry::LogFormat;

/// Flags of `switchboard-operator`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "switchboard-operator",
    version,
    about = "Reconciles Switchboard AgentDeployments and ChatChannels"
)]
pub struct Config {
    /// Namespaces to watch, comma separated. Empty: every namespace.
    #[arg(
        long = "namespace",
        env = "SWITCHBOARD_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Default image of the agent runtime container.
    #[arg(
        long,
        env = "SWITCHBOARD_RUNTIME_IMAGE",
        default_value = concat!("ghcr.io/switchboard-dev/switchboard-agent-runtime:", env!("CARGO_PKG_VERSION"))
    )]
    pub runtime_image: String,

    /// Pull policy of the runtime container in the pods the operator builds
    /// (`Always`, `IfNotPresent` or `Never`).
    #[arg(
        long,
        env = "SWITCHBOARD_RUNTIME_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent",
        value_parser = ["Always", "IfNotPresent", "Never"]
    )]
    pub runtime_image_pull_policy: String,

    /// Secrets for pulling the runtime image, comma separated names, set as
    /// `imagePullSecrets` on the pods the operator builds. Each must exist in every
    /// agent's namespace. Empty: none.
    #[arg(
        long,
        env = "SWITCHBOARD_RUNTIME_IMAGE_PULL_SECRETS",
        value_delimiter = ','
    )]
    pub runtime_image_pull_secrets: Vec<String>,

    /// Secret holding the Postgres admin DSN (key `uri`), as `namespace/name`.
    #[arg(long, env = "SWITCHBOARD_DATABASE_ADMIN_SECRET")]
    pub database_admin_secret: Option<String>,

    /// Postgres admin DSN for local runs and tests; the Secret wins when both are set.
    #[arg(long, env = "SWITCHBOARD_DATABASE_ADMIN_URL", hide_env_values = true)]
    pub database_admin_url: Option<String>,

    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "SWITCHBOARD_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Run the controllers only while holding the leader Lease.
    #[arg(long, env = "SWITCHBOARD_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "SWITCHBOARD_LEASE_NAME",
        default_value = "switchboard-operator"
    )]
    pub lease_name: String,

    /// Namespace of the leader Lease. Default: the pod's namespace (POD_NAMESPACE),
    /// else the first watched namespace, else `default`.
    #[arg(long, env = "SWITCHBOARD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, env = "SWITCHBOARD_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// Identity in the Lease. Default: POD_NAME, else the host name and process id.
    #[arg(long, env = "SWITCHBOARD_IDENTITY")]
    pub identity: Option<String>,

    /// AgentDeployments reconciled at once.
    #[arg(long, env = "SWITCHBOARD_AGENT_CONCURRENCY", default_value_t = 32)]
    pub agent_concurrency: u16,

    /// ChatChannels reconciled at once.
    #[arg(long, env = "SWITCHBOARD_CHANNEL_CONCURRENCY", default_value_t = 4)]
    pub channel_concurrency: u16,

    /// Cluster DNS domain used in status endpoints.
    #[arg(
        long,
        env = "SWITCHBOARD_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// Seconds between full re-checks of every object when nothing changes.
    #[arg(long, env = "SWITCHBOARD_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,

    /// Log lines as `json` (one object per line) or `text`.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,

    /// OTLP/HTTP endpoint the operator sends its reconcile spans to (`/v1/traces` is
    /// appended), e.g. `http://otel-collector.monitoring:4318`. Unset: no traces. The
    /// standard `OTEL_*` variables (headers, timeout, service name, batching) apply.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl Config {
    /// The namespace of the leader Lease.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| self.namespaces.first().cloned())
            .unwrap_or_else(|| "default".to_owned())
    }

    /// The identity written into the Lease and events.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "switchboard".to_owned());
                format!("{host}-{}", std::process::id())
            })
    }

    /// How often an unchanged object is re-checked.
    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_seconds.max(30))
    }

    /// The environment as the tracing setup sees it: `--otlp-endpoint` wins over
    /// every endpoint variable; the other `OTEL_*` variables come from `env`.
    pub fn telemetry_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> impl Fn(&str) -> Option<String> {
        let endpoint = self.otlp_endpoint.clone();
        move |name| match (name, &endpoint) {
            ("OTEL_EXPORTER_OTLP_ENDPOINT", Some(endpoint)) => Some(endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", Some(_)) => None,
            _ => env(name),
        }
    }

    /// The Secrets the runtime pods pull their image with, blanks dropped.
    pub fn image_pull_secrets(&self) -> Vec<String> {
        self.runtime_image_pull_secrets
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// The namespaces to watch, `None` meaning all.
    pub fn watched_namespaces(&self) -> Option<Vec<String>> {
        let ns: Vec<String> = self
            .namespaces
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        (!ns.is_empty()).then_some(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_telemetry::OtlpSettings;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("switchboard-operator").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_keep_json_logs_no_traces_and_if_not_present() {
        let config = parse(&[]).expect("defaults parse");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.runtime_image_pull_policy, "IfNotPresent");
        assert!(config.image_pull_secrets().is_empty());
    }

    #[test]
    fn pull_secrets_are_a_comma_separated_list() {
        let config = parse(&["--runtime-image-pull-secrets=regcred,mirror"]).expect("valid flags");
        assert_eq!(config.image_pull_secrets(), ["regcred", "mirror"]);
        // An empty flag or variable (`SWITCHBOARD_RUNTIME_IMAGE_PULL_SECRETS=`) means none.
        let config = parse(&["--runtime-image-pull-secrets="]).expect("valid flags");
        assert!(config.image_pull_secrets().is_empty());
        let config = parse(&["--runtime-image-pull-secrets=regcred, ,mirror "]).expect("valid");
        assert_eq!(config.image_pull_secrets(), ["regcred", "mirror"]);
    }

    #[test]
    fn log_format_and_pull_policy_are_checked() {
        let config = parse(&["--log-format=text", "--runtime-image-pull-policy=Always"])
            .expect("valid flags");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.runtime_image_pull_policy, "Always");
        let err = parse(&["--log-format=yaml"]).expect_err("unknown format");
        assert!(err.to_string().contains("json or text"), "{err}");
        let err = parse(&["--runtime-image-pull-policy=Sometimes"]).expect_err("unknown policy");
        assert!(err.to_string().contains("IfNotPresent"), "{err}");
    }

    #[test]
    fn the_otlp_flag_wins_over_the_environment() {
        let env = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some("http://env:4318/v1/traces".to_owned()),
            "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("2000".to_owned()),
            _ => None,
        };
        let config = parse(&["--otlp-endpoint=http://collector:4318"]).expect("valid flags");
        let settings = OtlpSettings::from_env(config.telemetry_env(env)).expect("tracing on");
        assert_eq!(settings.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!(settings.timeout, Duration::from_secs(2));
        // Without the flag the standard variables decide, as for the runtime.
        let config = parse(&[]).expect("defaults parse");
        let settings = OtlpSettings::from_env(config.telemetry_env(env)).expect("tracing on");
        assert_eq!(settings.traces_url(), "http://env:4318/v1/traces");
        assert!(OtlpSettings::from_env(config.telemetry_env(|_| None)).is_none());
    }
}
