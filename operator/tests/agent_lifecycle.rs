//! End-to-end: an AgentDeployment becomes its children, pods on kwok nodes, a database
//! in Postgres and a truthful status; spec changes roll the pods; scaling works with
//! and without spec.replicas; deletion garbage-collects children and drops or keeps the
//! database as its reclaim policy says; tenants cannot reach each other's databases;
//! runtime heartbeats wake no reconcile, and a silent runtime still goes stale.

mod support;

use std::time::Duration;

use crds::ChatChannel;
use crds::conditions::{AVAILABLE, DATABASE_READY, READY, RUNTIME_READY};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use support::{
    Operator, World, databases_like, db_prefix, drop_like, eventually, roles_like, secret_data,
    settled, sum_metric,
};

const MINUTE: Duration = Duration::from_secs(60);

async fn running_pods(world: &World, agent: &str) -> Vec<Pod> {
    let pods: Api<Pod> = world.api();
    pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={agent}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect()
}

async fn config_hash(world: &World, name: &str) -> Option<String> {
    let d: Deployment = world.api().get_opt(name).await.ok()??;
    d.spec
        .template
        .metadata?
        .annotations?
        .get("switchboard.dev/config-hash")
        .cloned()
}

/// Waits until the agent's status has observed its current generation: the operator
/// finished a reconcile of the spec as it is now (status is written last).
async fn wait_observed(world: &World, agent: &str) {
    eventually(
        MINUTE,
        &format!("{agent}'s status observing its generation"),
        || async {
            let a = world.agents().get_opt(agent).await.ok()??;
            let generation = a.metadata.generation?;
            (a.status?.observed_generation == Some(generation)).then_some(())
        },
    )
    .await
}

fn owned_by_agent<K: Resource>(object: &K, agent_uid: &str) -> bool {
    object.meta().owner_references.as_ref().is_some_and(|o| {
        o.iter()
            .any(|o| o.uid == agent_uid && o.controller == Some(true))
    })
}

#[tokio::test]
async fn agent_children_rollout_scaling_and_deletion_with_database_drop() {
    let world = World::new("op-life").await;
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    world.apply_agent("support", json!({ "replicas": 2 })).await;

    // Every child exists and is owned by the agent.
    let agent = eventually(MINUTE, "the agent's uid", || async {
        world.agents().get_opt("support").await.ok()?
    })
    .await;
    let uid = agent.uid().unwrap();
    eventually(MINUTE, "every child with an owner reference", || async {
        let sa: ServiceAccount = world.api().get_opt("support").await.ok()??;
        let role: Role = world.api().get_opt("support").await.ok()??;
        let rb: RoleBinding = world.api().get_opt("support").await.ok()??;
        let cm: ConfigMap = world.api().get_opt("support-config").await.ok()??;
        let dep: Deployment = world.api().get_opt("support").await.ok()??;
        let svc: Service = world.api().get_opt("support").await.ok()??;
        let key: Secret = world.api().get_opt("support-api-key").await.ok()??;
        let db: Secret = world.api().get_opt("support-db").await.ok()??;
        (owned_by_agent(&sa, &uid)
            && owned_by_agent(&role, &uid)
            && owned_by_agent(&rb, &uid)
            && owned_by_agent(&cm, &uid)
            && owned_by_agent(&dep, &uid)
            && owned_by_agent(&svc, &uid)
            && owned_by_agent(&key, &uid)
            && owned_by_agent(&db, &uid))
        .then_some(())
    })
    .await;

    // Pods run on kwok nodes and the agent reports Available with a full status.
    eventually(2 * MINUTE, "2 running pods", || async {
        (running_pods(&world, "support").await.len() == 2).then_some(())
    })
    .await;
    for pod in running_pods(&world, "support").await {
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        assert!(
            node.starts_with("kwok-"),
            "pod on {node:?}, not a kwok node"
        );
    }
    world
        .wait_condition("support", AVAILABLE, "True", MINUTE)
        .await;
    world
        .wait_condition("support", DATABASE_READY, "True", MINUTE)
        .await;
    let status = world.agents().get("support").await.unwrap().status.unwrap();
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://support.{}.svc.cluster.local:8080", world.name()).as_str())
    );
    assert_eq!(
        status.secrets.as_ref().unwrap().api_key.as_deref(),
        Some("support-api-key")
    );
    assert_eq!(
        status.secrets.as_ref().unwrap().database.as_deref(),
        Some("support-db")
    );
    assert!(
        status
            .selector
            .as_deref()
            .unwrap()
            .contains("app.kubernetes.io/instance=support")
    );
    assert_eq!(status.observed_generation, agent.metadata.generation);
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == agent.metadata.generation)
    );
    assert_eq!(
        world.condition("support", RUNTIME_READY).await.unwrap(),
        ("Unknown".to_owned(), "AwaitingRuntimeReport".to_owned())
    );

    // The database exists, its Secret's URI connects, and the API key is generated once.
    let creds = secret_data(&world, "support-db").await;
    for key in ["host", "port", "dbname", "user", "password", "uri"] {
        assert!(creds.contains_key(key), "database Secret has {key}");
    }
    let mut tenant = PgConnection::connect(&creds["uri"])
        .await
        .expect("the tenant URI connects");
    let db: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut tenant)
        .await
        .unwrap();
    assert_eq!(db, creds["dbname"]);
    drop(tenant);
    let api_key = secret_data(&world, "support-api-key").await["api-key"].clone();
    assert!(api_key.len() >= 32);

    // The runtime's reports drive RuntimeReady/Ready; a vanished pod's entry is pruned.
    let pod = running_pods(&world, "support").await[0].name_any();
    world.report_runtime("support", &pod, true, true).await;
    world
        .report_runtime("support", "support-gone-pod", false, false)
        .await;
    world.wait_condition("support", READY, "True", MINUTE).await;
    eventually(MINUTE, "the stale runtime entry pruned", || async {
        let s = world.agents().get("support").await.ok()?.status?;
        (s.runtime.len() == 1 && s.runtime[0].name == pod).then_some(())
    })
    .await;

    // A spec change changes the config hash and rolls the Deployment.
    let before = config_hash(&world, "support").await.unwrap();
    world
        .apply_agent(
            "support",
            json!({ "replicas": 2, "systemPrompt": "You are terse." }),
        )
        .await;
    let after = eventually(MINUTE, "a new config hash", || async {
        config_hash(&world, "support")
            .await
            .filter(|h| *h != before)
    })
    .await;
    let cm: ConfigMap = world.api().get("support-config").await.unwrap();
    assert!(cm.data.unwrap()["agent.yaml"].contains("You are terse."));
    eventually(2 * MINUTE, "pods of the new template", || async {
        let pods = running_pods(&world, "support").await;
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p.annotations().get("switchboard.dev/config-hash") == Some(&after)))
        .then_some(())
    })
    .await;

    // kubectl scale on the agent changes the pod count.
    world.kubectl(&["scale", "agentdeployment/support", "--replicas=3"]);
    eventually(2 * MINUTE, "3 running pods", || async {
        (running_pods(&world, "support").await.len() == 3).then_some(())
    })
    .await;
    eventually(MINUTE, "status.replicas 3", || async {
        (world.agents().get("support").await.ok()?.status?.replicas == Some(3)).then_some(())
    })
    .await;
    // The key was never rewritten.
    assert_eq!(
        secret_data(&world, "support-api-key").await["api-key"],
        api_key
    );

    // Deletion garbage-collects the children and (reclaimPolicy: Delete) drops the database.
    let prefix = db_prefix(world.name());
    assert_eq!(databases_like(&prefix).await.len(), 1);
    world
        .agents()
        .delete("support", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(2 * MINUTE, "children garbage-collected", || async {
        let d: Option<Deployment> = world.api().get_opt("support").await.ok()?;
        let s: Option<Service> = world.api().get_opt("support").await.ok()?;
        let c: Option<ConfigMap> = world.api().get_opt("support-config").await.ok()?;
        let k: Option<Secret> = world.api().get_opt("support-api-key").await.ok()?;
        let a = world.agents().get_opt("support").await.ok()?;
        (d.is_none() && s.is_none() && c.is_none() && k.is_none() && a.is_none()).then_some(())
    })
    .await;
    assert!(databases_like(&prefix).await.is_empty(), "database dropped");
    assert!(roles_like(&prefix).await.is_empty(), "role dropped");
}

#[tokio::test]
async fn without_spec_replicas_someone_elses_scaling_is_kept_and_retain_keeps_the_database() {
    let world = World::new("op-hpa").await;
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    world
        .apply_agent(
            "hpa",
            json!({ "database": { "mode": "Managed", "reclaimPolicy": "Retain" } }),
        )
        .await;
    world
        .wait_condition("hpa", AVAILABLE, "True", 2 * MINUTE)
        .await;
    let deployments: Api<Deployment> = world.api();
    let d = deployments.get("hpa").await.unwrap();
    let ours = d
        .managed_fields()
        .iter()
        .find(|m| m.manager.as_deref() == Some("switchboard-operator"))
        .and_then(|m| m.fields_v1.as_ref())
        .map(|f| f.0.to_string())
        .unwrap();
    assert!(
        !ours.contains("f:replicas"),
        "the operator must not own spec.replicas: {ours}"
    );

    // Someone else (an HPA, a human) scales the Deployment; the operator leaves it.
    world.kubectl(&["scale", "deployment/hpa", "--replicas=3"]);
    let hash_before = config_hash(&world, "hpa").await.expect("a config hash");
    // Nudge a reconcile with an unrelated spec change, and wait until the operator has
    // applied the Deployment again (a new config hash in its template, after the scale)
    // and finished that reconcile (the status observed the new generation).
    world
        .apply_agent("hpa", json!({ "systemPrompt": "changed", "database": { "mode": "Managed", "reclaimPolicy": "Retain" } }))
        .await;
    eventually(
        MINUTE,
        "the Deployment re-applied with the new config",
        || async {
            config_hash(&world, "hpa")
                .await
                .filter(|h| *h != hash_before)
        },
    )
    .await;
    wait_observed(&world, "hpa").await;
    assert_eq!(
        deployments.get("hpa").await.unwrap().spec.replicas,
        Some(3),
        "the operator's apply reset someone else's scaling"
    );
    eventually(2 * MINUTE, "3 running pods", || async {
        (running_pods(&world, "hpa").await.len() == 3).then_some(())
    })
    .await;

    // Retain: the database outlives the agent, and an event says so.
    let prefix = db_prefix(world.name());
    world
        .agents()
        .delete("hpa", &DeleteParams::default())
        .await
        .unwrap();
    eventually(MINUTE, "the agent gone", || async {
        world
            .agents()
            .get_opt("hpa")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(databases_like(&prefix).await.len(), 1, "database kept");
    assert_eq!(roles_like(&prefix).await.len(), 1, "role kept");
    let events = world.kubectl(&["get", "events", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("DatabaseRetained"), "events: {events}");
    drop_like(&prefix).await;
}

#[tokio::test]
async fn a_tenants_role_cannot_connect_to_another_tenants_database() {
    let world = World::new("op-iso").await;
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    world
        .apply_agent("tenant-a", json!({ "replicas": 0 }))
        .await;
    world
        .apply_agent("tenant-b", json!({ "replicas": 0 }))
        .await;
    world
        .wait_condition("tenant-a", DATABASE_READY, "True", MINUTE)
        .await;
    world
        .wait_condition("tenant-b", DATABASE_READY, "True", MINUTE)
        .await;
    let a = secret_data(&world, "tenant-a-db").await;
    let b = secret_data(&world, "tenant-b-db").await;
    assert_ne!(a["password"], b["password"]);

    let a_uri_to_b = format!(
        "postgres://{}:{}@{}:{}/{}",
        a["user"], a["password"], a["host"], a["port"], b["dbname"]
    );
    let err = PgConnection::connect(&a_uri_to_b)
        .await
        .expect_err("A must not reach B's database");
    assert!(
        err.to_string().contains("permission denied"),
        "unexpected error: {err}"
    );
    PgConnection::connect(&a["uri"])
        .await
        .expect("A reaches its own database");

    // Re-running never changes a password: restart the operator and compare.
    drop(_operator);
    let _again = world.operator("solo2", &["--leader-elect=false"]).await;
    world
        .apply_agent(
            "tenant-a",
            json!({ "replicas": 0, "systemPrompt": "again" }),
        )
        .await;
    // The new operator has reconciled tenant-a (database included) once its status
    // observed the new generation.
    wait_observed(&world, "tenant-a").await;
    assert_eq!(
        secret_data(&world, "tenant-a-db").await["password"],
        a["password"]
    );
    PgConnection::connect(&a["uri"])
        .await
        .expect("the original password still works");

    for name in ["tenant-a", "tenant-b"] {
        world
            .agents()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    let prefix = db_prefix(world.name());
    eventually(MINUTE, "databases dropped", || async {
        databases_like(&prefix).await.is_empty().then_some(())
    })
    .await;
}

/// Reconciles the operator has started, by controller (`agent`, `channel`).
async fn reconciles(operator: &mut Operator, controller: &str) -> f64 {
    assert!(
        operator.running(),
        "the operator exited; log: {}",
        operator.log.display()
    );
    let text = operator.get("/metrics").await.unwrap_or_default();
    let label = format!("controller=\"{controller}\"");
    sum_metric(&text, "switchboard_operator_reconciles_total", |l| {
        l.contains(&label)
    })
}

/// A busy agent's pods report their counts into its status and their channels'
/// activity into the channels' (every 30 s). Those reports change nothing the
/// operator acts on, so they wake neither the agent's nor its channels' reconciles. A pod the kubelet stops counting Ready stops counting at
/// once; a runtime that stops reporting turns RuntimeReady False once its report
/// is stale; either is True again when it is back.
#[tokio::test]
async fn heartbeats_wake_no_reconcile_and_unready_or_silent_runtimes_stop_counting() {
    let world = World::new("op-beats").await;
    let mut operator = world.operator("beats", &[]).await;
    world.apply_agent("hb", json!({ "replicas": 1 })).await;
    world
        .apply::<ChatChannel>(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "ChatChannel",
            "metadata": { "name": "hb-web" },
            "spec": { "agentRef": { "name": "hb" }, "type": "web" },
        }))
        .await;
    world
        .wait_condition("hb", AVAILABLE, "True", Duration::from_secs(120))
        .await;
    let pods: Api<Pod> = world.api();
    let pod = eventually(Duration::from_secs(60), "the runtime pod", || async {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/instance=hb"))
            .await
            .ok()?;
        list.items.first().map(|p| p.name_any())
    })
    .await;
    world
        .heartbeat("hb", &pod, true, true, 0, Timestamp::now())
        .await;
    world
        .wait_condition("hb", RUNTIME_READY, "True", Duration::from_secs(30))
        .await;
    // Let the reactions to the first report settle (no reconcile for 2 s).
    settled(
        "the agent's reconciles",
        Duration::from_secs(60),
        Duration::from_secs(2),
        async || reconciles(&mut operator, "agent").await,
    )
    .await;
    let agent_before = reconciles(&mut operator, "agent").await;
    let channel_before = reconciles(&mut operator, "channel").await;

    // Eight heartbeats a second apart, as eight pods' (or one pod's over 4 minutes).
    for beat in 1..=8 {
        world
            .heartbeat("hb", &pod, true, true, beat * 3, Timestamp::now())
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let agent_woken = reconciles(&mut operator, "agent").await - agent_before;
    let channel_woken = reconciles(&mut operator, "channel").await - channel_before;
    eprintln!("reconciles during 8 heartbeats: agent {agent_woken}, channel {channel_woken}");
    let status = world.agents().get("hb").await.unwrap().status.unwrap();
    assert_eq!(
        status.runtime[0].messages_total, 24,
        "the heartbeats arrived"
    );
    assert_eq!(
        channel_woken, 0.0,
        "a heartbeat woke the channel controller"
    );
    assert!(
        agent_woken <= 1.0,
        "8 heartbeats woke {agent_woken} agent reconciles"
    );

    // A busy channel's activity, as its runtime pod writes it into the channel's
    // status: no reconcile of the channel or of its agent either.
    let agent_before = reconciles(&mut operator, "agent").await;
    let channel_before = reconciles(&mut operator, "channel").await;
    let channels: Api<ChatChannel> = world.api();
    for beat in 1..=5 {
        let activity = json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "ChatChannel",
            "status": { "activity": [{
                "pod": pod, "messagesTotal": beat * 4, "activeSessions": 2,
            }]},
        });
        channels
            .patch_status(
                "hb-web",
                &PatchParams::apply(&format!("switchboard-runtime-{pod}")).force(),
                &Patch::Apply(&activity),
            )
            .await
            .expect("the channel's activity");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let channel = channels.get_status("hb-web").await.unwrap();
    assert_eq!(channel.status.unwrap().activity[0].messages_total, 20);
    let agent_woken = reconciles(&mut operator, "agent").await - agent_before;
    let channel_woken = reconciles(&mut operator, "channel").await - channel_before;
    assert_eq!(
        (agent_woken, channel_woken),
        (0.0, 0.0),
        "channel activity woke (agent, channel) reconciles"
    );

    // The kubelet stops counting the pod Ready (a failing probe, a lost node): its
    // fresh report no longer counts, and the pod's own event says so at once.
    let set_ready = |status: &'static str| {
        let pods = pods.clone();
        let pod = pod.clone();
        async move {
            let patch =
                json!({ "status": { "conditions": [{ "type": "Ready", "status": status }] } });
            pods.patch_status(&pod, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .unwrap_or_else(|e| panic!("setting {pod} Ready={status}: {e}"));
        }
    };
    set_ready("False").await;
    world
        .wait_condition("hb", RUNTIME_READY, "False", Duration::from_secs(30))
        .await;
    let condition = world.condition("hb", RUNTIME_READY).await;
    assert_eq!(
        condition.map(|(_, reason)| reason).as_deref(),
        Some("PodsNotReady")
    );
    set_ready("True").await;
    world
        .wait_condition("hb", RUNTIME_READY, "True", Duration::from_secs(30))
        .await;

    // Silent: a report made (as if) long ago goes stale a few seconds from now, and
    // RuntimeReady follows through the operator's sweep, with no event to wake it.
    let stale_after = crds::RUNTIME_STALE_AFTER_SECONDS as i64;
    let long_ago = Timestamp::from_second(Timestamp::now().as_second() - stale_after + 5).unwrap();
    world.heartbeat("hb", &pod, true, true, 27, long_ago).await;
    world
        .wait_condition("hb", RUNTIME_READY, "False", Duration::from_secs(60))
        .await;
    let condition = world.condition("hb", RUNTIME_READY).await;
    assert_eq!(
        condition.map(|(_, reason)| reason).as_deref(),
        Some("HeartbeatMissing")
    );
    // Back: its next report counts at once.
    world
        .heartbeat("hb", &pod, true, true, 30, Timestamp::now())
        .await;
    world
        .wait_condition("hb", RUNTIME_READY, "True", Duration::from_secs(10))
        .await;
}
