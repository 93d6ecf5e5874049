//! End-to-end: kill -9 the operator while it reconciles 20 agents and start it again;
//! everything converges with no duplicate objects and no orphaned roles or databases.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use crds::conditions::{AVAILABLE, DATABASE_READY};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::{World, databases_like, db_prefix, eventually, roles_like};

const AGENTS: usize = 20;

/// Agents that have some of their children (a Secret or the Deployment) but no status:
/// their reconcile started and did not finish.
async fn half_made_agents(world: &World) -> Vec<String> {
    let secrets: Api<Secret> = world.api();
    let deployments: Api<Deployment> = world.api();
    let all = ListParams::default();
    let mut children: BTreeSet<String> = secrets
        .list(&all)
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    children.extend(
        deployments
            .list(&all)
            .await
            .unwrap()
            .items
            .iter()
            .map(|d| d.name_any()),
    );
    world
        .agents()
        .list(&all)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|a| {
            a.status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .is_none()
        })
        .map(|a| a.name_any())
        .filter(|name| {
            [
                name.clone(),
                format!("{name}-db"),
                format!("{name}-api-key"),
            ]
            .iter()
            .any(|child| children.contains(child))
        })
        .collect()
}

#[tokio::test]
async fn kill_9_mid_reconcile_then_restart_converges_without_duplicates_or_orphans() {
    let world = World::new("op-crash").await;
    let mut first = world.operator("first", &["--leader-elect=false"]).await;
    for i in 0..AGENTS {
        world
            .apply_agent(&format!("agent-{i:02}"), json!({ "replicas": 1 }))
            .await;
    }
    // Kill it once it is part-way through.
    let deployments: Api<Deployment> = world.api();
    eventually(Duration::from_secs(60), "some Deployments", || async {
        let n = deployments
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len();
        (n >= 3).then_some(n)
    })
    .await;
    first.kill9().await;
    let made_before_kill = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    eprintln!("killed the operator with {made_before_kill}/{AGENTS} Deployments made");
    // Prove the kill landed mid-reconcile: with the operator dead, the API shows what it
    // left. The operator writes an agent's status last, after its database, API key and
    // children, so an agent with children but no status yet was cut off mid-reconcile.
    let half_made = half_made_agents(&world).await;
    eprintln!("agents with children but no status at the kill: {half_made:?}");
    assert!(
        !half_made.is_empty(),
        "the kill did not land mid-reconcile: no agent had children without a status \
         ({made_before_kill}/{AGENTS} Deployments made)"
    );

    let started = std::time::Instant::now();
    let second = world.operator("second", &["--leader-elect=false"]).await;
    for i in 0..AGENTS {
        let name = format!("agent-{i:02}");
        world
            .wait_condition(&name, AVAILABLE, "True", Duration::from_secs(180))
            .await;
        world
            .wait_condition(&name, DATABASE_READY, "True", Duration::from_secs(60))
            .await;
    }
    eprintln!(
        "all {AGENTS} agents Available {:?} after the restart",
        started.elapsed()
    );

    // Exactly one of each child per agent; one database and one role per agent.
    let services: Api<Service> = world.api();
    let secrets: Api<Secret> = world.api();
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=switchboard-operator");
    assert_eq!(
        deployments.list(&managed).await.unwrap().items.len(),
        AGENTS
    );
    assert_eq!(services.list(&managed).await.unwrap().items.len(), AGENTS);
    assert_eq!(
        secrets.list(&managed).await.unwrap().items.len(),
        2 * AGENTS
    );
    let prefix = db_prefix(world.name());
    assert_eq!(databases_like(&prefix).await.len(), AGENTS);
    assert_eq!(roles_like(&prefix).await.len(), AGENTS);
    // Every database Secret's password works (none was changed behind its back).
    for i in [0, AGENTS / 2, AGENTS - 1] {
        let creds = support::secret_data(&world, &format!("agent-{i:02}-db")).await;
        use sqlx::Connection;
        sqlx::postgres::PgConnection::connect(&creds["uri"])
            .await
            .expect("the stored password works");
    }
    let second_writes = second.writes().await;
    eprintln!("second operator sent {second_writes} writes to converge");

    // Deleting everything leaves no roles or databases behind.
    world
        .agents()
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(120),
        "every database and role dropped",
        || async {
            (databases_like(&prefix).await.is_empty() && roles_like(&prefix).await.is_empty())
                .then_some(())
        },
    )
    .await;
}
