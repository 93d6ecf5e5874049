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

/// A channel with `clientKey: Channel` gets a key of its own: a Secret the operator
/// creates (owned by the channel, named in its status) and mounts into the agent's
/// pods; the agent gets its admin key Secret.
#[tokio::test]
async fn a_channel_with_its_own_key_gets_a_secret_mounted_into_the_pods() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Secret;

    let world = World::new("op-chkey").await;
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    world
        .apply_agent(
            "keyed",
            json!({ "replicas": 1, "defaultChannel": "partners" }),
        )
        .await;
    world
        .apply::<ChatChannel>(json!({
            "apiVersion": "switchboard.dev/v1alpha1",
            "kind": "ChatChannel",
            "metadata": { "name": "partners" },
            "spec": { "agentRef": { "name": "keyed" }, "type": "openai", "clientKey": "Channel" },
        }))
        .await;
    let name = eventually(MINUTE, "status.clientKeySecret", || async {
        world
            .channels()
            .get_opt("partners")
            .await
            .ok()??
            .status?
            .client_key_secret
    })
    .await;
    assert_eq!(name, "partners-channel-key");
    world
        .wait_condition("keyed", "DefaultChannel", "True", MINUTE)
        .await;
    let secrets: Api<Secret> = world.api();
    let secret = eventually(MINUTE, "the channel's key Secret", || async {
        secrets.get_opt(&name).await.ok()?
    })
    .await;
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ChatChannel", "partners")
    );
    let key = String::from_utf8(secret.data.unwrap()["api-key"].0.clone()).unwrap();
    assert!(key.starts_with("sb-ch-") && key.len() > 20);
    let agent_key = String::from_utf8(
        secrets.get("keyed-api-key").await.unwrap().data.unwrap()["api-key"]
            .0
            .clone(),
    )
    .unwrap();
    assert_ne!(key, agent_key);
    eventually(MINUTE, "the admin key Secret", || async {
        secrets.get_opt("keyed-admin-key").await.ok()?
    })
    .await;
    let admin_named = eventually(MINUTE, "status.secrets.adminKey", || async {
        world
            .agents()
            .get_opt("keyed")
            .await
            .ok()??
            .status?
            .secrets?
            .admin_key
    })
    .await;
    assert_eq!(admin_named, "keyed-admin-key");
    // The pods get it as the file the runtime reads, and the rendered config names
    // the default channel.
    let deployments: Api<Deployment> = world.api();
    eventually(MINUTE, "the channel key mounted", || async {
        let d = deployments.get_opt("keyed").await.ok()??;
        let volumes = d.spec.template.spec?.volumes?;
        let keys = volumes.into_iter().find(|v| v.name == "keys")?.projected?;
        keys.sources?
            .into_iter()
            .filter_map(|s| s.secret)
            .any(|s| {
                s.name == "partners-channel-key"
                    && s.items.is_some_and(|i| i[0].path == "channel.partners")
            })
            .then_some(())
    })
    .await;
    let config: k8s_openapi::api::core::v1::ConfigMap =
        world.api().get("keyed-config").await.unwrap();
    let text = &config.data.unwrap()["agent.yaml"];
    assert!(text.contains("defaultChannel: partners"), "{text}");
    assert!(
        !text.contains(&key) && !text.contains(&agent_key),
        "no key in the config"
    );
}
