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
