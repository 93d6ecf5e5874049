//! Proves the harness runs a real control plane: the controller manager turns a
//! Deployment into a ReplicaSet and pods, the scheduler binds them to kwok nodes and
//! they reach Running, garbage collection removes them, PodSecurity admission refuses a
//! privileged pod, and a CRD's CEL rule refuses a bad object.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use switchboard_tests::cluster::TEST_FIELD_MANAGER;
use switchboard_tests::{TestCluster, eventually};

#[tokio::test]
async fn deployment_pods_are_scheduled_on_kwok_nodes_run_and_are_garbage_collected() {
    let cluster = TestCluster::connect().await;
    let ns = cluster.namespace("smoke-deployment").await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns.name());
    let replicasets: Api<ReplicaSet> = Api::namespaced(cluster.client(), ns.name());

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                // kwok nodes are tainted for tests that ask for them; nothing runs there,
                // so the image is never pulled.
                "spec": {
                    "nodeSelector": { "type": "kwok" },
                    "tolerations": [{ "key": "switchboard.dev/kwok", "operator": "Exists", "effect": "NoSchedule" }],
                    "containers": [{ "name": "web", "image": "nginx:1.27" }]
                }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    // The deployment controller made a ReplicaSet owned by the Deployment.
    let rs = eventually(Duration::from_secs(30), "a ReplicaSet", || async {
        replicasets
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "web")
    );

    // The scheduler bound both pods to kwok nodes, and kwok ran them.
    let running = eventually(Duration::from_secs(60), "2 Running pods", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        (running.len() == 2).then_some(running)
    })
    .await;
    for pod in &running {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(
            node.starts_with("kwok-"),
            "pod bound to {node:?}, not a kwok node"
        );
        assert!(
            pod.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_some(),
            "pod has an IP"
        );
    }

    // The Deployment reports both replicas available.
    eventually(Duration::from_secs(30), "2 available replicas", || async {
        let d = deployments.get("web").await.ok()?;
        (d.status?.available_replicas == Some(2)).then_some(())
    })
    .await;

    // Deleting the Deployment garbage-collects the ReplicaSet and its pods.
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "pods garbage-collected",
        || async {
            let left = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let rs_left = replicasets.list(&ListParams::default()).await.ok()?;
            (left.items.is_empty() && rs_left.items.is_empty()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn restricted_namespace_refuses_a_privileged_pod() {
    let cluster = TestCluster::connect().await;
    let ns = cluster.namespace("smoke-podsecurity").await;
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    let label =
        json!({ "metadata": { "labels": { "pod-security.kubernetes.io/enforce": "restricted" } } });
    namespaces
        .patch(ns.name(), &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns.name());
    let privileged: Pod = serde_json::from_value(json!({
        "metadata": { "name": "root" },
        "spec": { "containers": [{
            "name": "c", "image": "busybox",
            "securityContext": { "privileged": true }
        }]}
    }))
    .unwrap();
    let err = pods
        .create(&PostParams::default(), &privileged)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("violates PodSecurity \"restricted:latest\"")
            && message.contains("privileged"),
        "unexpected refusal: {message}"
    );

    // A pod that meets the restricted profile is admitted.
    let restricted: Pod = serde_json::from_value(json!({
        "metadata": { "name": "fine" },
        "spec": {
            "nodeSelector": { "type": "kwok" },
            "tolerations": [{ "key": "switchboard.dev/kwok", "operator": "Exists", "effect": "NoSchedule" }],
            "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "c", "image": "busybox",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": { "drop": ["ALL"] }
                }
            }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &restricted)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_crd_from_yaml_is_served_and_its_cel_rule_refuses_a_bad_object() {
    let cluster = TestCluster::connect().await;
    let path = switchboard_tests::cluster::repo_root().join("tests/manifests/smoke-crd.yaml");
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cluster.apply_crd(&crd).await;
    let ns = cluster.namespace("smoke-crd").await;

    let gvk = GroupVersionKind::gvk("smoke.switchboard.dev", "v1", "Widget");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(cluster.client(), ns.name(), &resource);
    let widget = |name: &str, min: i64, max: i64| {
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": "smoke.switchboard.dev/v1", "kind": "Widget",
            "metadata": { "name": name },
            "spec": { "min": min, "max": max }
        }))
        .unwrap()
    };

    let params = PatchParams::apply(TEST_FIELD_MANAGER);
    widgets
        .patch("good", &params, &Patch::Apply(widget("good", 1, 5)))
        .await
        .unwrap();
    let err = widgets
        .patch("bad", &params, &Patch::Apply(widget("bad", 5, 1)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.max must not be below spec.min"),
        "unexpected refusal: {err}"
    );
    assert!(widgets.get_opt("bad").await.unwrap().is_none());
}
