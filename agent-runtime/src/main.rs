//! `agent-runtime`: serves one agent's chat API.
//!
//! Usage: `agent-runtime [--config PATH] [--listen ADDR]`. The config path also
//! comes from `SWITCHBOARD_CONFIG`; without one, defaults apply (SQLite in the
//! working directory, no API key). Secrets come from the environment variables
//! the file names. Logs: `RUST_LOG` filters, `SWITCHBOARD_LOG_FORMAT=json` for
//! JSON lines. Traces go over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (see [`agent_runtime::telemetry`]).

use std::path::PathBuf;

use agent_runtime::channels::ChannelTasks;
use agent_runtime::status_report::{self, Health, ReporterConfig};
use agent_runtime::{AppState, Settings, SharedState, serve};
use anyhow::Context as _;
use clap::Parser;
use crds::runtime_config::RuntimeConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Many small, short-lived allocations per request: mimalloc executes fewer
/// instructions for them than the system allocator (docs/performance.md).
/// The `system-allocator` feature leaves it out, so that heap profilers that
/// follow `malloc` (heaptrack) see every allocation.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves one agent's chat API.
#[derive(Parser, Debug)]
#[command(
    name = "agent-runtime",
    after_help = "env: SWITCHBOARD_CONFIG (config path), SWITCHBOARD_LISTEN (address), RUST_LOG,\n\
    SWITCHBOARD_LOG_FORMAT=json|text, POD_NAME + POD_NAMESPACE (report health into status),\n\
    SWITCHBOARD_UPSTREAM_CHECK_SECONDS (models checked while idle; default 60, 0 = off),\n\
    OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/HTTP traces; off when unset)"
)]
struct Args {
    /// The runtime configuration file (rendered by the operator); defaults apply without one.
    #[arg(short, long, value_name = "PATH", env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on; wins over the file's `server.listen`.
    #[arg(long, value_name = "ADDR", env = "SWITCHBOARD_LISTEN")]
    listen: Option<String>,
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = agent_runtime::telemetry::init(|name| std::env::var(name).ok())?;
    let config = match &args.config {
        Some(path) => agent_runtime::settings::read_config(path)?,
        None => {
            tracing::warn!("no --config given: running with defaults");
            RuntimeConfig::default()
        }
    };
    let mut settings = Settings::resolve(config, |name| std::env::var(name).ok())?;
    // `--listen` wins over SWITCHBOARD_LISTEN (set when a pod runs as a local process),
    // which wins over the file.
    if let Some(listen) = args.listen {
        settings.config.server.listen = listen;
    }
    if settings.api_key.is_none() && settings.config.auth.keys_dir.is_none() {
        tracing::warn!(
            variable = %settings.config.auth.api_key_env,
            "no API key set: the API is open to anyone who can reach it"
        );
    }
    let listen = settings.config.server.listen.clone();
    tracing::info!(
        agent = %settings.config.agent.name,
        model = %settings.config.model.name,
        provider = settings.config.model.provider.as_str(),
        fallbacks = settings.config.fallbacks.len(),
        database = ?settings.database,
        "starting"
    );
    let state = AppState::build(settings).await?;
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, database = state.store.kind(), "listening");
    let reporter = start_status_reporter(&state).await;
    let channel_tasks = ChannelTasks::start(&state, |name| std::env::var(name).ok()).await;
    serve(state.clone(), listener, shutdown_signal()).await?;
    channel_tasks.stop().await;
    if let Some((task, stop)) = reporter {
        stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    // The batch exporter blocks its caller while it flushes: not on a Tokio worker.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}

/// Starts reporting this pod's health into its AgentDeployment's status when running
/// as a pod (`POD_NAME`/`POD_NAMESPACE` set) with Kubernetes credentials.
async fn start_status_reporter(
    state: &SharedState,
) -> Option<(tokio::task::JoinHandle<()>, CancellationToken)> {
    let config =
        ReporterConfig::from_env(&state.config.agent.name, |name| std::env::var(name).ok())?;
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!(error = %err, "running as a pod without Kubernetes credentials: no status reports");
            return None;
        }
    };
    tracing::info!(pod = %config.pod, interval = ?config.interval, "reporting health into the AgentDeployment's status");
    let stop = CancellationToken::new();
    if let Some(every) = config.upstream_check {
        tokio::spawn(status_report::check_upstream(
            state.chain.clone(),
            every,
            stop.clone(),
        ));
    }
    let state = state.clone();
    let health = move || {
        let state = state.clone();
        async move { current_health(&state).await }
    };
    let task = tokio::spawn(status_report::run(client, config, health, stop.clone()));
    Some((task, stop))
}

/// This pod's health as reported into the status.
async fn current_health(state: &SharedState) -> Health {
    // The budget window's shared totals, as all pods have added to them.
    state.ledger.refresh().await;
    Health {
        usage: state.ledger.usage_status(),
        ready: state.store.ping().await.is_ok(),
        upstream_healthy: state.upstream_healthy(),
        active_sessions: state.channels.activity.active_sessions_total(),
        messages_total: i64::try_from(state.messages_total()).unwrap_or(i64::MAX),
        tool_problems: (!state.tools.is_empty()).then(|| {
            state
                .tools
                .problems()
                .into_iter()
                .map(|p| (p.source, p.error))
                .collect()
        }),
    }
}
