//! A fresh namespace per test, deleted when the test ends (also when it panics).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};

use crate::cluster::{TestCluster, client_for};

/// Label on every namespace the tests create, for cleaning up after a crash.
pub const TEST_LABEL: &str = "switchboard.dev/e2e";

/// A namespace that is deleted on drop.
pub struct TestNamespace {
    name: String,
    kubeconfig: PathBuf,
    keep: bool,
}

impl TestNamespace {
    pub(crate) async fn create(cluster: &TestCluster, test: &str) -> TestNamespace {
        let slug: String = test
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let name = format!("{}-{suffix}", slug.trim_matches('-'));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { TEST_LABEL: "true" } }
        }))
        .expect("namespace literal");
        Api::<Namespace>::all(cluster.client())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace {
            name,
            kubeconfig: cluster.kubeconfig().to_path_buf(),
            keep: std::env::var_os("SWITCHBOARD_KEEP_NAMESPACES").is_some(),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "keeping namespace {} (SWITCHBOARD_KEEP_NAMESPACES)",
                self.name
            );
            return;
        }
        // Drop cannot await, and the test's runtime may be gone: delete from a thread
        // with a runtime and a client of its own.
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = client_for(&kubeconfig).await?;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete test namespace {}", self.name);
        }
    }
}
