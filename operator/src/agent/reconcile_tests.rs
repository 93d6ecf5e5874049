//! Reconcile-level tests of the AgentDeployment controller against a mock API service
//! and a recording database fake: the exact requests of a whole reconcile, for the
//! happy path, a database failure, an invalid spec, a child the API server refuses and
//! deletion with each reclaim policy.

use std::sync::{Arc, Mutex};

use clap::Parser;
use crds::conditions::{DATABASE_READY, READY, SERVICE_MONITOR_READY};
use crds::{AgentDeployment, ChatChannel, DatabaseMode, LocalObjectRef, ReclaimPolicy, ToolServer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use serde_json::Value;

use super::build::fixtures::full;
use super::context::AgentContext;
use super::runtime_pod::RuntimePod;
use super::tools;
use super::watches::{self, Stores};
use super::{error_policy, reconcile};
use crate::backoff::ObjectKey;
use crate::compact::Compact;
use crate::config::Config;
use crate::context::Context;
use crate::controller::mock_api::{self, Log};
use crate::database::{DatabaseCredentials, Provisioner};
use crate::error::{Error, Result};
use crate::index;
use crate::metrics::Metrics;
use crate::names;

/// A database server that records what it is asked and fails when told to.
#[derive(Debug, Default)]
struct FakeDatabase {
    fail: bool,
    calls: Mutex<Vec<String>>,
}

impl FakeDatabase {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn answer(&self, call: String) -> Result<()> {
        self.calls.lock().unwrap().push(call);
        if self.fail {
            Err(Error::database("connecting")(sqlx::Error::PoolTimedOut))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Provisioner for FakeDatabase {
    fn credentials(&self, identifier: &str, password: String) -> DatabaseCredentials {
        DatabaseCredentials {
            host: "db.test".to_owned(),
            port: 5432,
            dbname: identifier.to_owned(),
            user: identifier.to_owned(),
            password,
            params: String::new(),
        }
    }

    async fn ensure(&self, identifier: &str, _password: &str, is_new: bool) -> Result<bool> {
        self.answer(format!("ensure {identifier} new={is_new}"))
            .map(|()| false)
    }

    async fn drop_database(&self, identifier: &str) -> Result<()> {
        self.answer(format!("drop {identifier}"))
    }
}

/// A store filled once with `objects`.
fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    for object in objects {
        writer.apply_watcher_event(&Event::InitApply(object));
    }
    writer.apply_watcher_event(&Event::InitDone);
    reader
}

/// The caches of a [`Stores`], before its indexes.
struct Caches {
    deployments: Store<Compact<Deployment>>,
    service_accounts: Store<Compact<ServiceAccount>>,
    roles: Store<Compact<Role>>,
    role_bindings: Store<Compact<RoleBinding>>,
    config_maps: Store<Compact<ConfigMap>>,
    services: Store<Compact<Service>>,
    secrets: Store<PartialObjectMeta<Secret>>,
    pods: Store<RuntimePod>,
    channels: Store<ChatChannel>,
    agents: Store<AgentDeployment>,
    tool_servers: Store<ToolServer>,
}

fn empty_stores() -> Stores {
    indexed(Caches {
        deployments: store(vec![]),
        service_accounts: store(vec![]),
        roles: store(vec![]),
        role_bindings: store(vec![]),
        config_maps: store(vec![]),
        services: store(vec![]),
        secrets: store(vec![]),
        pods: store(vec![]),
        channels: store(vec![]),
        agents: store(vec![]),
        tool_servers: store(vec![]),
    })
}

/// `caches` with their indexes built from them, as the watches build them.
fn indexed(caches: Caches) -> Stores {
    Stores {
        deployments_by_secret: index::of_store(&caches.deployments, watches::deployment_secrets),
        key_secrets: index::of_store(&caches.secrets, watches::key_secret_agent),
        agent_pods: index::of_store(&caches.pods, watches::pod_agent),
        callers: index::of_store(&caches.agents, tools::callee_values),
        agent_channels: index::of_store(&caches.channels, crate::channel::served_agent),
        deployments: caches.deployments,
        service_accounts: caches.service_accounts,
        roles: caches.roles,
        role_bindings: caches.role_bindings,
        config_maps: caches.config_maps,
        services: caches.services,
        secrets: caches.secrets,
        pods: caches.pods,
        channels: caches.channels,
        agents: caches.agents,
        tool_servers: caches.tool_servers,
    }
}

/// The agent fixture as the API server holds it: with the finalizer, `Delete` policy.
fn agent() -> AgentDeployment {
    let mut agent = full();
    agent.metadata.finalizers = Some(vec![names::DATABASE_FINALIZER.to_owned()]);
    agent.metadata.resource_version = Some("7".to_owned());
    agent
}

struct World {
    ctx: Arc<AgentContext>,
    log: Log,
    database: Arc<FakeDatabase>,
}

/// A reconcile context over a mock API that answers like an empty namespace holding
/// `agent`: reads of missing objects are 404, creates and applies echo the object.
fn world(agent: &AgentDeployment, database_fails: bool) -> World {
    world_with(agent, database_fails, Vec::new())
}

/// As [`world`], but a request whose line (`PATCH /apis/...`) is the first of one of
/// `answers` gets its answer.
fn world_with(
    agent: &AgentDeployment,
    database_fails: bool,
    answers: Vec<(String, (u16, Value))>,
) -> World {
    let agent_json = serde_json::to_value(agent).unwrap();
    let (client, log) = mock_api::client(move |request| {
        let is_agent = request.path.starts_with(
            "/apis/switchboard.dev/v1alpha1/namespaces/tenant-a/agentdeployments/support",
        );
        if let Some((_, answer)) = answers.iter().find(|(line, _)| *line == request.line()) {
            return answer.clone();
        }
        // An apply that creates only, of an object a read would find: refused.
        let exists = |path: &str| {
            answers
                .iter()
                .any(|(line, (code, _))| *line == format!("GET {path}") && *code == 200)
        };
        if mock_api::creates_only(request) && exists(&request.path) {
            return mock_api::conflict();
        }
        match request.method.as_str() {
            "GET" if request.path == format!("{NS}/secrets/support-pg") => (
                200,
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "support-pg", "namespace": "tenant-a"},
                    "data": {"uri": "cG9zdGdyZXM6Ly9kYi9zdXBwb3J0"},
                }),
            ),
            "GET" => mock_api::not_found(),
            "PATCH" if is_agent => (200, agent_json.clone()),
            "POST" => (201, request.body.clone()),
            "PATCH" => (200, request.body.clone()),
            _ => (405, Value::Null),
        }
    });
    let database = Arc::new(FakeDatabase {
        fail: database_fails,
        ..Default::default()
    });
    let config = Config::parse_from([
        "switchboard-operator",
        "--runtime-image",
        "registry.local/agent-runtime:1.0",
    ]);
    let shared = Arc::new(Context::new(
        client,
        config,
        Metrics::new().unwrap(),
        Some(database.clone() as Arc<dyn Provisioner>),
    ));
    World {
        ctx: Arc::new(AgentContext::new(shared, empty_stores())),
        log,
        database,
    }
}

const NS: &str = "/api/v1/namespaces/tenant-a";
const AGENT: &str = "/apis/switchboard.dev/v1alpha1/namespaces/tenant-a/agentdeployments/support";
const EVENTS: &str = "POST /apis/events.k8s.io/v1/namespaces/tenant-a/events";

/// The body of the last status patch in `log`.
fn last_status(log: &Log) -> Value {
    log.last(&format!("PATCH {AGENT}/status"))
        .expect("a status patch")
        .body
}

fn condition(status_patch: &Value, type_: &str) -> (String, String) {
    let c = status_patch["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("{type_} in {status_patch}"));
    (
        c["status"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap().to_owned(),
    )
}

fn message(status_patch: &Value, type_: &str) -> String {
    let conditions = status_patch["status"]["conditions"].as_array().unwrap();
    let c = conditions.iter().find(|c| c["type"] == type_).unwrap();
    c["message"].as_str().unwrap().to_owned()
}

fn identifier() -> String {
    crate::database::database_identifier("tenant-a", "support")
}

#[tokio::test]
async fn a_new_agent_gets_its_database_every_child_and_a_status() {
    let world = world(&agent(), false);
    let action = reconcile(Arc::new(agent()), world.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(world.ctx.shared.config.resync()));
    assert_eq!(
        world.log.lines(),
        [
            "GET /apis/monitoring.coreos.com/v1".to_owned(),
            format!("GET {NS}/secrets/support-db"),
            format!("POST {NS}/secrets"),
            EVENTS.to_owned(),
            // The Secrets the pods read, for the digest on their template.
            // (The key Secrets are files the pods re-read: not in the digest.)
            format!("GET {NS}/secrets/model-credentials"),
            format!("GET {NS}/secrets/support-db"),
            // The client key and the admin key, created together.
            format!("POST {NS}/secrets"),
            format!("POST {NS}/secrets"),
            // Not in the caches: each child is created only if no object of its name
            // exists (one made by someone else is never taken over), with no read.
            format!("PATCH {NS}/serviceaccounts/support"),
            "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/tenant-a/roles/support".to_owned(),
            "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/tenant-a/rolebindings/support"
                .to_owned(),
            format!("PATCH {NS}/configmaps/support-config"),
            format!("PATCH {NS}/services/support"),
            "PATCH /apis/apps/v1/namespaces/tenant-a/deployments/support".to_owned(),
            // One event for the keys generated and the children applied.
            EVENTS.to_owned(),
            format!("PATCH {AGENT}/status"),
        ]
    );
    // Created only: an apply without force, naming a resource version no object
    // holds, so the API server refuses it (409) if an object of the name exists.
    for request in world.log.requests() {
        if request.method == "PATCH" && !request.path.ends_with("/status") {
            assert!(
                !request.query.contains("force=true"),
                "{}?{}",
                request.path,
                request.query
            );
            assert_eq!(
                request.body["metadata"]["resourceVersion"], "1",
                "{}",
                request.path
            );
        }
    }
    let applied = world.log.last(EVENTS).unwrap().body;
    let note = applied["note"].as_str().unwrap();
    assert!(
        note.starts_with(
            "generated the client API key in Secret support-api-key; \
             generated the admin key in Secret support-admin-key; \
             applied ServiceAccount support, "
        ),
        "{note}"
    );
    assert_eq!(applied["reason"], "Applied");
    assert_eq!(
        world.database.calls(),
        [format!("ensure {} new=true", identifier())]
    );
    let requests = world.log.requests();
    let secrets: Vec<_> = requests
        .iter()
        .filter(|r| r.line() == format!("POST {NS}/secrets"))
        .map(|r| r.body["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        secrets,
        ["support-db", "support-api-key", "support-admin-key"]
    );
    let status = last_status(&world.log);
    assert_eq!(
        condition(&status, DATABASE_READY),
        ("True".to_owned(), "Provisioned".to_owned())
    );
    assert_eq!(status["status"]["secrets"]["database"], "support-db");
    assert_eq!(status["status"]["secrets"]["adminKey"], "support-admin-key");
    assert_eq!(
        condition(&status, crds::conditions::SERVICE_MONITOR_READY).1,
        "CRDNotInstalled"
    );
}

#[tokio::test]
async fn a_database_failure_is_reported_and_retried_with_backoff() {
    let world = world(&agent(), true);
    let agent = Arc::new(agent());
    let error = reconcile(agent.clone(), world.ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(error.metric_label(), "database");
    // The children are still applied (the runtime waits for its Secret), and the
    // status says what is wrong.
    let lines = world.log.lines();
    assert!(
        lines.contains(&"PATCH /apis/apps/v1/namespaces/tenant-a/deployments/support".to_owned())
    );
    let status = last_status(&world.log);
    assert_eq!(
        condition(&status, DATABASE_READY),
        ("False".to_owned(), "DatabaseUnavailable".to_owned())
    );
    assert_eq!(condition(&status, READY).1, "DatabaseUnavailable");
    assert!(
        !status.to_string().contains("password"),
        "no credentials in the status"
    );
    let action = error_policy(agent.clone(), &error, world.ctx.clone());
    assert_ne!(
        action,
        Action::await_change(),
        "a transient failure is retried"
    );
    assert_eq!(
        world.ctx.shared.backoff.attempts(&ObjectKey::of(&*agent)),
        1
    );
}

#[tokio::test]
async fn a_stale_cached_agent_is_retried_without_a_failure() {
    // The cached copy lacks the finalizer the API server's copy already has:
    // the finalizer patch's `test` fails with 422.
    let mut stale = agent();
    stale.metadata.finalizers = None;
    let (client, log) = mock_api::client(|request| match request.method.as_str() {
        "PATCH" => (
            422,
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "Invalid", "code": 422,
                "message": "the server rejected our request due to an error in our request",
            }),
        ),
        _ => mock_api::not_found(),
    });
    let config = Config::parse_from([
        "switchboard-operator",
        "--runtime-image",
        "registry.local/agent-runtime:1.0",
    ]);
    let shared = Arc::new(Context::new(client, config, Metrics::new().unwrap(), None));
    let ctx = Arc::new(AgentContext::new(shared, empty_stores()));
    let stale = Arc::new(stale);
    let action = reconcile(stale.clone(), ctx.clone())
        .await
        .expect("a stale copy is not a failure");
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(5)));
    // One request, the finalizer patch; no event, no backoff.
    assert_eq!(log.lines(), [format!("PATCH {AGENT}")]);
    assert_eq!(ctx.shared.backoff.attempts(&ObjectKey::of(&*stale)), 0);
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_waits_for_a_change() {
    let mut invalid = agent();
    invalid.spec.image = Some("not an image".to_owned());
    let world = world(&invalid, false);
    let invalid = Arc::new(invalid);
    let error = reconcile(invalid.clone(), world.ctx.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert_eq!(world.log.lines(), [format!("PATCH {AGENT}/status")]);
    assert!(world.database.calls().is_empty(), "nothing provisioned");
    let status = last_status(&world.log);
    assert_eq!(
        condition(&status, READY),
        ("False".to_owned(), "InvalidSpec".to_owned())
    );
    assert!(message(&status, READY).contains("spec.image"), "{status}");
    // Neither provisioned nor applied: not looked at, rather than a made-up reason.
    for type_ in [DATABASE_READY, SERVICE_MONITOR_READY] {
        assert_eq!(
            condition(&status, type_),
            ("Unknown".to_owned(), "NotReconciled".to_owned())
        );
    }
    assert_eq!(status["status"]["phase"], "Failed");
    assert_eq!(status["status"]["observedGeneration"], 3);
    let action = error_policy(invalid.clone(), &error, world.ctx.clone());
    assert_eq!(action, Action::await_change());
    assert_eq!(
        world.ctx.shared.backoff.attempts(&ObjectKey::of(&*invalid)),
        0
    );
}

#[tokio::test]
async fn a_child_the_api_server_refuses_is_reported_and_retried_at_the_resync() {
    let deployment = "/apis/apps/v1/namespaces/tenant-a/deployments/support".to_owned();
    let invalid = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "Invalid", "code": 422,
        "message": "Deployment.apps \"support\" is invalid: spec.template.spec.containers[0].env[2].value: Invalid value: \"s3cr3t\": too long",
        "details": {"name": "support", "group": "apps", "kind": "Deployment", "causes": [{
            "reason": "FieldValueInvalid",
            "message": "Invalid value: \"s3cr3t\": too long",
            "field": "spec.template.spec.containers[0].env[2].value",
        }]},
    });
    let world = world_with(
        &agent(),
        false,
        vec![(format!("PATCH {deployment}"), (422, invalid))],
    );
    let agent = Arc::new(agent());
    let error = reconcile(agent.clone(), world.ctx.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::ChildRefused { .. }), "{error}");

    // The other children were applied (and said so), then the status was written.
    let lines = world.log.lines();
    let (applied, status_write) = (
        lines.iter().rposition(|l| *l == EVENTS).unwrap(),
        lines
            .iter()
            .position(|l| *l == format!("PATCH {AGENT}/status")),
    );
    assert!(status_write.is_some_and(|s| s > applied), "{lines:?}");
    let status = last_status(&world.log);
    assert_eq!(status["status"]["observedGeneration"], 3);
    assert_eq!(
        condition(&status, READY),
        ("False".to_owned(), "ChildRefused".to_owned())
    );
    let said = message(&status, READY);
    assert!(
        said.contains("Deployment support")
            && said.contains("spec.template.spec.containers[0].env[2].value (FieldValueInvalid)"),
        "{said}"
    );
    assert!(
        !status.to_string().contains("s3cr3t"),
        "no refused value in {status}"
    );
    assert_eq!(status["status"]["phase"], "Failed");
    assert_eq!(
        condition(&status, DATABASE_READY),
        ("True".to_owned(), "Provisioned".to_owned())
    );

    // No hot retries: the next look is at the resync; the warning event is as before.
    let action = error_policy(agent.clone(), &error, world.ctx.clone());
    assert_eq!(action, Action::requeue(world.ctx.shared.config.resync()));
    assert_eq!(
        world.ctx.shared.backoff.attempts(&ObjectKey::of(&*agent)),
        0
    );
    let warning = async {
        loop {
            let warning = world
                .log
                .requests()
                .into_iter()
                .find(|r| r.line() == EVENTS && r.body["type"] == "Warning");
            match warning {
                Some(event) => return event,
                None => tokio::task::yield_now().await,
            }
        }
    };
    let warning = tokio::time::timeout(std::time::Duration::from_secs(10), warning)
        .await
        .expect("the error policy's warning event");
    assert_eq!(warning.body["reason"], "KubeApiError");
    assert!(
        warning.body["note"]
            .as_str()
            .unwrap()
            .starts_with("Kubernetes API request failed while applying Deployment support"),
        "{}",
        warning.body
    );
}

#[tokio::test]
async fn a_child_named_like_an_object_the_agent_does_not_control_is_not_written_over() {
    // A Service of the agent's name, made by hand before the agent: no owner, none of
    // the operator's labels.
    let service = format!("{NS}/services/support");
    let foreign = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "support", "namespace": "tenant-a", "uid": "u-1",
                     "labels": {"app": "legacy-support"}},
        "spec": {"selector": {"app": "legacy-support"}, "ports": [{"port": 80}]},
    });
    let world = world_with(
        &agent(),
        false,
        vec![(format!("GET {service}"), (200, foreign))],
    );
    let agent = Arc::new(agent());
    let error = reconcile(agent.clone(), world.ctx.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::ChildConflict { .. }), "{error}");
    let lines = world.log.lines();
    // Only a create was tried (which the API server refuses for an existing object);
    // the Service was then read, and not applied.
    let service_patches: Vec<_> = world
        .log
        .requests()
        .into_iter()
        .filter(|r| r.line() == format!("PATCH {service}"))
        .collect();
    assert_eq!(service_patches.len(), 1, "{lines:?}");
    assert!(mock_api::creates_only(&service_patches[0]), "{lines:?}");
    assert!(lines.contains(&format!("GET {service}")), "{lines:?}");
    // The other children were applied.
    assert!(
        lines.contains(&"PATCH /apis/apps/v1/namespaces/tenant-a/deployments/support".to_owned()),
        "{lines:?}"
    );
    let status = last_status(&world.log);
    assert_eq!(
        condition(&status, READY),
        ("False".to_owned(), "ChildConflict".to_owned())
    );
    let said = message(&status, READY);
    assert!(
        said.starts_with(
            "Service support already exists and is not this agent's (made outside the \
             operator, with no owner)"
        ),
        "{said}"
    );
    // Nothing points at the other Service.
    assert!(status["status"].get("endpoint").is_none(), "{status}");
    assert_eq!(
        error_policy(agent.clone(), &error, world.ctx.clone()),
        Action::requeue(world.ctx.shared.config.resync())
    );
    // At the resync the name, known taken, is read: no refused create every time.
    let before = world.log.lines().len();
    let again = reconcile(agent, world.ctx.clone()).await.unwrap_err();
    assert!(matches!(again, Error::ChildConflict { .. }), "{again}");
    let lines = world.log.lines()[before..].to_vec();
    assert!(lines.contains(&format!("GET {service}")), "{lines:?}");
    assert!(!lines.contains(&format!("PATCH {service}")), "{lines:?}");
    // The name is remembered for this agent while it lives, and forgotten once it is
    // gone (the sweep's question: is the agent still in the cache?).
    let shared = &world.ctx.shared;
    assert_eq!(shared.taken().len(), 1);
    let live = |namespace: &str, name: &str| namespace == "tenant-a" && name == "support";
    assert_eq!(shared.forget_taken_unless(live), 0);
    assert_eq!(shared.forget_taken_unless(|_, _| false), 1);
    assert!(shared.taken().is_empty());
}

/// A child the cache does not hold yet (the watch behind) but that is the agent's:
/// the create is refused, the child read, found the agent's and as desired, and left
/// as it is (no forced apply, nothing taken).
#[tokio::test]
async fn an_own_child_missing_from_the_cache_is_read_and_left_as_it_is() {
    let objects = Objects::default();
    let world = stateful_world(&agent(), objects.clone());
    reconcile(Arc::new(agent()), world.ctx.clone())
        .await
        .unwrap();
    let service = format!("{NS}/services/support");
    assert!(objects.lock().unwrap().contains_key(&service));
    // The same context, its caches still empty: every child is tried as a create.
    let before = world.log.requests().len();
    reconcile(Arc::new(agent()), world.ctx.clone())
        .await
        .unwrap();
    let again = world.log.requests()[before..].to_vec();
    let service_lines: Vec<String> = again
        .iter()
        .filter(|r| r.path == service)
        .map(|r| r.line())
        .collect();
    assert_eq!(
        service_lines,
        [format!("PATCH {service}"), format!("GET {service}")]
    );
    assert!(
        again
            .iter()
            .filter(|r| r.method == "PATCH" && !r.path.ends_with("/status"))
            .filter(|r| !r.path.contains("/apis/events.k8s.io/"))
            .all(mock_api::creates_only),
        "no forced apply over the agent's own children: {:?}",
        again
            .iter()
            .filter(|r| r.method == "PATCH" && !mock_api::creates_only(r))
            .map(|r| (r.line(), r.body.to_string()))
            .collect::<Vec<_>>()
    );
    assert!(world.ctx.shared.taken.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_key_secret_named_like_another_owners_secret_stops_the_apply() {
    // Another controller's Secret holds the client key's name: the runtime must not
    // read it as its key, so nothing that would (the Deployment) is applied.
    let foreign = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "support-api-key", "namespace": "tenant-a", "uid": "u-2",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                        "name": "billing", "uid": "u-3", "controller": true}]},
    });
    let conflict = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "AlreadyExists", "code": 409, "message": "secrets \"support-api-key\" already exists",
    });
    let world = world_with(
        &agent(),
        false,
        vec![
            (format!("GET {NS}/secrets/support-api-key"), (200, foreign)),
            (format!("POST {NS}/secrets"), (409, conflict)),
        ],
    );
    let error = reconcile(Arc::new(agent()), world.ctx.clone())
        .await
        .unwrap_err();
    let Error::ChildConflict { kind, name, holder } = &error else {
        panic!("{error}");
    };
    assert_eq!(
        (kind.as_str(), name.as_str(), holder.as_str()),
        (
            "Secret",
            "support-api-key",
            "controlled by Deployment billing"
        )
    );
    let lines = world.log.lines();
    assert!(
        !lines.iter().any(|l| l.starts_with("PATCH /apis/apps/v1")),
        "no Deployment applied: {lines:?}"
    );
    let status = last_status(&world.log);
    assert_eq!(condition(&status, READY).1, "ChildConflict");
}

#[tokio::test]
async fn a_key_secret_the_user_brings_labelled_for_the_agent_is_used() {
    // external-secrets (say) keeps the client key, labelled for the agent.
    let brought = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "support-api-key", "namespace": "tenant-a", "uid": "u-2",
                     "labels": {"app.kubernetes.io/managed-by": "switchboard-operator",
                                "app.kubernetes.io/instance": "support"},
                     "ownerReferences": [{"apiVersion": "external-secrets.io/v1",
                        "kind": "ExternalSecret", "name": "support-key", "uid": "u-3",
                        "controller": true}]},
    });
    let conflict = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "AlreadyExists", "code": 409, "message": "already exists",
    });
    let world = world_with(
        &agent(),
        false,
        vec![
            (format!("GET {NS}/secrets/support-api-key"), (200, brought)),
            (format!("POST {NS}/secrets"), (409, conflict)),
        ],
    );
    reconcile(Arc::new(agent()), world.ctx.clone())
        .await
        .unwrap();
    assert!(
        world
            .log
            .lines()
            .contains(&"PATCH /apis/apps/v1/namespaces/tenant-a/deployments/support".to_owned())
    );
}

#[tokio::test]
async fn a_database_secret_named_like_another_owners_is_not_read() {
    // A Secret of the database Secret's name, made by hand, with a uri and password.
    let foreign = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "support-db", "namespace": "tenant-a", "uid": "u-2"},
        "data": {"password": "aHVudGVyMg==", "uri": "cG9zdGdyZXM6Ly9lbHNld2hlcmU="},
    });
    let world = world_with(
        &agent(),
        false,
        vec![(format!("GET {NS}/secrets/support-db"), (200, foreign))],
    );
    let agent = Arc::new(agent());
    let error = reconcile(agent.clone(), world.ctx.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::ChildConflict { .. }), "{error}");
    assert!(
        world.database.calls().is_empty(),
        "no role given its password"
    );
    let lines = world.log.lines();
    assert!(
        !lines.iter().any(|l| l.starts_with("PATCH /apis/apps/v1")),
        "no Deployment reading it: {lines:?}"
    );
    let status = last_status(&world.log);
    assert_eq!(
        condition(&status, READY),
        ("False".to_owned(), "ChildConflict".to_owned())
    );
    assert_eq!(condition(&status, DATABASE_READY).1, "ChildConflict");
    assert!(
        message(&status, READY).starts_with("Secret support-db already exists"),
        "{status}"
    );
    assert_eq!(
        error_policy(agent, &error, world.ctx.clone()),
        Action::requeue(world.ctx.shared.config.resync())
    );
}

/// The fixture with an External database (Secret `support-pg`), as it is applied:
/// without the finalizer.
fn external_agent() -> AgentDeployment {
    let mut agent = agent();
    agent.metadata.finalizers = None;
    agent.spec.database.mode = DatabaseMode::External;
    agent.spec.database.external_secret_ref = Some(LocalObjectRef {
        name: "support-pg".to_owned(),
    });
    agent
}

#[tokio::test]
async fn an_agent_with_an_external_database_gets_no_finalizer() {
    let agent = external_agent();
    let world = world(&agent, false);
    let action = reconcile(Arc::new(agent), world.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(world.ctx.shared.config.resync()));
    let lines = world.log.lines();
    // Nothing outside the cluster to clean up: no patch of the agent itself, and
    // the whole agent applied in this one reconcile.
    assert!(!lines.contains(&format!("PATCH {AGENT}")), "{lines:?}");
    assert!(
        lines.contains(&format!("GET {NS}/secrets/support-pg")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"PATCH /apis/apps/v1/namespaces/tenant-a/deployments/support".to_owned())
    );
    assert_eq!(lines.last().unwrap(), &format!("PATCH {AGENT}/status"));
    assert!(world.database.calls().is_empty(), "no managed database");
    let status = last_status(&world.log);
    assert_eq!(
        condition(&status, DATABASE_READY),
        ("True".to_owned(), "Provisioned".to_owned())
    );
}

#[tokio::test]
async fn a_managed_agent_gets_the_finalizer_before_its_database_then_is_applied() {
    let mut agent = agent();
    agent.metadata.finalizers = None;
    let world = world(&agent, false);
    let action = reconcile(Arc::new(agent), world.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(world.ctx.shared.config.resync()));
    let requests = world.log.requests();
    // The finalizer first (a JSON patch that tests the list is still empty), so a
    // deletion from now on waits for the database's drop ...
    assert_eq!(requests[0].line(), format!("PATCH {AGENT}"));
    assert_eq!(
        requests[0].body,
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [names::DATABASE_FINALIZER]},
        ])
    );
    // ... then the whole agent in the same reconcile: its database, every child, its
    // status.
    assert_eq!(
        world.database.calls(),
        [format!("ensure {} new=true", identifier())]
    );
    let lines = world.log.lines();
    assert!(
        lines.contains(&"PATCH /apis/apps/v1/namespaces/tenant-a/deployments/support".to_owned())
    );
    assert_eq!(lines.last().unwrap(), &format!("PATCH {AGENT}/status"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| **l == format!("PATCH {AGENT}"))
            .count(),
        1
    );
}

#[tokio::test]
async fn deleting_an_agent_without_the_finalizer_sends_nothing() {
    let mut agent = external_agent();
    agent.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let world = world(&agent, false);
    let action = reconcile(Arc::new(agent), world.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(world.log.lines().is_empty(), "{:?}", world.log.lines());
}

#[tokio::test]
async fn an_external_agent_keeps_a_finalizer_it_has_and_deletion_releases_it() {
    // An agent that had a managed database, or got the finalizer from an older
    // operator: kept while it lives, removed on deletion without a drop.
    let mut agent = external_agent();
    agent.metadata.finalizers = Some(vec![names::DATABASE_FINALIZER.to_owned()]);
    let live = world(&agent, false);
    reconcile(Arc::new(agent.clone()), live.ctx.clone())
        .await
        .unwrap();
    assert!(!live.log.lines().contains(&format!("PATCH {AGENT}")));
    agent.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let deleted = world(&agent, false);
    reconcile(Arc::new(agent), deleted.ctx.clone())
        .await
        .unwrap();
    assert!(deleted.database.calls().is_empty(), "no drop");
    assert_eq!(deleted.log.lines(), [format!("PATCH {AGENT}")]);
    assert!(removes_finalizer(&deleted.log));
}

fn deleting(policy: ReclaimPolicy) -> AgentDeployment {
    let mut agent = agent();
    agent.spec.database.reclaim_policy = policy;
    agent.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    agent
}

/// The finalizer's removal: a JSON patch of the agent that drops it.
fn removes_finalizer(log: &Log) -> bool {
    log.last(&format!("PATCH {AGENT}"))
        .is_some_and(|r| r.body.to_string().contains("\"remove\""))
}

#[tokio::test]
async fn deletion_with_retain_keeps_the_database_and_releases_the_agent() {
    let agent = deleting(ReclaimPolicy::Retain);
    let world = world(&agent, false);
    reconcile(Arc::new(agent), world.ctx.clone()).await.unwrap();
    assert!(world.database.calls().is_empty(), "the database is kept");
    assert_eq!(
        world.log.lines(),
        [EVENTS.to_owned(), format!("PATCH {AGENT}")]
    );
    assert_eq!(world.log.requests()[0].body["reason"], "DatabaseRetained");
    assert!(removes_finalizer(&world.log));
}

#[tokio::test]
async fn deletion_with_delete_drops_the_database_then_releases_the_agent() {
    let agent = deleting(ReclaimPolicy::Delete);
    let world = world(&agent, false);
    reconcile(Arc::new(agent), world.ctx.clone()).await.unwrap();
    assert_eq!(world.database.calls(), [format!("drop {}", identifier())]);
    assert_eq!(
        world.log.lines(),
        [EVENTS.to_owned(), format!("PATCH {AGENT}")]
    );
    assert_eq!(world.log.requests()[0].body["reason"], "DatabaseDropped");
    assert!(removes_finalizer(&world.log));
}

#[tokio::test]
async fn deletion_with_delete_keeps_the_finalizer_while_the_drop_fails() {
    let agent = deleting(ReclaimPolicy::Delete);
    let world = world(&agent, true);
    let error = reconcile(Arc::new(agent), world.ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(error.metric_label(), "database");
    assert_eq!(world.database.calls(), [format!("drop {}", identifier())]);
    // Only the status and an event: the finalizer stays, but the failure is visible
    // with the way out.
    let lines = world.log.lines_without_events();
    assert!(
        lines.iter().all(|l| l.contains("/status")),
        "{:?}",
        world.log.lines()
    );
    let bodies: Vec<String> = world
        .log
        .requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("DatabaseDropFailed") && b.contains("skip-database-drop")),
        "{bodies:?}"
    );
    assert!(!removes_finalizer(&world.log));
}

#[tokio::test]
async fn deletion_with_the_skip_annotation_releases_the_agent_without_a_drop() {
    let mut agent = deleting(ReclaimPolicy::Delete);
    agent.metadata.annotations = Some(
        [(names::SKIP_DATABASE_DROP.to_owned(), "true".to_owned())]
            .into_iter()
            .collect(),
    );
    let world = world(&agent, true);
    reconcile(Arc::new(agent), world.ctx.clone()).await.unwrap();
    assert!(world.database.calls().is_empty(), "no drop is tried");
    assert_eq!(
        world.log.requests()[0].body["reason"],
        "DatabaseDropSkipped"
    );
    assert!(removes_finalizer(&world.log));
}

/// What a stateful mock API server holds: the last body created or applied at each
/// object path.
type Objects = Arc<Mutex<std::collections::BTreeMap<String, Value>>>;

/// The object path a request names (a create names the collection: the new object's
/// name is in its body).
fn object_path(request: &mock_api::Request) -> String {
    match request.method.as_str() {
        "POST" => format!(
            "{}/{}",
            request.path,
            request.body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
        ),
        _ => request.path.clone(),
    }
}

/// A Secret as the API server keeps it: `stringData` moved into `data`.
fn as_stored(body: &Value) -> Value {
    let Ok(mut secret) = serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(body.clone())
    else {
        return body.clone();
    };
    if secret.type_.is_none() && body["kind"] != "Secret" {
        return body.clone();
    }
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (key, value) in strings {
            data.insert(key, k8s_openapi::ByteString(value.into_bytes()));
        }
    }
    serde_json::to_value(secret).unwrap()
}

/// The resource versions the mock API server gives the objects written to it.
static VERSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(100);

/// A reconcile context over a mock API server that keeps what it is sent in `objects`
/// (reads answer from it), with caches holding those objects as the watches would.
fn stateful_world(agent: &AgentDeployment, objects: Objects) -> World {
    let agent_json = serde_json::to_value(agent).unwrap();
    let kept = objects.clone();
    let (client, log) = mock_api::client(move |request| {
        let path = object_path(request);
        let mut objects = kept.lock().unwrap();
        match request.method.as_str() {
            "GET" => objects
                .get(&path)
                .map_or_else(mock_api::not_found, |o| (200, o.clone())),
            "PATCH" if path.starts_with(AGENT) => (200, agent_json.clone()),
            "POST" if path.contains("/events/") => (201, request.body.clone()),
            "PATCH" if mock_api::creates_only(request) && objects.contains_key(&path) => {
                mock_api::conflict()
            }
            "POST" | "PATCH" => {
                let mut stored = as_stored(&request.body);
                // A new resource version per write, as the API server gives.
                let version = VERSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                stored["metadata"]["resourceVersion"] = Value::from(version.to_string());
                objects.insert(path, stored.clone());
                (if request.method == "POST" { 201 } else { 200 }, stored)
            }
            _ => (405, Value::Null),
        }
    });
    let kept = objects.lock().unwrap().clone();
    let of_kind = |collection: &str| -> Vec<Value> {
        kept.iter()
            .filter(|(path, _)| {
                path.rsplit_once('/')
                    .is_some_and(|(parent, _)| parent.ends_with(collection))
            })
            .map(|(_, o)| o.clone())
            .collect()
    };
    fn typed<K: serde::de::DeserializeOwned>(objects: Vec<Value>) -> Vec<K> {
        objects
            .into_iter()
            .map(|o| serde_json::from_value(o).unwrap())
            .collect()
    }
    fn compact<K>(objects: Vec<Value>) -> Vec<Compact<K>>
    where
        K: kube::Resource + serde::Serialize + serde::de::DeserializeOwned,
    {
        typed::<K>(objects)
            .iter()
            .map(|o| Compact::new(o).unwrap())
            .collect()
    }
    use kube::core::PartialObjectMetaExt;
    let secrets: Vec<Secret> = typed(of_kind("/secrets"));
    let stores = indexed(Caches {
        deployments: store(compact::<Deployment>(of_kind("/deployments"))),
        service_accounts: store(compact::<ServiceAccount>(of_kind("/serviceaccounts"))),
        roles: store(compact::<Role>(of_kind("/roles"))),
        role_bindings: store(compact::<RoleBinding>(of_kind("/rolebindings"))),
        config_maps: store(compact::<ConfigMap>(of_kind("/configmaps"))),
        services: store(compact::<Service>(of_kind("/services"))),
        secrets: store(
            secrets
                .into_iter()
                .map(|s| s.metadata.into_request_partial())
                .collect(),
        ),
        pods: store(vec![]),
        channels: store(vec![]),
        agents: store(vec![]),
        tool_servers: store(vec![]),
    });
    let database = Arc::new(FakeDatabase::default());
    let config = Config::parse_from([
        "switchboard-operator",
        "--runtime-image",
        "registry.local/agent-runtime:1.0",
    ]);
    let shared = Arc::new(Context::new(
        client,
        config,
        Metrics::new().unwrap(),
        Some(database.clone() as Arc<dyn Provisioner>),
    ));
    World {
        ctx: Arc::new(AgentContext::new(shared, stores)),
        log,
        database,
    }
}

/// Whether a request changes something on the API server.
fn is_write(line: &str) -> bool {
    crate::metrics::is_write(line.split(' ').next().unwrap_or_default())
}

/// The agent with the status of the last status write in `log` (as the watch would
/// bring it back).
fn with_written_status(agent: &AgentDeployment, log: &Log) -> AgentDeployment {
    let mut agent = agent.clone();
    if let Some(status) = log.last(&format!("PATCH {AGENT}/status")) {
        agent.status = Some(serde_json::from_value(status.body["status"].clone()).unwrap());
    }
    agent
}

/// Creates everything for `agent()` in `objects`, has the runtime Deployment report
/// its pod available (as kube-controller-manager and kwok would), and reconciles
/// once more so the status says so. Returns the agent with that status.
async fn converge(objects: &Objects) -> AgentDeployment {
    let first = stateful_world(&agent(), objects.clone());
    reconcile(Arc::new(agent()), first.ctx.clone())
        .await
        .unwrap();
    assert!(first.log.lines().iter().any(|l| is_write(l)));
    let deployment = "/apis/apps/v1/namespaces/tenant-a/deployments/support";
    objects.lock().unwrap().get_mut(deployment).unwrap()["status"] = serde_json::json!({
        "replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                        "message": "Deployment has minimum availability."}],
    });
    let agent = with_written_status(&agent(), &first.log);
    let second = stateful_world(&agent, objects.clone());
    reconcile(Arc::new(agent.clone()), second.ctx.clone())
        .await
        .unwrap();
    let agent = with_written_status(&agent, &second.log);
    let available = agent
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == crds::conditions::AVAILABLE)
        .map(|c| c.status.clone());
    assert_eq!(available.as_deref(), Some("True"));
    agent
}

/// "0 writes while idle": once an agent's children, Secrets, database and status are
/// in place, a reconcile (a resync, a restart of the operator, a watch event that
/// changed nothing) reads but writes nothing, not even an event.
#[tokio::test]
async fn a_converged_agent_is_reconciled_without_a_single_write() {
    let objects = Objects::default();
    let converged = converge(&objects).await;

    // A fresh operator (nothing remembered but what the caches hold), then the same
    // one again (its database check remembered).
    let restarted = stateful_world(&converged, objects.clone());
    for round in ["after a restart", "on a resync"] {
        let before = restarted.log.lines().len();
        let action = reconcile(Arc::new(converged.clone()), restarted.ctx.clone())
            .await
            .unwrap();
        assert_eq!(
            action,
            Action::requeue(restarted.ctx.shared.config.resync())
        );
        let writes: Vec<String> = restarted.log.lines()[before..]
            .iter()
            .filter(|l| is_write(l))
            .cloned()
            .collect();
        assert!(writes.is_empty(), "writes {round}: {writes:?}");
    }
    // The database is checked again after a restart (not created), and not on the
    // resync right after.
    assert_eq!(
        restarted.database.calls(),
        [format!("ensure {} new=false", identifier())]
    );
}

/// The converse, so the test above cannot pass by never writing: a child edited by
/// hand is put back, and only that child is written.
#[tokio::test]
async fn a_converged_agent_with_a_child_edited_by_hand_gets_only_that_child_applied() {
    let objects = Objects::default();
    let converged = converge(&objects).await;
    let service = format!("{NS}/services/support");
    objects.lock().unwrap().get_mut(&service).unwrap()["spec"]["ports"][0]["port"] =
        Value::from(1234);

    let world = stateful_world(&converged, objects.clone());
    reconcile(Arc::new(converged), world.ctx.clone())
        .await
        .unwrap();
    let writes: Vec<String> = world
        .log
        .lines_without_events()
        .into_iter()
        .filter(|l| is_write(l))
        .collect();
    assert_eq!(writes, [format!("PATCH {service}")]);
    // The repair of the agent's own object is forced (the hand edit's fields are
    // another manager's).
    let repair = world.log.last(&format!("PATCH {service}")).unwrap();
    assert!(repair.query.contains("force=true"), "{}", repair.query);
}

/// The Secrets the runtime pods read are read again only when the watch saw one of
/// them change (or has not seen them): a converged agent whose Secrets the watch knows
/// is reconciled without a single GET of a Secret, and one whose model key changed
/// reads them again and rolls its pods.
#[tokio::test]
async fn the_secrets_the_pods_read_are_read_again_only_when_one_changed() {
    let objects = Objects::default();
    let model_key = format!("{NS}/secrets/model-credentials");
    let model_secret = |version: &str, key: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "model-credentials", "namespace": "tenant-a", "resourceVersion": version},
            "data": {"openai-api-key": key},
        })
    };
    objects
        .lock()
        .unwrap()
        .insert(model_key.clone(), model_secret("7", "c2stb25l"));
    let converged = Box::pin(converge(&objects)).await;
    let world = stateful_world(&converged, objects.clone());
    let secret_gets = |from: usize| -> Vec<String> {
        world.log.lines()[from..]
            .iter()
            .filter(|l| l.starts_with(&format!("GET {NS}/secrets/")))
            .cloned()
            .collect()
    };
    let watch_sees = |path: &str| {
        let object = objects.lock().unwrap()[path].clone();
        let secret: PartialObjectMeta<Secret> = serde_json::from_value(object).unwrap();
        world
            .ctx
            .shared
            .secret_versions
            .observe(Some("tenant-a"), &Event::Apply(secret));
    };
    let template_digest = || -> Value {
        let deployment = "/apis/apps/v1/namespaces/tenant-a/deployments/support";
        objects.lock().unwrap()[deployment]["spec"]["template"]["metadata"]["annotations"]
            [crate::agent::secrets::SECRETS_HASH]
            .clone()
    };

    // Nothing seen by the watch yet (a fresh operator): read.
    Box::pin(reconcile(Arc::new(converged.clone()), world.ctx.clone()))
        .await
        .unwrap();
    // (The database step of a fresh operator reads its Secret too, once.)
    assert_eq!(
        secret_gets(0),
        [
            format!("GET {NS}/secrets/support-db"),
            format!("GET {NS}/secrets/model-credentials"),
            format!("GET {NS}/secrets/support-db"),
        ]
    );
    // Both seen at the versions read: not read again.
    watch_sees(&model_key);
    watch_sees(&format!("{NS}/secrets/support-db"));
    let before = world.log.lines().len();
    Box::pin(reconcile(Arc::new(converged.clone()), world.ctx.clone()))
        .await
        .unwrap();
    assert_eq!(secret_gets(before), Vec::<String>::new());
    let digest = template_digest();
    assert!(digest.is_string(), "{digest}");

    // The model key rotated: read again, and the pods roll (a new digest).
    objects
        .lock()
        .unwrap()
        .insert(model_key.clone(), model_secret("8", "c2stdHdv"));
    watch_sees(&model_key);
    let before = world.log.lines().len();
    Box::pin(reconcile(Arc::new(converged), world.ctx.clone()))
        .await
        .unwrap();
    assert_eq!(secret_gets(before).len(), 2, "{:?}", secret_gets(before));
    assert_ne!(template_digest(), digest);
}

/// An External database's Secret is read once per version: while the watch shows the
/// version that was read and found to hold `uri`, a reconcile trusts it; a new version
/// is read again, and one without `uri` is reported.
#[tokio::test]
async fn the_external_database_secret_is_read_once_per_version() {
    let objects = Objects::default();
    let path = format!("{NS}/secrets/support-pg");
    let external_secret = |version: &str, data: Value| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "support-pg", "namespace": "tenant-a", "resourceVersion": version},
            "data": data,
        })
    };
    objects.lock().unwrap().insert(
        path.clone(),
        external_secret("3", serde_json::json!({"uri": "cG9zdGdyZXM6Ly9kYg=="})),
    );
    let model_key = format!("{NS}/secrets/model-credentials");
    objects.lock().unwrap().insert(
        model_key.clone(),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "model-credentials", "namespace": "tenant-a", "resourceVersion": "5"},
            "data": {"openai-api-key": "c2stb25l"},
        }),
    );
    let agent = external_agent();
    let world = stateful_world(&agent, objects.clone());
    let gets = |from: usize| {
        world.log.lines()[from..]
            .iter()
            .filter(|l| **l == format!("GET {path}"))
            .count()
    };
    // The watch sees both Secrets (the model key's read is the pods' digest's).
    let watch_sees = || {
        for seen in [&path, &model_key] {
            let secret: PartialObjectMeta<Secret> =
                serde_json::from_value(objects.lock().unwrap()[seen].clone()).unwrap();
            world
                .ctx
                .shared
                .secret_versions
                .observe(Some("tenant-a"), &Event::Apply(secret));
        }
    };
    let database_ready = || {
        let status = last_status(&world.log);
        condition(&status, DATABASE_READY)
    };

    // Not seen by the watch: read (here, and again for the pods' digest).
    Box::pin(reconcile(Arc::new(agent.clone()), world.ctx.clone()))
        .await
        .unwrap();
    assert_eq!(gets(0), 2);
    assert_eq!(database_ready().0, "True");
    // Seen at the version read: not read again.
    watch_sees();
    let before = world.log.lines().len();
    Box::pin(reconcile(Arc::new(agent.clone()), world.ctx.clone()))
        .await
        .unwrap();
    assert_eq!(gets(before), 0, "{:?}", world.log.lines());
    // A new version without `uri`: read, and reported.
    objects
        .lock()
        .unwrap()
        .insert(path.clone(), external_secret("4", serde_json::json!({})));
    watch_sees();
    let before = world.log.lines().len();
    let error = Box::pin(reconcile(Arc::new(agent), world.ctx.clone()))
        .await
        .unwrap_err();
    assert!(gets(before) >= 1);
    assert!(error.to_string().contains("has no `uri` key"), "{error}");
    assert_eq!(
        database_ready(),
        ("False".to_owned(), "ExternalSecretInvalid".to_owned())
    );
}

/// An object found by the create's conflict and gone by the time it is read (deleted
/// in between): the create is tried again, and goes through.
#[tokio::test]
async fn a_child_deleted_between_the_conflict_and_the_read_is_created_again() {
    let patches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = patches.clone();
    let (client, log) = mock_api::client(move |request| match request.method.as_str() {
        "PATCH" if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => {
            mock_api::conflict()
        }
        "PATCH" => (200, request.body.clone()),
        _ => mock_api::not_found(),
    });
    let config = Config::parse_from([
        "switchboard-operator",
        "--runtime-image",
        "registry.local/agent-runtime:1.0",
    ]);
    let ctx = Context::new(client.clone(), config, Metrics::new().unwrap(), None);
    let desired = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("support-config".to_owned()),
            namespace: Some("tenant-a".to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "tenant-a");
    let wrote = crate::apply::apply_child_against(&ctx, &api, desired, None)
        .await
        .unwrap();
    assert!(wrote);
    let path = format!("{NS}/configmaps/support-config");
    assert_eq!(
        log.lines(),
        [
            format!("PATCH {path}"),
            format!("GET {path}"),
            format!("PATCH {path}")
        ]
    );
    assert!(
        log.requests()
            .iter()
            .all(|r| r.method != "PATCH" || mock_api::creates_only(r))
    );
}
