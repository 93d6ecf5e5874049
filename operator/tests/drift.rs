//! End-to-end: children edited by hand (`kubectl patch` of the owned Deployment's
//! security context and labels, of the Service's target port, of the Role's rules) are put
//! back by the operator from the watch event, well within one resync, and once
//! repaired the operator stops writing.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::Role;
use serde_json::json;
use support::{World, eventually, settled};

const MINUTE: Duration = Duration::from_secs(60);

fn read_only_root(d: &Deployment) -> Option<bool> {
    d.spec.template.spec.as_ref()?.containers[0]
        .security_context
        .as_ref()?
        .read_only_root_filesystem
}

fn part_of(d: &Deployment) -> Option<String> {
    d.metadata
        .labels
        .as_ref()?
        .get("app.kubernetes.io/part-of")
        .cloned()
}

#[tokio::test]
async fn hand_edits_of_owned_children_are_repaired() {
    let world = World::new("op-drift").await;
    // A resync far beyond the test's deadlines: the repair must come from the watch.
    let operator = world
        .operator("drift", &["--leader-elect=false", "--resync-seconds=3600"])
        .await;
    world.apply_agent("support", json!({ "replicas": 1 })).await;
    let deployments = world.api::<Deployment>();
    eventually(
        MINUTE,
        "the Deployment as the operator wants it",
        || async {
            let d = deployments.get_opt("support").await.ok()??;
            (read_only_root(&d) == Some(true) && part_of(&d).as_deref() == Some("switchboard"))
                .then_some(())
        },
    )
    .await;
    eventually(MINUTE, "the Role", || async {
        world.api::<Role>().get_opt("support").await.ok()?
    })
    .await;

    // Hand edits, as a user or another tool would make them; each prints the object
    // as the patch left it, proving the edit landed before any repair.
    let landed = world.kubectl(&[
        "patch",
        "deployment/support",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem","value":false},
            {"op":"replace","path":"/metadata/labels/app.kubernetes.io~1part-of","value":"edited"}]"#,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem} {.metadata.labels.app\\.kubernetes\\.io/part-of}",
    ]);
    assert_eq!(landed.trim(), "false edited");
    let landed = world.kubectl(&[
        "patch",
        "service/support",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/targetPort","value":9999}]"#,
        "-o",
        "jsonpath={.spec.ports[0].targetPort}",
    ]);
    assert_eq!(landed.trim(), "9999");
    let landed = world.kubectl(&[
        "patch",
        "role/support",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/rules/0/verbs/-","value":"delete"}]"#,
        "-o",
        "jsonpath={.rules[0].verbs}",
    ]);
    assert!(landed.contains("delete"), "{landed}");

    eventually(MINUTE, "the Deployment repaired", || async {
        let d = deployments.get("support").await.ok()?;
        (read_only_root(&d) == Some(true) && part_of(&d).as_deref() == Some("switchboard"))
            .then_some(())
    })
    .await;
    eventually(MINUTE, "the Service repaired", || async {
        let s = world.api::<Service>().get("support").await.ok()?;
        let port = &s.spec?.ports?[0];
        (port.port == 8080
            && port.target_port
                == Some(
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                        "http".to_owned(),
                    ),
                ))
        .then_some(())
    })
    .await;
    eventually(MINUTE, "the Role repaired", || async {
        let r = world.api::<Role>().get("support").await.ok()?;
        (r.rules?[0].verbs == ["get", "list", "watch"]).then_some(())
    })
    .await;
    assert!(
        operator
            .log_text()
            .contains("repairing a child edited by hand"),
        "the operator says what it repaired"
    );

    // Repaired children hold what is wanted: the writes stop (no apply loop).
    settled(
        "the operator's writes after the repair",
        MINUTE,
        Duration::from_secs(5),
        async || {
            let now = operator.writes().await;
            assert!(now > 0.0, "the operator's /metrics answers");
            now
        },
    )
    .await;
}

fn controller_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.name))
}

#[tokio::test]
async fn an_object_made_by_someone_else_is_never_taken_over() {
    let world = World::new("op-taken").await;
    // A short resync: the operator looks again without being told, as it would once
    // the name is freed.
    let _operator = world
        .operator("taken", &["--leader-elect=false", "--resync-seconds=5"])
        .await;
    // A Service made by hand (another team's, say) holds the name an agent will want.
    world
        .apply::<Service>(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "support", "labels": { "app": "legacy-support" } },
            "spec": { "selector": { "app": "legacy-support" }, "ports": [{ "port": 80 }] },
        }))
        .await;
    world.apply_agent("support", json!({ "replicas": 1 })).await;
    eventually(MINUTE, "Ready=False ChildConflict", || async {
        let (status, reason) = world.condition("support", "Ready").await?;
        (status == "False" && reason == "ChildConflict").then_some(())
    })
    .await;
    let status = world.agents().get("support").await.unwrap().status.unwrap();
    let ready = crds::condition::find_condition(&status.conditions, "Ready")
        .unwrap()
        .clone();
    assert_eq!(
        status.endpoint, None,
        "no endpoint pointing at the other Service"
    );
    assert!(
        ready
            .message
            .starts_with("Service support already exists and is not this agent's"),
        "{}",
        ready.message
    );
    // The other children are the agent's; the Service is left exactly as it was.
    eventually(MINUTE, "the Deployment", || async {
        world.api::<Deployment>().get_opt("support").await.ok()?
    })
    .await;
    let service = world.api::<Service>().get("support").await.unwrap();
    assert_eq!(controller_of(&service.metadata), None);
    assert_eq!(
        service.spec.unwrap().selector.unwrap()["app"],
        "legacy-support",
        "the Service's selector is its maker's"
    );
    assert!(
        !service
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("app.kubernetes.io/managed-by")
    );

    // Freed, the name is the agent's at the next look.
    world
        .api::<Service>()
        .delete("support", &Default::default())
        .await
        .unwrap();
    eventually(MINUTE, "the agent's own Service", || async {
        let s = world.api::<Service>().get_opt("support").await.ok()??;
        (controller_of(&s.metadata).as_deref() == Some("AgentDeployment/support")).then_some(())
    })
    .await;
    eventually(MINUTE, "Ready no longer ChildConflict", || async {
        let (_, reason) = world.condition("support", "Ready").await?;
        (reason != "ChildConflict").then_some(())
    })
    .await;
}
