//! `agent-runtime`: serves one agent's chat API.
//!
//! Usage: `agent-runtime [--config PATH] [--listen ADDR]`. The config path also
//! comes from `SWITCHBOARD_CONFIG`; without one, defaults apply (SQLite in the
//! working directory, no API key). Secrets come from the environment variables
//! the file names. Logs: `RUST_LOG` filters, `SWITCHBOARD_LOG_FORMAT=json` for
//! JSON lines.

use std::path::PathBuf;

use agent_runtime::{AppState, Settings, serve};
use anyhow::Context as _;
use crds::runtime_config::RuntimeConfig;
use tokio::net::TcpListener;

struct Args {
    config: Option<PathBuf>,
    listen: Option<String>,
}

const USAGE: &str = "usage: agent-runtime [--config PATH] [--listen ADDR]\n\
    env: SWITCHBOARD_CONFIG (config path), RUST_LOG, SWITCHBOARD_LOG_FORMAT=json|text";

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut args = Args {
        config: std::env::var_os("SWITCHBOARD_CONFIG").map(PathBuf::from),
        listen: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--config" | "-c" => args.config = Some(PathBuf::from(value("--config")?)),
            "--listen" => args.listen = Some(value("--listen")?),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Some(args))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json =
        std::env::var("SWITCHBOARD_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
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
    let Some(args) = parse_args()? else {
        return Ok(());
    };
    init_tracing();
    let config = match &args.config {
        Some(path) => agent_runtime::settings::read_config(path)?,
        None => {
            tracing::warn!("no --config given: running with defaults");
            RuntimeConfig::default()
        }
    };
    let mut settings = Settings::resolve(config, |name| std::env::var(name).ok())?;
    if let Some(listen) = args.listen {
        settings.config.server.listen = listen;
    }
    if settings.api_key.is_none() {
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
    serve(state, listener, shutdown_signal()).await?;
    Ok(())
}
