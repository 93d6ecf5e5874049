//! End-to-end: rotating a Secret the runtime pods read through their environment (a
//! model key) rolls them: the digest of the values on the pod template changes (and
//! never shows a value). The key Secrets (client, admin, channel keys) are mounted
//! files the runtime re-reads: rotating one rolls nothing.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{World, eventually};

const ANNOTATION: &str = "switchboard.dev/secrets-hash";

async fn deployment(world: &World) -> Option<Deployment> {
    world.api().get_opt("rotate").await.ok()?
}

async fn digest(world: &World) -> Option<String> {
    deployment(world)
        .await?
        .spec
        .template
        .metadata?
        .annotations?
        .get(ANNOTATION)
        .cloned()
}

#[tokio::test]
async fn rotating_a_model_key_rolls_the_pods_and_a_client_key_does_not() {
    let world = World::new("op-rotate").await;
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    world
        .apply::<Secret>(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "upstream" },
            "stringData": { "key": "sk-model-1" },
        }))
        .await;
    world
        .apply_agent(
            "rotate",
            json!({
                "replicas": 1,
                "model": { "apiKeySecretRef": { "name": "upstream", "key": "key" } },
            }),
        )
        .await;
    let before = eventually(Duration::from_secs(60), "a secrets digest", || async {
        digest(&world).await
    })
    .await;
    let generation = deployment(&world)
        .await
        .and_then(|d| d.metadata.generation)
        .expect("generation");
    let secrets = world.api::<Secret>();
    let old = secrets.get("rotate-api-key").await.unwrap();
    let old_key = String::from_utf8(old.data.unwrap()["api-key"].0.clone()).unwrap();
    assert!(!before.contains(&old_key));

    // The client key first: the operator sees the change (it watches its Secrets)
    // and leaves the pods alone.
    secrets
        .patch(
            "rotate-api-key",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "api-key": "sb-rotated-key" } })),
        )
        .await
        .unwrap();
    // Then the model key: this one rolls the pods.
    secrets
        .patch(
            "upstream",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "key": "sk-model-2" } })),
        )
        .await
        .unwrap();
    let after = eventually(Duration::from_secs(60), "a new digest", || async {
        digest(&world).await.filter(|d| *d != before)
    })
    .await;
    assert!(!after.contains("sb-rotated-key") && !after.contains("sk-model-2"));
    let rolled = deployment(&world).await.expect("deployment");
    assert_eq!(
        rolled.metadata.generation,
        Some(generation + 1),
        "one rollout: the model key's, none for the client key"
    );
    // The client key is a file in the keys volume, not an environment variable.
    let pod = rolled.spec.template.spec.unwrap();
    let env = pod.containers[0].env.clone().unwrap_or_default();
    assert!(env.iter().all(|e| e.name != "SWITCHBOARD_API_KEY"));
    let keys = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "keys")
        .and_then(|v| v.projected)
        .expect("the keys volume");
    let secrets_mounted: Vec<String> = keys
        .sources
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| Some(s.secret?.name))
        .collect();
    assert_eq!(secrets_mounted, ["rotate-api-key", "rotate-admin-key"]);
}
