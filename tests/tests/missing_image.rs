//! An image that is not on the node fails at once, with an event that says so, and
//! without any traffic leaving this machine: the node's containerd sends registry
//! requests to a closed loopback proxy (see `hack/node-lib.sh`). The image names
//! below use the reserved `.invalid` domain, so they could never resolve anyway.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use switchboard_tests::{TestCluster, eventually};

const MISSING: &str = "registry.invalid/switchboard/missing:0.0.0";

#[tokio::test]
async fn a_missing_image_fails_fast_with_a_clear_event() {
    let cluster = TestCluster::connect().await;
    let ns = cluster.namespace("missing-image").await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns.name());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "missing" },
        "spec": {
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "c", "image": MISSING, "imagePullPolicy": "IfNotPresent",
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } }
            }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    // The kubelet reports the failure on the pod within seconds, not after a timeout.
    let waiting = eventually(Duration::from_secs(60), "the pull to fail", || async {
        let p = pods.get("missing").await.ok()?;
        let state = p.status?.container_statuses?.first()?.state.clone()?;
        let waiting = state.waiting?;
        matches!(
            waiting.reason.as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
        .then_some(waiting)
    })
    .await;
    let node = pods
        .get("missing")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.node_name)
        .unwrap_or_default();
    assert!(!node.starts_with("kwok-"), "scheduled on {node}");

    // The event names the image and the refused (loopback) registry connection.
    let events: Api<Event> = Api::namespaced(cluster.client(), ns.name());
    let message = eventually(Duration::from_secs(30), "a Failed event", || async {
        events
            .list(&ListParams::default().fields("involvedObject.name=missing"))
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Failed"))
            .find_map(|e| e.message.filter(|m| m.contains("Failed to pull image")))
    })
    .await;
    assert!(message.contains(MISSING), "{message}");
    assert!(
        message.contains("127.0.0.1:9") && message.contains("connection refused"),
        "the pull did not stop at the loopback proxy: {message} (pod: {waiting:?})"
    );
}

/// An AgentDeployment whose `spec.image` is not on the node gets a condition saying the
/// image cannot be pulled, from its pod's real status, instead of a silent wait.
#[tokio::test]
async fn an_agent_whose_image_is_missing_gets_a_condition_saying_so() {
    use crds::AgentDeployment;
    use kube::api::{Patch, PatchParams};
    use switchboard_tests::cluster::TEST_FIELD_MANAGER;

    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("missing-agent-image").await;
    let logs = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("missing-image-{}", ns.name()));
    std::fs::create_dir_all(&logs).unwrap();
    let _operator = cluster.start_operator(ns.name(), &logs.join("operator.log"));
    let agents: Api<AgentDeployment> = Api::namespaced(cluster.client(), ns.name());
    agents
        .patch(
            "lost",
            &PatchParams::apply(TEST_FIELD_MANAGER),
            &Patch::Apply(json!({
                "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentDeployment",
                "metadata": { "name": "lost" },
                "spec": {
                    "model": { "provider": "openai", "name": "m", "baseUrl": "http://198.18.0.1:9/v1" },
                    "image": MISSING,
                    "replicas": 1,
                    "database": { "mode": "Managed", "reclaimPolicy": "Delete" }
                }
            })),
        )
        .await
        .unwrap();
    let condition = eventually(
        Duration::from_secs(120),
        "a condition about the image",
        || async {
            let a = agents.get("lost").await.ok()?;
            a.status?.conditions.into_iter().find(|c| {
                c.status == "False"
                    && c.message.contains(MISSING)
                    && c.message.to_lowercase().contains("pull")
            })
        },
    )
    .await;
    assert!(!condition.reason.is_empty(), "{condition:?}");
}
