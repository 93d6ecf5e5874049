//! End-to-end: a ChatChannel is bound to its agent; it is not Accepted while the agent
//! is missing and becomes Ready, with the agent's endpoint plus its path, once the agent
//! exists and is Ready.

mod support;

use std::time::Duration;

use crds::ChatChannel;
use crds::condition::find_condition;
use crds::conditions::{ACCEPTED, AGENT_READY, AVAILABLE, READY};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use support::{World, eventually};

const MINUTE: Duration = Duration::from_secs(60);

async fn channel_condition(world: &World, type_: &str) -> Option<(String, String)> {
    let c = world.channels().get_opt("web").await.ok()??;
    let cond = find_condition(&c.status?.conditions, type_)?.clone();
    Some((cond.status, cond.reason))
}

#[tokio::test]
async fn channel_waits_for_its_agent_and_becomes_ready_with_it() {
    let world = World::new("op-chan").await;
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    world
        .apply::<ChatChannel>(json!({
            "apiVersion": "switchboard.dev/v1alpha1",
            "kind": "ChatChannel",
            "metadata": { "name": "web" },
            "spec": { "agentRef": { "name": "helper" }, "type": "web" },
        }))
        .await;
    let accepted = eventually(MINUTE, "Accepted=False", || async {
        channel_condition(&world, ACCEPTED)
            .await
            .filter(|(s, _)| s == "False")
    })
    .await;
    assert_eq!(accepted.1, "AgentNotFound");
    assert_eq!(channel_condition(&world, READY).await.unwrap().0, "False");

    world.apply_agent("helper", json!({ "replicas": 1 })).await;
    eventually(MINUTE, "Accepted=True", || async {
        channel_condition(&world, ACCEPTED)
            .await
            .filter(|(s, _)| s == "True")
    })
    .await;
    world
        .wait_condition("helper", AVAILABLE, "True", 2 * MINUTE)
        .await;
    assert_eq!(
        channel_condition(&world, READY).await.unwrap().0,
        "False",
        "agent not Ready yet"
    );

    // The runtime pod reports itself ready: the agent turns Ready, and so does the channel.
    let pods: Api<Pod> = world.api();
    let pod = eventually(MINUTE, "a runtime pod", || async {
        pods.list(&ListParams::default().labels("app.kubernetes.io/instance=helper"))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    world
        .report_runtime("helper", &pod.name_any(), true, true)
        .await;
    world.wait_condition("helper", READY, "True", MINUTE).await;
    eventually(MINUTE, "channel Ready", || async {
        channel_condition(&world, READY)
            .await
            .filter(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(
        channel_condition(&world, AGENT_READY).await.unwrap().0,
        "True"
    );
    let endpoint = world
        .channels()
        .get("web")
        .await
        .unwrap()
        .status
        .unwrap()
        .endpoint
        .unwrap();
    assert_eq!(
        endpoint,
        format!(
            "http://helper.{}.svc.cluster.local:8080/channels/web",
            world.name()
        )
    );

    world
        .agents()
        .delete("helper", &DeleteParams::default())
        .await
        .unwrap();
    eventually(MINUTE, "channel no longer Accepted", || async {
        channel_condition(&world, ACCEPTED)
            .await
            .filter(|(s, _)| s == "False")
    })
    .await;
}
