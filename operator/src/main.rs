//! `switchboard-operator`: parses flags, connects, serves metrics and health, and runs
//! the controllers (under leader election unless disabled) until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::FutureExt;
use kube::Client;
use operator::config::Config;
use operator::context::Context;
use operator::database::{AdminFromSecret, DatabaseAdmin, Provisioner};
use operator::leader::{Outcome, run_when_leader};
use operator::metrics::Metrics;
use operator::server::{ServerState, serve};
use tracing::{info, warn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = operator::telemetry::init(&config).context("setting up logs and traces")?;
    let metrics = Metrics::new().context("registering metrics")?;
    let kube_config = kube::Config::infer()
        .await
        .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
    let client = operator::client::client(kube_config, &metrics)
        .context("building the Kubernetes client")?;
    let database = database_admin(&client, &config)?;
    if database.is_none() {
        warn!("no database admin DSN configured: Managed databases will report NoDatabaseAdmin");
    }
    let context = Arc::new(Context::new(
        client.clone(),
        config.clone(),
        metrics.clone(),
        database,
    ));

    let shutdown = shutdown_signal().boxed().shared();
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(serve(
        config.metrics_addr,
        ServerState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        shutdown.clone(),
    ));

    let controllers = operator::run_controllers(context.clone(), shutdown.clone());
    ready.store(true, Ordering::Relaxed);
    info!(namespaces = ?config.watched_namespaces(), leader_elect = config.leader_elect, "starting");
    if config.leader_elect {
        let leader_metric = metrics.leader.clone();
        let outcome = run_when_leader(
            client,
            &config,
            move || leader_metric.set(1),
            controllers,
            shutdown.clone(),
        )
        .await
        .context("leader election")?;
        metrics.leader.set(0);
        if outcome == Outcome::LostLease {
            bail!("lost the leader Lease");
        }
    } else {
        metrics.leader.set(1);
        controllers.await;
    }
    let _ = server.await;
    info!("stopped");
    telemetry.shutdown();
    Ok(())
}

/// The managed-database server: from the Secret named by `--database-admin-secret`
/// (key `uri`, read when first needed, so the operator starts before it exists), else
/// from `SWITCHBOARD_DATABASE_ADMIN_URL`.
fn database_admin(
    client: &Client,
    config: &Config,
) -> anyhow::Result<Option<Arc<dyn Provisioner>>> {
    if let Some(reference) = &config.database_admin_secret {
        let Some((namespace, name)) = reference.split_once('/') else {
            bail!("--database-admin-secret must be namespace/name, got {reference:?}");
        };
        return Ok(Some(Arc::new(AdminFromSecret::new(
            client.clone(),
            namespace,
            name,
        ))));
    }
    config
        .database_admin_url
        .as_deref()
        .map(|url| DatabaseAdmin::connect_lazy(url).map(|a| Arc::new(a) as Arc<dyn Provisioner>))
        .transpose()
        .context("the database admin DSN is not a valid Postgres URL")
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutdown requested");
}
