//! A handle on the harness's local control plane. It refuses to run against any
//! other cluster: the kubeconfig must be the one `make cluster-up` wrote, and its
//! context must be the harness's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

use crate::namespace::TestNamespace;

/// The kubeconfig context the harness writes.
pub const HARNESS_CONTEXT: &str = "switchboard-harness";
/// Field manager used by test fixtures.
pub const TEST_FIELD_MANAGER: &str = "switchboard-tests";

/// The local test cluster.
#[derive(Clone)]
pub struct TestCluster {
    client: Client,
    kubeconfig: PathBuf,
}

impl TestCluster {
    /// Connects to the harness cluster, or panics with what to run instead.
    pub async fn connect() -> TestCluster {
        let kubeconfig = harness_kubeconfig();
        let client = client_for(&kubeconfig).await.unwrap_or_else(|e| {
            panic!("cannot reach the harness cluster ({e}); is `make cluster-up` running?")
        });
        TestCluster { client, kubeconfig }
    }

    /// A client of the harness cluster.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The harness kubeconfig path.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A fresh namespace named after the test, deleted when the handle drops.
    pub async fn namespace(&self, test: &str) -> TestNamespace {
        TestNamespace::create(self, test).await
    }

    /// Runs the harness's `kubectl` against this cluster (never the user's context).
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .arg("--context")
            .arg(HARNESS_CONTEXT)
            .args(args)
            .output()
            .expect("kubectl runs (the harness puts it on PATH: eval \"$(make -s cluster-env)\")")
    }

    /// Waits (3 minutes at most) until `kubectl wait --for=condition=Ready` sees
    /// every AgentDeployment of `agents` in `namespace` Ready; else panics with
    /// kubectl's error, where the operator's log is, and the namespace's pods and
    /// events.
    pub fn wait_agents_ready(&self, namespace: &str, agents: &[&str], operator_log: &Path) {
        let mut args = vec!["wait".to_owned(), "--for=condition=Ready".to_owned()];
        args.extend(agents.iter().map(|a| format!("agd/{a}")));
        args.extend([
            "-n".to_owned(),
            namespace.to_owned(),
            "--timeout=180s".to_owned(),
        ]);
        let waited = self.kubectl(&args);
        assert!(
            waited.status.success(),
            "agents not Ready: {}\noperator log in {}; pods: {}\nnodes: {}",
            String::from_utf8_lossy(&waited.stderr),
            operator_log.display(),
            self.kubectl(["get", "pods,events", "-n", namespace, "-o", "wide"])
                .stdout
                .escape_ascii(),
            self.nodes_summary()
        );
    }

    /// Waits (3 minutes at most) until the real node (the one without the kwok
    /// taint) is Ready and takes pods: a test that churned many pods can leave it
    /// briefly NotReady or under pressure, and the next test's pods would sit
    /// Pending without saying why. Panics with the nodes' taints and conditions.
    pub fn wait_real_node_schedulable(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            let out = self.kubectl(["get", "nodes", "-o", "json"]);
            let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let schedulable = nodes["items"].as_array().is_some_and(|items| {
                items.iter().any(|node| {
                    let taints = node["spec"]["taints"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let kwok = taints.iter().any(|t| t["key"] == KWOK_TAINT);
                    let ready = node["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                    !kwok && ready && taints.iter().all(|t| t["effect"] == "PreferNoSchedule")
                })
            });
            if schedulable {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the real node did not become Ready and schedulable within 3 minutes:\n{}",
                self.nodes_summary()
            );
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
    }

    /// Each node's taints and conditions (with reasons), for failure messages:
    /// a pod that stays Pending is most often a node's doing.
    pub fn nodes_summary(&self) -> String {
        let out = self.kubectl([
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}: taints={.spec.taints} \
             conditions={range .status.conditions[*]}{.type}={.status}({.reason}: {.message}) {end}{\"\\n\"}{end}",
        ]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Like [`Self::kubectl`], panicking with its stderr unless it succeeds; returns stdout.
    pub fn kubectl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.kubectl(&args);
        assert!(
            out.status.success(),
            "kubectl {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the workspace's `switchboard-operator` binary (built by `cargo build`)
    /// against this cluster, watching `namespace`, with the runtime image imported into
    /// the node and the admin DSN naming the node IP (so the tenants' database URLs
    /// work from pods and from here); its output goes to `log`. Killed on drop.
    pub fn start_operator(&self, namespace: &str, log: &Path) -> tokio::process::Child {
        self.wait_real_node_schedulable();
        let file = std::fs::File::create(log).expect("operator log");
        tokio::process::Command::new(workspace_binary("switchboard-operator"))
            .args(["--namespace", namespace, "--lease-namespace", namespace])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{}", crate::free_port()),
            ])
            .args([
                "--runtime-image",
                &project_image("SWITCHBOARD_AGENT_RUNTIME_IMAGE"),
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("SWITCHBOARD_DATABASE_ADMIN_URL", admin_url_for_pods())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::from(file.try_clone().expect("log fd")))
            .stderr(std::process::Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .expect("the operator starts")
    }

    /// Installs (server-side apply, idempotent) Switchboard's CRDs from `config/crd` and
    /// waits until they are Established.
    pub async fn install_crds(&self) {
        let crd_dir = repo_root().join("config/crd");
        let mut entries: Vec<_> = std::fs::read_dir(&crd_dir)
            .expect("config/crd exists")
            .map(|e| e.expect("readable dir entry").path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(crds::GROUP) && n.ends_with(".yaml"))
            })
            .collect();
        entries.sort();
        assert!(!entries.is_empty(), "no CRDs in {}", crd_dir.display());
        for path in entries {
            let text = std::fs::read_to_string(&path).expect("readable CRD file");
            let crd: CustomResourceDefinition =
                serde_yaml::from_str(&text).expect("config/crd holds CRD YAML");
            self.apply_crd(&crd).await;
        }
    }

    /// Applies one CRD and waits (up to 30 s) until it is Established.
    pub async fn apply_crd(&self, crd: &CustomResourceDefinition) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        let name = crd.metadata.name.clone().expect("CRD has a name");
        api.patch(
            &name,
            &PatchParams::apply(TEST_FIELD_MANAGER).force(),
            &Patch::Apply(crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api, &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
        .expect("watching the CRD");
    }
}

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The harness kubeconfig, after checking that the environment points at it.
fn harness_kubeconfig() -> PathBuf {
    let harness = std::env::var_os("SWITCHBOARD_HARNESS_KUBECONFIG").unwrap_or_else(|| {
        panic!(
            "SWITCHBOARD_HARNESS_KUBECONFIG is not set. End-to-end tests run only against the \
             local harness cluster: run `make test`, or `make cluster-up` and \
             `eval \"$(make -s cluster-env)\"` first."
        )
    });
    let harness = PathBuf::from(harness);
    if let Some(current) = std::env::var_os("KUBECONFIG")
        && Path::new(&current) != harness
    {
        panic!(
            "KUBECONFIG ({}) is not the harness kubeconfig ({}); refusing to run tests against \
             another cluster",
            PathBuf::from(current).display(),
            harness.display()
        );
    }
    harness
}

/// A client for the harness context of the given kubeconfig; fails unless that context
/// exists.
pub async fn client_for(
    kubeconfig: &Path,
) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
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

/// A binary of the workspace, next to the running test's own `target/<profile>/`
/// (`make test` builds them before running tests).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// The harness's admin DSN with its host replaced by the node IP: the operator derives
/// the tenants' database URLs from it, and pods reach Postgres there.
pub fn admin_url_for_pods() -> String {
    let url = crate::database::admin_url();
    for host in ["127.0.0.1", "localhost"] {
        if url.contains(&format!("@{host}:")) {
            return url.replacen(&format!("@{host}:"), &format!("@{}:", node_ip()), 1);
        }
    }
    panic!("the harness's admin DSN does not name a loopback host")
}

/// The real node's IP (`SWITCHBOARD_NODE_IP`, from `make cluster-env`). Pods reach the
/// host's loopback services (Postgres, a mock upstream) at this address and the same
/// port; the cluster's network rules map it to `127.0.0.1` (see `hack/node-lib.sh`).
pub fn node_ip() -> String {
    harness_env("SWITCHBOARD_NODE_IP")
}

/// `addr` (a loopback address of this machine) as pods reach it: the node IP, same port.
pub fn for_pods(addr: std::net::SocketAddr) -> String {
    format!("{}:{}", node_ip(), addr.port())
}

/// The taint that keeps ordinary pods off the kwok nodes (`hack/cluster.sh`).
pub const KWOK_TAINT: &str = "switchboard.dev/kwok";

/// The socket of the real node's containerd (`SWITCHBOARD_CONTAINERD_SOCK`).
pub fn containerd_socket() -> PathBuf {
    PathBuf::from(harness_env("SWITCHBOARD_CONTAINERD_SOCK"))
}

/// The reference of a project image imported into the node's containerd:
/// `SWITCHBOARD_OPERATOR_IMAGE` or `SWITCHBOARD_AGENT_RUNTIME_IMAGE`, from the
/// environment or else from the last `hack/images.sh build --profile debug`.
pub fn project_image(var: &str) -> String {
    if let Ok(image) = std::env::var(var) {
        return image;
    }
    let state = std::env::var_os("SWITCHBOARD_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".switchboard"));
    let file = state.join("images-debug.env");
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (key, value) = line.trim_start_matches("export ").split_once('=')?;
                (key == var).then(|| value.trim().to_owned())
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "{var} is not set and {} does not name it: build and import the images with \
                 `hack/images.sh build --profile debug --import \"$SWITCHBOARD_CONTAINERD_SOCK\"` \
                 (make test does)",
                file.display()
            )
        })
}

fn harness_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run `make cluster-up` and `eval \"$(make -s cluster-env)\"` \
             (the local cluster with its real node)"
        )
    })
}
