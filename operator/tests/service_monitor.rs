//! End-to-end: without the monitoring.coreos.com CRD a condition says so and nothing
//! else fails; once the real ServiceMonitor CRD (from the prometheus-operator Go
//! module, via hack/servicemonitor-crd.sh) is installed, a ServiceMonitor is applied
//! (without waiting for a resync), and one deleted by hand comes back at once.

mod support;

use std::time::Duration;

use crds::conditions::{AVAILABLE, DATABASE_READY, SERVICE_MONITOR_READY};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use support::{World, eventually};

fn servicemonitor_crd() -> CustomResourceDefinition {
    let script = switchboard_tests::cluster::repo_root().join("hack/servicemonitor-crd.sh");
    let out = std::process::Command::new(script)
        .output()
        .expect("hack/servicemonitor-crd.sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::from_slice(&out.stdout).expect("the script prints a CRD")
}

#[tokio::test]
async fn service_monitor_condition_without_the_crd_and_object_with_it() {
    let world = World::new("op-sm").await;
    let crds: Api<CustomResourceDefinition> = Api::all(world.client());
    let crd_name = "servicemonitors.monitoring.coreos.com";
    if crds.get_opt(crd_name).await.unwrap().is_some() {
        crds.delete(crd_name, &DeleteParams::default())
            .await
            .unwrap();
        eventually(Duration::from_secs(60), "the CRD gone", || async {
            crds.get_opt(crd_name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    // The default resync (600 s): what happens below happens through the watches.
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    world.apply_agent("mon", json!({ "replicas": 1 })).await;
    world
        .wait_condition("mon", AVAILABLE, "True", Duration::from_secs(120))
        .await;
    world
        .wait_condition("mon", DATABASE_READY, "True", Duration::from_secs(60))
        .await;
    let (status, reason) = world.condition("mon", SERVICE_MONITOR_READY).await.unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CRDNotInstalled")
    );

    world.cluster.apply_crd(&servicemonitor_crd()).await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    );
    let monitors: Api<DynamicObject> =
        Api::namespaced_with(world.client(), world.name(), &resource);
    let monitor = eventually(Duration::from_secs(90), "a ServiceMonitor", || async {
        monitors.get_opt("mon").await.ok()?
    })
    .await;
    assert_eq!(monitor.data["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(
        monitor.metadata.owner_references.unwrap()[0].kind,
        "AgentDeployment"
    );
    world
        .wait_condition(
            "mon",
            SERVICE_MONITOR_READY,
            "True",
            Duration::from_secs(60),
        )
        .await;
    // Deleted by hand, it comes back: the operator watches the ServiceMonitors it
    // made while the CRD is installed.
    let uid = monitor.metadata.uid.clone();
    monitors
        .delete("mon", &DeleteParams::default())
        .await
        .unwrap();
    let again = eventually(
        Duration::from_secs(30),
        "the deleted ServiceMonitor made again",
        || async {
            let m = monitors.get_opt("mon").await.ok()??;
            (m.metadata.uid != uid).then_some(m)
        },
    )
    .await;
    assert_eq!(again.data["spec"]["endpoints"][0]["port"], "http");
    // Turned off, the ServiceMonitor goes.
    world
        .apply_agent(
            "mon",
            json!({ "replicas": 1, "monitoring": { "serviceMonitor": { "enabled": false } } }),
        )
        .await;
    eventually(
        Duration::from_secs(60),
        "the ServiceMonitor deleted",
        || async { monitors.get_opt("mon").await.ok()?.is_none().then_some(()) },
    )
    .await;
    world
        .agents()
        .delete("mon", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "the agent gone", || async {
        world
            .agents()
            .get_opt("mon")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
