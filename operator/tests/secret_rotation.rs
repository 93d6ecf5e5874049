//! End-to-end: rotating a Secret the runtime pods read rolls them: the digest of the
//! values on the pod template changes (and never shows a value).

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{World, eventually};

const ANNOTATION: &str = "switchboard.dev/secrets-hash";

async fn digest(world: &World) -> Option<String> {
    let deployment: Deployment = world.api().get_opt("rotate").await.ok()??;
    deployment
        .spec
        .template
        .metadata?
        .annotations?
        .get(ANNOTATION)
        .cloned()
}

#[tokio::test]
async fn rotating_the_client_key_rolls_the_pods() {
    let world = World::new("op-rotate").await;
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    world.apply_agent("rotate", json!({ "replicas": 1 })).await;
    let before = eventually(Duration::from_secs(60), "a secrets digest", || async {
        digest(&world).await
    })
    .await;
    let secrets = world.api::<Secret>();
    let old = secrets.get("rotate-api-key").await.unwrap();
    let old_key = String::from_utf8(old.data.unwrap()["api-key"].0.clone()).unwrap();
    assert!(!before.contains(&old_key));

    secrets
        .patch(
            "rotate-api-key",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "api-key": "sb-rotated-key" } })),
        )
        .await
        .unwrap();
    let after = eventually(Duration::from_secs(60), "a new digest", || async {
        digest(&world).await.filter(|d| *d != before)
    })
    .await;
    assert!(!after.contains("sb-rotated-key"));
}
