//! `pod-runner`: runs the selected pods of the local cluster as local processes (the
//! kubelet that kwok nodes lack), for `make demo`. See `switchboard_tools::pod_runner`.
//! Prints one line per started pod: `namespace/name http://addr pid log`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use switchboard_tools::pod_runner::{PodRunner, PodRunnerConfig};

#[derive(Parser)]
#[command(about = "Run the selected pods of the local cluster as local processes")]
struct Args {
    /// The harness kubeconfig.
    #[arg(long, env = "SWITCHBOARD_HARNESS_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Only pods in this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Label selector of the pods to run.
    #[arg(long)]
    selector: String,
    /// Local binary standing in for the container image.
    #[arg(long)]
    binary: PathBuf,
    /// Directory for per-pod files and logs.
    #[arg(long)]
    workdir: PathBuf,
    /// Extra environment for every process, NAME=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let runner = PodRunner::start(PodRunnerConfig {
        kubeconfig: args.kubeconfig,
        namespace: args.namespace,
        selector: args.selector,
        binary: args.binary,
        workdir: args.workdir,
        extra_env: args.env,
    })
    .await?;
    let mut shown = std::collections::BTreeSet::new();
    let mut reported_errors = std::collections::BTreeMap::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        for pod in runner.pods() {
            if shown.insert((pod.namespace.clone(), pod.name.clone(), pod.pid)) {
                println!(
                    "{}/{} http://{} pid={} log={}",
                    pod.namespace,
                    pod.name,
                    pod.addr,
                    pod.pid,
                    pod.log.display()
                );
            }
        }
        for (pod, err) in runner.errors() {
            if reported_errors.get(&pod) != Some(&err) {
                eprintln!("{pod}: cannot run: {err}");
                reported_errors.insert(pod, err);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    runner.shutdown().await;
    Ok(())
}
