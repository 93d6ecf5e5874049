//! The operator's configuration: command-line flags, each with an environment
//! variable fallback, so the same binary runs in a Deployment and from a shell.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

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
    #[arg(long, env = "SWITCHBOARD_AGENT_CONCURRENCY", default_value_t = 8)]
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
