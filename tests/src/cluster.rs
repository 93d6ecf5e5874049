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
