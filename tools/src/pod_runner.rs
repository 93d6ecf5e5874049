//! Runs the containers of selected pods as local processes, standing in for the
//! kubelet that kwok nodes do not have. Each process gets exactly what its pod would:
//! the container's arguments, its environment with Secret, ConfigMap and downward-API
//! references resolved from the API, its ConfigMap, Secret and projected volumes
//! written to disk, and a ServiceAccount token minted for the pod through the
//! TokenRequest API (so it has the pod's RBAC and nothing more). Nothing is copied
//! from elsewhere: if the operator renders a wrong config, the local process sees it.
//!
//! Differences from a kubelet, by necessity: the image is replaced by a local binary;
//! mount paths are placed under a per-pod directory (arguments and environment values
//! that start with a mount path are rewritten to match); the API server is reached
//! through a kubeconfig (`KUBECONFIG`) instead of the in-cluster service address; and
//! each process listens on a free loopback port given in `SWITCHBOARD_LISTEN`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config, ResourceExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// The kubeconfig context the harness writes (as `switchboard_tests::cluster` has it).
pub const HARNESS_CONTEXT: &str = "switchboard-harness";

/// A client for the harness context of the given kubeconfig; fails unless that context
/// exists. The same check as `switchboard_tests::cluster::client_for`, kept here so the
/// tools do not depend on the test crate (the pod runner goes when the local cluster runs
/// real pods).
async fn client_for(kubeconfig: &Path) -> Result<Client, BoxError> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    if !kc.contexts.iter().any(|c| c.name == HARNESS_CONTEXT) {
        return Err(format!(
            "{} has no context {HARNESS_CONTEXT}: not a harness kubeconfig",
            kubeconfig.display()
        )
        .into());
    }
    let options = KubeConfigOptions {
        context: Some(HARNESS_CONTEXT.to_owned()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &options).await?;
    Ok(Client::try_from(config)?)
}

/// Environment variable that tells a locally run pod which address to listen on.
pub const LISTEN_ENV: &str = "SWITCHBOARD_LISTEN";

/// What to run and where.
#[derive(Clone, Debug)]
pub struct PodRunnerConfig {
    /// The harness kubeconfig (its cluster entry is reused for the pods' kubeconfigs).
    pub kubeconfig: PathBuf,
    /// Only pods in this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Label selector of the pods to run.
    pub selector: String,
    /// The local binary that stands in for the container image.
    pub binary: PathBuf,
    /// Per-pod directories (files, kubeconfig, log) go here.
    pub workdir: PathBuf,
    /// Extra environment for every process (e.g. `RUST_LOG`).
    pub extra_env: Vec<(String, String)>,
}

/// A pod running as a local process.
#[derive(Clone, Debug)]
pub struct LocalPod {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// Where the process listens.
    pub addr: SocketAddr,
    /// The process id.
    pub pid: u32,
    /// The process's combined stdout and stderr.
    pub log: PathBuf,
}

struct Running {
    info: LocalPod,
    child: Child,
}

#[derive(Default)]
struct State {
    running: HashMap<String, Running>,
    /// Pods stopped on purpose (by a test); not restarted while they exist.
    stopped: std::collections::HashSet<String>,
    errors: HashMap<String, String>,
}

/// Runs matching pods until dropped or shut down.
pub struct PodRunner {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl PodRunner {
    /// Starts watching and running pods.
    pub async fn start(config: PodRunnerConfig) -> Result<PodRunner, BoxError> {
        let client = client_for(&config.kubeconfig).await?;
        std::fs::create_dir_all(&config.workdir)?;
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(run(client, config, state.clone()));
        Ok(PodRunner { state, task })
    }

    /// The pods running now.
    pub fn pods(&self) -> Vec<LocalPod> {
        let state = self.state.lock().expect("pod runner state");
        let mut pods: Vec<_> = state.running.values().map(|r| r.info.clone()).collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }

    /// Why pods could not be started, by `namespace/name`.
    pub fn errors(&self) -> HashMap<String, String> {
        self.state.lock().expect("pod runner state").errors.clone()
    }

    /// Waits until at least `count` pods of `namespace` run, or returns what runs.
    pub async fn wait_for(
        &self,
        namespace: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<LocalPod> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pods: Vec<_> = self
                .pods()
                .into_iter()
                .filter(|p| p.namespace == namespace)
                .collect();
            if pods.len() >= count || tokio::time::Instant::now() >= deadline {
                return pods;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills one pod's process with SIGKILL and keeps it stopped while the pod exists.
    pub fn kill(&self, namespace: &str, name: &str) -> bool {
        let mut state = self.state.lock().expect("pod runner state");
        let k = key(namespace, name);
        state.stopped.insert(k.clone());
        match state.running.remove(&k) {
            Some(mut r) => r.child.start_kill().is_ok(),
            None => false,
        }
    }

    /// Stops every process (SIGTERM, then SIGKILL after 5 s) and the watch.
    pub async fn shutdown(self) {
        self.task.abort();
        let running: Vec<Running> = {
            let mut state = self.state.lock().expect("pod runner state");
            state.running.drain().map(|(_, r)| r).collect()
        };
        for mut r in running {
            terminate(&mut r.child, Duration::from_secs(5)).await;
        }
    }
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut state) = self.state.lock() {
            for (_, mut r) in state.running.drain() {
                let _ = r.child.start_kill();
            }
        }
    }
}

async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SIGTERM through kill(1): the standard library only offers SIGKILL.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

async fn run(client: Client, config: PodRunnerConfig, state: Arc<Mutex<State>>) {
    let pods: Api<Pod> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let watch_config = watcher::Config::default().labels(&config.selector);
    let mut events = watcher::watcher(pods, watch_config).boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(Event::Delete(pod)) => {
                stop(&state, &pod).await;
                state
                    .lock()
                    .expect("state")
                    .stopped
                    .remove(&key(&pod.namespace().unwrap_or_default(), &pod.name_any()));
                continue;
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(err) => {
                tracing::warn!(%err, "pod watch error; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let k = key(&pod.namespace().unwrap_or_default(), &pod.name_any());
        if pod.metadata.deletion_timestamp.is_some() {
            stop(&state, &pod).await;
            continue;
        }
        let scheduled = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some();
        let known = {
            let s = state.lock().expect("state");
            s.running.contains_key(&k) || s.stopped.contains(&k)
        };
        if !scheduled || known {
            continue;
        }
        match start_pod(&client, &config, &pod).await {
            Ok(running) => {
                let mut s = state.lock().expect("state");
                s.errors.remove(&k);
                s.running.insert(k, running);
            }
            Err(err) => {
                tracing::warn!(pod = %k, %err, "cannot run pod locally");
                state
                    .lock()
                    .expect("state")
                    .errors
                    .insert(k, err.to_string());
            }
        }
    }
}

async fn stop(state: &Arc<Mutex<State>>, pod: &Pod) {
    let k = key(&pod.namespace().unwrap_or_default(), &pod.name_any());
    let running = state.lock().expect("state").running.remove(&k);
    if let Some(mut r) = running {
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .clamp(1, 30);
        terminate(&mut r.child, Duration::from_secs(grace as u64)).await;
    }
}

/// Everything a pod's first container needs, resolved from the API.
struct Prepared {
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

async fn start_pod(
    client: &Client,
    config: &PodRunnerConfig,
    pod: &Pod,
) -> Result<Running, BoxError> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
    let container = spec.containers.first().ok_or("pod has no containers")?;
    let root = config.workdir.join(&namespace).join(&name);
    std::fs::create_dir_all(&root)?;

    let mounts = write_volumes(client, config, pod, container, &root).await?;
    let prepared = prepare(client, pod, container, &mounts).await?;

    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let log_path = root.join("container.log");
    let log = std::fs::File::create(&log_path)?;
    let mut command = Command::new(&config.binary);
    command
        .args(&prepared.args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(&prepared.env)
        .env(LISTEN_ENV, addr.to_string())
        .env("KUBECONFIG", root.join("kubeconfig"))
        .envs(config.extra_env.iter().cloned())
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", config.binary.display()))?;
    let pid = child.id().unwrap_or_default();
    tracing::info!(pod = %key(&namespace, &name), %addr, pid, "started pod locally");
    Ok(Running {
        info: LocalPod {
            namespace,
            name,
            addr,
            pid,
            log: log_path,
        },
        child,
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes the container's volumes under `root` and the pod's kubeconfig; returns the
/// mount paths (container path → local path), longest first.
async fn write_volumes(
    client: &Client,
    config: &PodRunnerConfig,
    pod: &Pod,
    container: &Container,
    root: &Path,
) -> Result<Vec<(String, PathBuf)>, BoxError> {
    let namespace = pod.namespace().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
    let volumes: HashMap<&str, &Volume> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let token = mint_token(client, pod).await?;
    write_kubeconfig(
        &config.kubeconfig,
        &token,
        &namespace,
        &root.join("kubeconfig"),
    )?;

    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let local = root
            .join("fs")
            .join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&local)?;
        let volume = volumes
            .get(mount.name.as_str())
            .ok_or_else(|| format!("volume {} is not defined", mount.name))?;
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(cm) = &volume.config_map {
            let data =
                config_map_data(client, &namespace, &cm.name, cm.optional.unwrap_or(false)).await?;
            files.extend(select(data, cm.items.as_deref()));
        }
        if let Some(secret) = &volume.secret {
            let secret_name = secret.secret_name.clone().unwrap_or_default();
            let data = secret_data(
                client,
                &namespace,
                &secret_name,
                secret.optional.unwrap_or(false),
            )
            .await?;
            files.extend(select(data, secret.items.as_deref()));
        }
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(sat) = &source.service_account_token {
                    files.insert(sat.path.clone(), token.clone().into_bytes());
                }
                if let Some(cm) = &source.config_map {
                    let data =
                        config_map_data(client, &namespace, &cm.name, cm.optional.unwrap_or(false))
                            .await?;
                    files.extend(select(data, cm.items.as_deref()));
                }
                if let Some(secret) = &source.secret {
                    let data = secret_data(
                        client,
                        &namespace,
                        &secret.name,
                        secret.optional.unwrap_or(false),
                    )
                    .await?;
                    files.extend(select(data, secret.items.as_deref()));
                }
                if let Some(downward) = &source.downward_api {
                    for item in downward.items.iter().flatten() {
                        if let Some(field) = &item.field_ref {
                            files.insert(
                                item.path.clone(),
                                field_value(pod, &field.field_path)?.into_bytes(),
                            );
                        }
                    }
                }
            }
        }
        for (path, content) in files {
            let target = match &mount.sub_path {
                Some(sub) if !sub.is_empty() => {
                    if &path != sub {
                        continue;
                    }
                    local.clone()
                }
                _ => local.join(&path),
            };
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if target.is_dir() {
                std::fs::remove_dir(&target)?;
            }
            std::fs::write(&target, content)?;
        }
        mounts.push((mount.mount_path.clone(), local));
    }
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    Ok(mounts)
}

fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        None => data,
        Some(items) => items
            .iter()
            .filter_map(|i| data.get(&i.key).map(|v| (i.path.clone(), v.clone())))
            .collect(),
    }
}

async fn config_map_data(
    client: &Client,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, BoxError> {
    match Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
    {
        Some(cm) => {
            let mut out: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            out.extend(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, ByteString(v))| (k, v)),
            );
            Ok(out)
        }
        None if optional => Ok(BTreeMap::new()),
        None => Err(format!("ConfigMap {namespace}/{name} not found").into()),
    }
}

async fn secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, BoxError> {
    match Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
    {
        Some(secret) => {
            let mut out: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, ByteString(v))| (k, v))
                .collect();
            out.extend(
                secret
                    .string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            );
            Ok(out)
        }
        None if optional => Ok(BTreeMap::new()),
        None => Err(format!("Secret {namespace}/{name} not found").into()),
    }
}

/// A token for the pod's ServiceAccount, bound to the pod like a kubelet's.
async fn mint_token(client: &Client, pod: &Pod) -> Result<String, BoxError> {
    let namespace = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(24 * 3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(pod.name_any()),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let response = Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token for ServiceAccount {namespace}/{sa}: {e}"))?;
    response
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| format!("no token issued for ServiceAccount {namespace}/{sa}").into())
}

/// A kubeconfig with the harness's cluster entry and the pod's token as its only user.
fn write_kubeconfig(
    harness: &Path,
    token: &str,
    namespace: &str,
    target: &Path,
) -> Result<(), BoxError> {
    let kc = kube::config::Kubeconfig::read_from(harness)?;
    let context = kc
        .contexts
        .iter()
        .find(|c| c.name == HARNESS_CONTEXT)
        .and_then(|c| c.context.clone())
        .ok_or("harness kubeconfig lacks its context")?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .cloned()
        .ok_or("harness kubeconfig lacks its cluster")?;
    let yaml = serde_yaml::to_string(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": cluster.name, "cluster": cluster.cluster }],
        "users": [{ "name": "pod", "user": { "token": token } }],
        "contexts": [{ "name": "pod", "context": { "cluster": cluster.name, "user": "pod", "namespace": namespace } }],
        "current-context": "pod",
    }))?;
    std::fs::write(target, yaml)?;
    Ok(())
}

/// Resolves the container's arguments and environment.
async fn prepare(
    client: &Client,
    pod: &Pod,
    container: &Container,
    mounts: &[(String, PathBuf)],
) -> Result<Prepared, BoxError> {
    let namespace = pod.namespace().unwrap_or_default();
    let rewrite = |value: &str| -> String {
        for (mount, local) in mounts {
            if let Some(rest) = value.strip_prefix(mount.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", local.display());
            }
        }
        value.to_owned()
    };
    // The image's entrypoint is the local binary; a `command` beyond its first word
    // becomes leading arguments.
    let mut args: Vec<String> = container
        .command
        .iter()
        .flatten()
        .skip(1)
        .map(|a| rewrite(a))
        .collect();
    args.extend(container.args.iter().flatten().map(|a| rewrite(a)));

    let mut env = BTreeMap::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let data = if let Some(cm) = &source.config_map_ref {
            config_map_data(client, &namespace, &cm.name, cm.optional.unwrap_or(false)).await?
        } else if let Some(secret) = &source.secret_ref {
            secret_data(
                client,
                &namespace,
                &secret.name,
                secret.optional.unwrap_or(false),
            )
            .await?
        } else {
            BTreeMap::new()
        };
        for (k, v) in data {
            env.insert(
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(client, pod, var).await? {
            env.insert(var.name.clone(), rewrite(&value));
        }
    }
    Ok(Prepared { args, env })
}

async fn env_value(client: &Client, pod: &Pod, var: &EnvVar) -> Result<Option<String>, BoxError> {
    let namespace = pod.namespace().unwrap_or_default();
    let Some(from) = &var.value_from else {
        return Ok(Some(var.value.clone().unwrap_or_default()));
    };
    if let Some(sel) = &from.secret_key_ref {
        let optional = sel.optional.unwrap_or(false);
        let data = secret_data(client, &namespace, &sel.name, optional).await?;
        return match data.get(&sel.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional => Ok(None),
            None => Err(format!("Secret {namespace}/{} has no key {}", sel.name, sel.key).into()),
        };
    }
    if let Some(sel) = &from.config_map_key_ref {
        let optional = sel.optional.unwrap_or(false);
        let data = config_map_data(client, &namespace, &sel.name, optional).await?;
        return match data.get(&sel.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional => Ok(None),
            None => {
                Err(format!("ConfigMap {namespace}/{} has no key {}", sel.name, sel.key).into())
            }
        };
    }
    if let Some(field) = &from.field_ref {
        return Ok(Some(field_value(pod, &field.field_path)?));
    }
    Ok(None)
}

/// The downward-API fields a kubelet offers, as far as they make sense locally.
fn field_value(pod: &Pod, path: &str) -> Result<String, BoxError> {
    let spec = pod.spec.as_ref();
    let value = match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.hostIP" => "127.0.0.1".to_owned(),
        other => {
            if let Some(label) = other
                .strip_prefix("metadata.labels['")
                .and_then(|s| s.strip_suffix("']"))
            {
                pod.labels().get(label).cloned().unwrap_or_default()
            } else if let Some(ann) = other
                .strip_prefix("metadata.annotations['")
                .and_then(|s| s.strip_suffix("']"))
            {
                pod.annotations().get(ann).cloned().unwrap_or_default()
            } else {
                return Err(format!("downward API field {other} is not supported locally").into());
            }
        }
    };
    Ok(value)
}
