//! The AgentDeployment controller: watches agents and their children, and runs the
//! reconcile pipeline dereference → validate → build (pure) → apply → status.

pub mod apply;
pub mod build;
pub mod database;
pub mod status;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crds::{AgentDeployment, ChatChannel, DatabaseMode, ReclaimPolicy};
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, instrument, warn};

use self::apply::{apply_if_changed, create_once, live_hash};
use self::build::{BuildInputs, SecretKey};
use self::status::{DatabaseState, Observed, ServiceMonitorState};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::names;
use crate::watch::tolerant_watcher;

/// How long a successful database check is trusted before it is repeated.
const DATABASE_RECHECK: Duration = Duration::from_secs(600);

/// Caches of the children, fed by the controller's watches.
struct Stores {
    deployments: Store<Deployment>,
    service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    roles: Store<PartialObjectMeta<Role>>,
    role_bindings: Store<PartialObjectMeta<RoleBinding>>,
    config_maps: Store<PartialObjectMeta<ConfigMap>>,
    services: Store<PartialObjectMeta<Service>>,
    secrets: Store<PartialObjectMeta<Secret>>,
    pods: Store<PartialObjectMeta<Pod>>,
    channels: Store<ChatChannel>,
}

impl Stores {
    async fn wait_ready(&self) {
        let _ = futures::join!(
            self.deployments.wait_until_ready(),
            self.service_accounts.wait_until_ready(),
            self.roles.wait_until_ready(),
            self.role_bindings.wait_until_ready(),
            self.config_maps.wait_until_ready(),
            self.services.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.channels.wait_until_ready(),
        );
    }
}

/// Reconcile context of one controller instance.
struct AgentContext {
    shared: Arc<Context>,
    stores: Stores,
    database_checked: Mutex<HashMap<String, Instant>>,
}

fn metadata_stream<K>(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<PartialObjectMeta<K>>,
    impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels(&names::managed_selector());
    let stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// Runs the AgentDeployment controller for `namespace` (all when `None`) until
/// `shutdown` resolves.
pub async fn run(
    shared: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = shared.client.clone();
    let ns = namespace.as_deref();

    let (agent_reader, agent_writer) = reflector::store();
    let agents =
        tolerant_watcher::<AgentDeployment>(client.clone(), ns, watcher::Config::default())
            .default_backoff()
            .reflect(agent_writer)
            .applied_objects();

    let deployment_api: Api<Deployment> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (deployments, deployment_writer) = reflector::store();
    let deployment_stream = watcher(
        deployment_api,
        watcher::Config::default().labels(&names::managed_selector()),
    )
    .default_backoff()
    .reflect(deployment_writer)
    .touched_objects();
    let (service_accounts, sa_stream) = metadata_stream::<ServiceAccount>(&client, ns);
    let (roles, role_stream) = metadata_stream::<Role>(&client, ns);
    let (role_bindings, rb_stream) = metadata_stream::<RoleBinding>(&client, ns);
    let (config_maps, cm_stream) = metadata_stream::<ConfigMap>(&client, ns);
    let (services, svc_stream) = metadata_stream::<Service>(&client, ns);
    let (secrets, secret_stream) = metadata_stream::<Secret>(&client, ns);
    let (pods, pod_stream) = metadata_stream::<Pod>(&client, ns);
    let (channels, channel_writer) = reflector::store();
    let channel_stream =
        tolerant_watcher::<ChatChannel>(client.clone(), ns, watcher::Config::default())
            .default_backoff()
            .reflect(channel_writer)
            .touched_objects();

    let context = Arc::new(AgentContext {
        stores: Stores {
            deployments,
            service_accounts,
            roles,
            role_bindings,
            config_maps,
            services,
            secrets,
            pods,
            channels,
        },
        shared: shared.clone(),
        database_checked: Mutex::new(HashMap::new()),
    });

    let config = ControllerConfig::default()
        .concurrency(shared.config.agent_concurrency)
        .debounce(Duration::from_millis(300));
    Controller::for_stream(agents, agent_reader)
        .with_config(config)
        .owns_stream(deployment_stream)
        .owns_stream(sa_stream)
        .owns_stream(role_stream)
        .owns_stream(rb_stream)
        .owns_stream(cm_stream)
        .owns_stream(svc_stream)
        .owns_stream(secret_stream)
        // Runtime pods are owned by ReplicaSets; map them to their agent by label so a
        // vanished pod's status.runtime entry is pruned.
        .watches_stream(pod_stream, |pod| {
            let agent = pod.labels().get(names::INSTANCE_LABEL)?.clone();
            Some(ObjectRef::<AgentDeployment>::new(&agent).within(&pod.namespace()?))
        })
        // The runtime's Role names the agent's channels and their signing Secrets.
        .watches_stream(channel_stream, |channel| {
            Some(
                ObjectRef::<AgentDeployment>::new(&channel.spec.agent_ref.name)
                    .within(&channel.namespace()?),
            )
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "agent reconcile did not complete");
            }
        })
        .await;
}

/// The names of the agent's ChatChannels and of their webhook signing Secrets, sorted
/// and without duplicates (so the Role's hash is stable).
fn agent_channels(
    store: &Store<ChatChannel>,
    agent: &AgentDeployment,
) -> (Vec<String>, Vec<String>) {
    let namespace = agent.namespace();
    let name = agent.name_any();
    let mut channels = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for channel in store.state() {
        if channel.namespace() != namespace || channel.spec.agent_ref.name != name {
            continue;
        }
        channels.insert(channel.name_any());
        if let Some(webhook) = &channel.spec.webhook {
            secrets.insert(webhook.signing_secret_ref.name.clone());
        }
    }
    (
        channels.into_iter().collect(),
        secrets.into_iter().collect(),
    )
}

fn object_key(agent: &AgentDeployment) -> String {
    format!(
        "{}/{}",
        agent.namespace().unwrap_or_default(),
        agent.name_any()
    )
}

#[instrument(skip_all, fields(namespace = agent.namespace().unwrap_or_default(), agent = agent.name_any()))]
async fn reconcile(agent: Arc<AgentDeployment>, ctx: Arc<AgentContext>) -> Result<Action> {
    let metrics = &ctx.shared.metrics;
    metrics.reconciles.with_label_values(&["agent"]).inc();
    let _timer = metrics
        .reconcile_duration
        .with_label_values(&["agent"])
        .start_timer();
    ctx.stores.wait_ready().await;
    let namespace = agent.namespace().unwrap_or_default();
    let api: Api<AgentDeployment> = Api::namespaced(ctx.shared.client.clone(), &namespace);
    let key = object_key(&agent);
    let action = finalizer(&api, names::DATABASE_FINALIZER, agent, |event| async {
        match event {
            FinalizerEvent::Apply(agent) => apply_agent(&agent, &ctx).await,
            FinalizerEvent::Cleanup(agent) => cleanup_agent(&agent, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    })?;
    ctx.shared.reset_backoff(&key);
    Ok(action)
}

fn error_policy(agent: Arc<AgentDeployment>, error: &Error, ctx: Arc<AgentContext>) -> Action {
    let shared = ctx.shared.clone();
    shared
        .metrics
        .failures
        .with_label_values(&["agent", error.metric_label()])
        .inc();
    warn!(
        namespace = agent.namespace().unwrap_or_default(),
        name = agent.name_any(),
        category = error.metric_label(),
        %error,
        "reconcile failed"
    );
    let reference = agent.object_ref(&());
    let reason = error.event_reason();
    let note = error.to_string();
    tokio::spawn(async move {
        shared
            .event(&reference, EventType::Warning, reason, "Reconcile", note)
            .await;
    });
    if error.is_permanent() {
        Action::await_change()
    } else {
        Action::requeue(ctx.shared.next_backoff(&object_key(&agent)))
    }
}

/// Spec problems the CRD schema cannot express (or that slipped past an older one).
pub fn validate(agent: &AgentDeployment) -> Vec<String> {
    let spec = &agent.spec;
    let mut problems = Vec::new();
    match spec.database.mode {
        DatabaseMode::External if spec.database.external_secret_ref.is_none() => problems
            .push("spec.database.externalSecretRef is required when mode is External".to_owned()),
        DatabaseMode::Managed if spec.database.external_secret_ref.is_some() => problems.push(
            "spec.database.externalSecretRef must not be set when mode is Managed".to_owned(),
        ),
        _ => {}
    }
    if spec.system_prompt.is_some() && spec.system_prompt_from.is_some() {
        problems
            .push("spec.systemPrompt and spec.systemPromptFrom are mutually exclusive".to_owned());
    }
    if let Some(image) = &spec.image
        && (image.trim().is_empty() || image.chars().any(char::is_whitespace))
    {
        problems.push(format!("spec.image {image:?} is not an image reference"));
    }
    problems
}

async fn apply_agent(agent: &AgentDeployment, ctx: &AgentContext) -> Result<Action> {
    let shared = &ctx.shared;
    let client = shared.client.clone();
    let name = agent.name_any();
    let namespace = agent.namespace().unwrap_or_default();
    let problems = validate(agent);
    if !problems.is_empty() {
        let message = problems.join("; ");
        let state = DatabaseState::NotReady {
            reason: "InvalidSpec".to_owned(),
            message: message.clone(),
            permanent: true,
        };
        write_status(agent, ctx, state, ServiceMonitorState::Disabled).await?;
        return Err(Error::InvalidSpec(message));
    }

    // Dereference what the spec points to.
    let system_prompt_from = match &agent.spec.system_prompt_from {
        None => None,
        Some(r) => {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let cm = cms
                .get_opt(&r.name)
                .await
                .map_err(Error::kube(format!("reading ConfigMap {}", r.name)))?;
            let text = cm.and_then(|cm| cm.data.and_then(|d| d.get(&r.key).cloned()));
            Some(text.ok_or_else(|| {
                Error::MissingDependency(format!(
                    "spec.systemPromptFrom: ConfigMap {} has no key {}; create it or fix the reference",
                    r.name, r.key
                ))
            })?)
        }
    };

    let (database, database_url, database_error) = ensure_database(agent, ctx).await;
    ensure_api_key(agent, ctx).await?;

    let service_monitor_wanted = agent.spec.monitoring.service_monitor.enabled;
    let service_monitor_possible =
        service_monitor_wanted && shared.service_monitor_crd_installed().await;
    let (channels, signing_secrets) = agent_channels(&ctx.stores.channels, agent);
    let inputs = BuildInputs {
        default_image: shared.config.runtime_image.clone(),
        system_prompt_from,
        database_url,
        service_monitor: service_monitor_possible,
        channels,
        signing_secrets,
    };
    let children = build::build_children(agent, &inputs)?;
    let stores = &ctx.stores;
    let mut written = Vec::new();
    macro_rules! apply_child {
        ($kind:ty, $store:expr, $desired:expr) => {{
            let desired: $kind = $desired;
            let child = desired.name_any();
            let live = $store.get(&ObjectRef::new(&child).within(&namespace));
            let api: Api<$kind> = Api::namespaced(client.clone(), &namespace);
            let kind = <$kind>::kind(&());
            if apply_if_changed(shared, &api, desired, live_hash(live.as_deref()), &kind).await? {
                written.push(format!("{} {}", <$kind>::kind(&()), child));
            }
        }};
    }
    apply_child!(
        ServiceAccount,
        stores.service_accounts,
        children.service_account
    );
    apply_child!(Role, stores.roles, children.role);
    apply_child!(RoleBinding, stores.role_bindings, children.role_binding);
    apply_child!(ConfigMap, stores.config_maps, children.config_map);
    apply_child!(Service, stores.services, children.service);
    apply_child!(Deployment, stores.deployments, children.deployment);

    let service_monitor = match children.service_monitor {
        Some(desired) => {
            let api: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &namespace,
                &build::service_monitor_resource(),
            );
            let live = api
                .get_opt(&name)
                .await
                .map_err(Error::kube("reading the ServiceMonitor"))?;
            if apply_if_changed(
                shared,
                &api,
                desired,
                live_hash(live.as_ref()),
                "ServiceMonitor",
            )
            .await?
            {
                written.push(format!("ServiceMonitor {name}"));
            }
            ServiceMonitorState::Applied
        }
        None if !service_monitor_wanted => ServiceMonitorState::Disabled,
        None => ServiceMonitorState::CrdMissing,
    };

    if !written.is_empty() {
        info!(children = ?written, "applied");
        shared
            .event(
                &agent.object_ref(&()),
                EventType::Normal,
                "Applied",
                "Apply",
                format!("applied {}", written.join(", ")),
            )
            .await;
    }

    let recheck = write_status(agent, ctx, database, service_monitor).await?;
    let resync = shared.config.resync();
    match database_error {
        Some(e) if e.is_permanent() => Ok(Action::await_change()),
        Some(e) => Err(e),
        None => Ok(Action::requeue(recheck.map_or(resync, |d| d.min(resync)))),
    }
}

/// Creates the client API key Secret once; an existing one is never touched.
async fn ensure_api_key(agent: &AgentDeployment, ctx: &AgentContext) -> Result<()> {
    let namespace = agent.namespace().unwrap_or_default();
    let secret_name = names::api_key_secret(&agent.name_any());
    if ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&secret_name).within(&namespace))
        .is_some()
    {
        return Ok(());
    }
    let key = format!("sb-{}", database::generate_password());
    let secret = build::api_key_secret(agent, &key)?;
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), &namespace);
    if create_once(&ctx.shared, &api, &secret).await? {
        ctx.shared
            .event(
                &agent.object_ref(&()),
                EventType::Normal,
                "ApiKeyCreated",
                "CreateSecret",
                format!("generated the client API key in Secret {secret_name}"),
            )
            .await;
    }
    Ok(())
}

/// Provisions (Managed) or checks (External) the database. Returns its state for the
/// status, where the runtime finds its URL, and the error to retry with, if any.
async fn ensure_database(
    agent: &AgentDeployment,
    ctx: &AgentContext,
) -> (DatabaseState, SecretKey, Option<Error>) {
    let name = agent.name_any();
    let namespace = agent.namespace().unwrap_or_default();
    let not_ready = |reason: &str, error: Error| {
        (
            DatabaseState::NotReady {
                reason: reason.to_owned(),
                message: error.to_string(),
                permanent: error.is_permanent(),
            },
            error,
        )
    };
    match agent.spec.database.mode {
        DatabaseMode::External => {
            let Some(reference) = &agent.spec.database.external_secret_ref else {
                let (s, e) = not_ready(
                    "InvalidSpec",
                    Error::InvalidSpec("spec.database.externalSecretRef is required".to_owned()),
                );
                return (
                    s,
                    SecretKey {
                        name: String::new(),
                        key: String::new(),
                    },
                    Some(e),
                );
            };
            let url = SecretKey {
                name: reference.name.clone(),
                key: names::DATABASE_URI_KEY.to_owned(),
            };
            let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), &namespace);
            match api.get_opt(&reference.name).await {
                Ok(Some(secret)) => {
                    let has_uri = secret.data.as_ref().is_some_and(|d| {
                        d.get(names::DATABASE_URI_KEY)
                            .is_some_and(|v| !v.0.is_empty())
                    });
                    if has_uri {
                        (
                            DatabaseState::Ready {
                                secret: reference.name.clone(),
                                generated: false,
                            },
                            url,
                            None,
                        )
                    } else {
                        let (s, e) = not_ready(
                            "ExternalSecretInvalid",
                            Error::MissingDependency(format!(
                                "Secret {} has no `uri` key; add a postgres:// URL under `uri`",
                                reference.name
                            )),
                        );
                        (s, url, Some(e))
                    }
                }
                Ok(None) => {
                    let (s, e) = not_ready(
                        "ExternalSecretNotFound",
                        Error::MissingDependency(format!(
                            "Secret {} named by spec.database.externalSecretRef does not exist; create it",
                            reference.name
                        )),
                    );
                    (s, url, Some(e))
                }
                Err(e) => {
                    let (s, e) = not_ready(
                        "ExternalSecretUnreadable",
                        Error::kube("reading the external database Secret")(e),
                    );
                    (s, url, Some(e))
                }
            }
        }
        DatabaseMode::Managed => {
            let secret_name = names::database_secret(&name);
            let url = SecretKey {
                name: secret_name.clone(),
                key: names::DATABASE_URI_KEY.to_owned(),
            };
            match ensure_managed_database(agent, ctx).await {
                Ok(()) => (
                    DatabaseState::Ready {
                        secret: secret_name,
                        generated: true,
                    },
                    url,
                    None,
                ),
                Err(e) => {
                    let reason = match &e {
                        Error::NoDatabaseAdmin => "NoDatabaseAdmin",
                        Error::Database { .. } => "DatabaseUnavailable",
                        _ => "ProvisioningFailed",
                    };
                    let (s, e) = not_ready(reason, e);
                    (s, url, Some(e))
                }
            }
        }
    }
}

async fn ensure_managed_database(agent: &AgentDeployment, ctx: &AgentContext) -> Result<()> {
    let admin = ctx.shared.database.as_ref().ok_or(Error::NoDatabaseAdmin)?;
    let name = agent.name_any();
    let namespace = agent.namespace().unwrap_or_default();
    let key = object_key(agent);
    let secret_name = names::database_secret(&name);
    let secret_cached = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&secret_name).within(&namespace))
        .is_some();
    let recently_checked = ctx
        .database_checked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .is_some_and(|at| at.elapsed() < DATABASE_RECHECK);
    if secret_cached && recently_checked {
        return Ok(());
    }

    let identifier = database::database_identifier(&namespace, &name);
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), &namespace);
    let read_password = |secret: Option<Secret>| -> Result<Option<String>> {
        let Some(secret) = secret else {
            return Ok(None);
        };
        let password = secret
            .data
            .as_ref()
            .and_then(|d| d.get("password"))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|p| !p.is_empty());
        password.map(Some).ok_or_else(|| {
            Error::MissingDependency(format!(
                "Secret {secret_name} exists but has no password; delete it and the operator resets the password"
            ))
        })
    };
    let existing = read_password(
        api.get_opt(&secret_name)
            .await
            .map_err(Error::kube("reading the database Secret"))?,
    )?;
    let (password, is_new) = match existing {
        Some(p) => (p, false),
        None => {
            // Write the Secret first: if the operator dies before the role exists, the
            // next run finds the password and creates the role with it.
            let password = database::generate_password();
            let secret =
                build::database_secret(agent, &admin.credentials(&identifier, password.clone()))?;
            if create_once(&ctx.shared, &api, &secret).await? {
                (password, true)
            } else {
                let raced = api
                    .get_opt(&secret_name)
                    .await
                    .map_err(Error::kube("reading the database Secret"))?;
                (read_password(raced)?.unwrap_or(password), false)
            }
        }
    };
    admin.ensure(&identifier, &password, is_new).await?;
    if is_new {
        ctx.shared
            .event(
                &agent.object_ref(&()),
                EventType::Normal,
                "DatabaseProvisioned",
                "ProvisionDatabase",
                format!(
                    "database and role {identifier} ready; credentials in Secret {secret_name}"
                ),
            )
            .await;
    }
    ctx.database_checked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, Instant::now());
    Ok(())
}

/// Computes the status from what was applied and observed, prunes runtime entries of
/// pods that are gone, and writes the status only when more than a timestamp changed.
async fn write_status(
    agent: &AgentDeployment,
    ctx: &AgentContext,
    database: DatabaseState,
    service_monitor: ServiceMonitorState,
) -> Result<Option<Duration>> {
    let shared = &ctx.shared;
    let name = agent.name_any();
    let namespace = agent.namespace().unwrap_or_default();
    let api: Api<AgentDeployment> = Api::namespaced(shared.client.clone(), &namespace);
    let current = agent.status.clone().unwrap_or_default();

    let live_pods: BTreeSet<String> = ctx
        .stores
        .pods
        .state()
        .iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace.as_str())
                && p.labels().get(names::INSTANCE_LABEL) == Some(&name)
        })
        .map(|p| p.name_any())
        .collect();
    let (live, stale): (Vec<_>, Vec<_>) = current
        .runtime
        .iter()
        .enumerate()
        .partition(|(_, r)| live_pods.contains(&r.name));
    if !stale.is_empty() {
        // The pods own their entries: remove exactly the stale ones, by index, each
        // guarded by a test of its name so a concurrent change fails the patch instead.
        let mut ops = Vec::new();
        for (index, entry) in stale.iter().rev() {
            ops.push(json!({ "op": "test", "path": format!("/status/runtime/{index}/name"), "value": entry.name }));
            ops.push(json!({ "op": "remove", "path": format!("/status/runtime/{index}") }));
        }
        let patch: json_patch::Patch =
            serde_json::from_value(json!(ops)).map_err(|source| Error::Serialize {
                what: "runtime prune patch".to_owned(),
                source,
            })?;
        shared.metrics.write("AgentDeployment", "prune-runtime");
        api.patch_status(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map_err(Error::kube("pruning stale status.runtime entries"))?;
        info!(
            pruned = stale.len(),
            "pruned runtime reports of pods that no longer exist"
        );
    }
    let runtime: Vec<_> = live.into_iter().map(|(_, r)| r.clone()).collect();
    let now = Timestamp::now();
    // Look again when the freshest runtime report would go stale, so a runtime that
    // stops reporting turns RuntimeReady False within the heartbeat window.
    let recheck = status::next_staleness_check(&runtime, now);

    let deployment = ctx
        .stores
        .deployments
        .get(&ObjectRef::new(&name).within(&namespace));
    let observed = Observed {
        generation: agent.metadata.generation,
        database,
        deployment: deployment.as_deref(),
        runtime: &runtime,
        now,
        service_monitor,
        endpoint: names::endpoint(&name, &namespace, &shared.config.cluster_domain),
        selector: names::selector_string(&name),
        api_key_secret: names::api_key_secret(&name),
    };
    let desired = status::desired_status(&current, &observed);
    if !status::status_differs(agent.status.as_ref(), &desired) {
        return Ok(recheck);
    }
    let body = json!({
        "apiVersion": AgentDeployment::api_version(&()),
        "kind": AgentDeployment::kind(&()),
        "status": desired,
    });
    shared.metrics.write("AgentDeployment", "apply-status");
    api.patch_status(
        &name,
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube("writing the status"))?;
    Ok(recheck)
}

/// On deletion: drop the managed database and role with `reclaimPolicy: Delete`, keep
/// them (and say so) with `Retain`.
async fn cleanup_agent(agent: &AgentDeployment, ctx: &AgentContext) -> Result<Action> {
    let shared = &ctx.shared;
    if agent.spec.database.mode != DatabaseMode::Managed {
        return Ok(Action::await_change());
    }
    let name = agent.name_any();
    let namespace = agent.namespace().unwrap_or_default();
    let identifier = database::database_identifier(&namespace, &name);
    let reference = agent.object_ref(&());
    match agent.spec.database.reclaim_policy {
        ReclaimPolicy::Delete => {
            let admin = shared.database.as_ref().ok_or(Error::NoDatabaseAdmin)?;
            admin.drop_database(&identifier).await?;
            info!(%identifier, "dropped the managed database and role");
            shared
                .event(
                    &reference,
                    EventType::Normal,
                    "DatabaseDropped",
                    "DeleteDatabase",
                    format!("dropped database and role {identifier} (reclaimPolicy: Delete)"),
                )
                .await;
        }
        ReclaimPolicy::Retain => {
            info!(%identifier, "keeping the managed database and role");
            shared
                .event(
                    &reference,
                    EventType::Normal,
                    "DatabaseRetained",
                    "RetainDatabase",
                    format!(
                        "kept database and role {identifier} (reclaimPolicy: Retain); drop them by hand when no longer needed"
                    ),
                )
                .await;
        }
    }
    ctx.database_checked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&object_key(agent));
    Ok(Action::await_change())
}
