//! End-to-end: managed databases with an admin as managed Postgres services hand out
//! (not a superuser; CREATEROLE and CREATEDB only), and an operator started before the
//! admin Secret exists.

mod support;

use std::time::Duration;

use crds::conditions::DATABASE_READY;
use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use support::{World, databases_like, db_prefix, eventually, roles_like, secret_data};
use switchboard_tests::database::LimitedAdmin;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_createrole_createdb_admin_provisions_and_drops_managed_databases() {
    let world = World::new("op-dbadm").await;
    let admin = LimitedAdmin::create().await;
    let _operator = world
        .operator(
            "solo",
            &["--leader-elect=false", "--database-admin-url", admin.url()],
        )
        .await;
    world.apply_agent("limited", json!({})).await;
    world
        .wait_condition("limited", DATABASE_READY, "True", MINUTE)
        .await;
    // The tenant connects with its own credentials and owns its database.
    let data = secret_data(&world, "limited-db").await;
    let mut tenant = PgConnection::connect(&data["uri"])
        .await
        .expect("the tenant connects with its credentials");
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database()",
    )
    .fetch_one(&mut tenant)
    .await
    .unwrap();
    assert_eq!(owner, data["user"]);
    tenant.close().await.unwrap();

    // reclaimPolicy: Delete drops database and role with the limited admin too.
    world
        .agents()
        .delete("limited", &DeleteParams::default())
        .await
        .unwrap();
    let prefix = db_prefix(world.name());
    eventually(MINUTE, "database and role dropped", || async {
        (databases_like(&prefix).await.is_empty() && roles_like(&prefix).await.is_empty())
            .then_some(())
    })
    .await;
    assert!(admin.role().starts_with("sbtest_admin_"));
}

#[tokio::test]
async fn without_the_admin_secret_the_operator_starts_reports_and_proceeds_when_it_appears() {
    let world = World::new("op-nosecret").await;
    let reference = format!("{}/db-admin", world.name());
    let _operator = world
        .operator(
            "solo",
            &[
                "--leader-elect=false",
                "--database-admin-secret",
                &reference,
            ],
        )
        .await;
    world.apply_agent("waiting", json!({})).await;
    world
        .wait_condition("waiting", DATABASE_READY, "False", MINUTE)
        .await;
    let (_, reason) = world.condition("waiting", DATABASE_READY).await.unwrap();
    assert_eq!(reason, "NoDatabaseAdmin");
    eventually(MINUTE, "an event naming the missing Secret", || async {
        let events = world.kubectl(&["get", "events", "-o", "custom-columns=R:.reason,M:.message"]);
        events
            .lines()
            .any(|l| l.contains("NoDatabaseAdmin") && l.contains("db-admin"))
            .then_some(())
    })
    .await;

    world
        .apply::<Secret>(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": "db-admin" },
            "stringData": { "uri": switchboard_tests::database::admin_url() },
        }))
        .await;
    world
        .wait_condition("waiting", DATABASE_READY, "True", Duration::from_secs(90))
        .await;
    world
        .agents()
        .delete("waiting", &DeleteParams::default())
        .await
        .unwrap();
    eventually(MINUTE, "the agent gone", || async {
        world
            .agents()
            .get_opt("waiting")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_drop_that_cannot_succeed_is_reported_and_the_skip_annotation_lets_the_agent_go() {
    let world = World::new("op-nodrop").await;
    // An admin Secret that never appears: provisioning and dropping both fail.
    let reference = format!("{}/absent", world.name());
    let _operator = world
        .operator(
            "solo",
            &[
                "--leader-elect=false",
                "--database-admin-secret",
                &reference,
            ],
        )
        .await;
    world.apply_agent("stuck", json!({})).await;
    world
        .wait_condition("stuck", DATABASE_READY, "False", MINUTE)
        .await;
    world
        .agents()
        .delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    eventually(MINUTE, "DatabaseDropFailed on the agent", || async {
        let (status, reason) = world.condition("stuck", DATABASE_READY).await?;
        (status == "False" && reason == "DatabaseDropFailed").then_some(())
    })
    .await;
    eventually(MINUTE, "an event naming the way out", || async {
        let events = world.kubectl(&["get", "events", "-o", "custom-columns=R:.reason,M:.message"]);
        events
            .lines()
            .any(|l| {
                l.contains("DatabaseDropFailed") && l.contains("switchboard.dev/skip-database-drop")
            })
            .then_some(())
    })
    .await;
    assert!(world.agents().get_opt("stuck").await.unwrap().is_some());

    world.kubectl(&[
        "annotate",
        "agd",
        "stuck",
        "switchboard.dev/skip-database-drop=true",
    ]);
    eventually(MINUTE, "the agent gone", || async {
        world
            .agents()
            .get_opt("stuck")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_agent_recreated_over_a_retained_database_says_it_adopted_it() {
    let world = World::new("op-adopt").await;
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    let retain = json!({ "database": { "mode": "Managed", "reclaimPolicy": "Retain" } });
    world.apply_agent("again", retain.clone()).await;
    world
        .wait_condition("again", DATABASE_READY, "True", MINUTE)
        .await;
    assert_eq!(
        world.condition("again", DATABASE_READY).await.unwrap().1,
        "Provisioned"
    );
    world
        .agents()
        .delete("again", &DeleteParams::default())
        .await
        .unwrap();
    eventually(MINUTE, "the agent gone", || async {
        world
            .agents()
            .get_opt("again")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // Its Secret goes with it (garbage collection); wait for that so the new agent
    // starts without credentials, as after a real deletion.
    eventually(MINUTE, "the old credentials gone", || async {
        world
            .api::<Secret>()
            .get_opt("again-db")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    world.apply_agent("again", retain).await;
    eventually(
        MINUTE,
        "DatabaseReady True, reason DatabaseAdopted",
        || async {
            let (status, reason) = world.condition("again", DATABASE_READY).await?;
            (status == "True" && reason == "DatabaseAdopted").then_some(())
        },
    )
    .await;
    support::drop_like(&db_prefix(world.name())).await;
}
