//! End-to-end: the AgentDeployment fields whose effect no other test showed reach
//! what the pods run: `database.mode: External` with `externalSecretRef` (no
//! database made, the pods read the tenant's Secret), `scheduling.affinity`,
//! `resources`, `systemPromptFrom` (read from the ConfigMap and followed when it
//! changes) and each model's sampling settings (`temperature`, `topP`,
//! `maxOutputTokens`, fallbacks included) and `acceptsImages` (unset: accepted)
//! in the rendered runtime file.

mod support;

use std::time::Duration;

use crds::conditions::DATABASE_READY;
use crds::runtime_config::RuntimeConfig;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::{Value, json};
use support::{World, databases_like, db_prefix, eventually};

const MINUTE: Duration = Duration::from_secs(60);
const PROMPT_KEY: &str = "support.txt";

async fn rendered(world: &World, agent: &str) -> Option<RuntimeConfig> {
    let cm: ConfigMap = world
        .api()
        .get_opt(&format!("{agent}-config"))
        .await
        .ok()??;
    let text = cm.data?.get("agent.yaml")?.clone();
    RuntimeConfig::from_yaml(&text).ok()
}

fn prompt_map(text: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "prompts"},
        "data": {PROMPT_KEY: text},
    })
}

#[tokio::test]
async fn every_field_reaches_the_pods() {
    let world = World::new("op-fields").await;
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    world
        .apply::<ConfigMap>(prompt_map("You answer from the prompt file."))
        .await;
    world
        .apply::<Secret>(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tenant-db"},
            "stringData": {"uri": "postgres://tenant:secret@127.0.0.1:5432/tenant"},
        }))
        .await;
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "type", "operator": "In", "values": ["kwok"]}
        ]}]
    }}});
    let resources = json!({
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "96Mi"},
    });
    world
        .apply::<crds::AgentDeployment>(json!({
            "apiVersion": "switchboard.dev/v1alpha1",
            "kind": "AgentDeployment",
            "metadata": {"name": "fields"},
            "spec": {
                "model": {"provider": "openai", "name": "gpt-4o-mini",
                          "baseUrl": "http://mock-llm:8080/v1",
                          "temperature": 0.2, "topP": 0.8, "maxOutputTokens": 321},
                "fallbacks": [{"provider": "openai", "name": "backup",
                               "baseUrl": "http://mock-llm:8080/v1",
                               "temperature": 0.9, "topP": 0.4, "maxOutputTokens": 99,
                               "acceptsImages": false}],
                "systemPromptFrom": {"name": "prompts", "key": PROMPT_KEY},
                "database": {"mode": "External", "externalSecretRef": {"name": "tenant-db"}},
                "resources": resources,
                "scheduling": {
                    "affinity": affinity,
                    "tolerations": [{"key": "switchboard.dev/kwok", "operator": "Exists",
                                     "effect": "NoSchedule"}],
                },
            },
        }))
        .await;

    // The rendered runtime file: the prompt from the ConfigMap, each model's settings.
    let config = eventually(MINUTE, "the rendered runtime file", || async {
        rendered(&world, "fields").await
    })
    .await;
    assert_eq!(
        config.system_prompt.as_deref(),
        Some("You answer from the prompt file.")
    );
    assert_eq!(
        (
            config.model.temperature,
            config.model.top_p,
            config.model.max_output_tokens
        ),
        (Some(0.2), Some(0.8), Some(321))
    );
    let backup = &config.fallbacks[0];
    assert_eq!(
        (backup.temperature, backup.top_p, backup.max_output_tokens),
        (Some(0.9), Some(0.4), Some(99))
    );
    assert!(config.model.accepts_images, "unset: images accepted");
    assert!(
        !backup.accepts_images,
        "acceptsImages: false reaches the file"
    );

    // The pods: the tenant's database Secret, the resources and the affinity as given.
    let deployment: Deployment = eventually(MINUTE, "the Deployment", || async {
        world.api().get_opt("fields").await.ok()?
    })
    .await;
    let pod = deployment.spec.template.spec.expect("pod spec");
    assert_eq!(
        serde_json::to_value(&pod.affinity).expect("json"),
        affinity,
        "scheduling.affinity"
    );
    let container = &pod.containers[0];
    assert_eq!(
        serde_json::to_value(&container.resources).expect("json"),
        resources,
        "resources"
    );
    let database_url = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "DATABASE_URL")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
        .expect("DATABASE_URL from a Secret");
    assert_eq!(
        (database_url.name.as_str(), database_url.key.as_str()),
        ("tenant-db", "uri")
    );

    // External: ready from the tenant's Secret, and nothing made in Postgres.
    world
        .wait_condition("fields", DATABASE_READY, "True", MINUTE)
        .await;
    assert!(
        databases_like(&db_prefix(world.name())).await.is_empty(),
        "no managed database for an External one"
    );
    let generated: Option<Secret> = world.api().get_opt("fields-db").await.expect("read");
    assert!(generated.is_none(), "no generated database Secret");

    // A changed prompt in the ConfigMap reaches the file without touching the agent.
    world
        .apply::<ConfigMap>(prompt_map("You answer from the second prompt."))
        .await;
    eventually(MINUTE, "the new prompt rendered", || async {
        let config = rendered(&world, "fields").await?;
        (config.system_prompt.as_deref() == Some("You answer from the second prompt."))
            .then_some(())
    })
    .await;
}
