//! The agent controller's caches: its children (with their managed fields dropped,
//! in their compact form, so a hand edit can be compared with what is wanted), the Secrets it
//! creates once (metadata only: their values stay out of memory), the runtime pods
//! (metadata and container waiting states only), and the shared ChatChannel,
//! AgentDeployment and ToolServer caches.

use std::fmt::Debug;

use crds::{AgentDeployment, ChatChannel, ToolServer};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStatus, Pod, PodStatus, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::runtime_pod::RuntimePod;
use crate::compact::Compact;
use crate::metrics::Metrics;
use crate::names;
use crate::watch::{observed, slim_metadata};

/// A stream of changed objects that triggers reconciles.
pub type Trigger<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// Caches the reconcile reads instead of asking the API server.
#[derive(Clone)]
pub struct Stores {
    pub deployments: Store<Compact<Deployment>>,
    pub service_accounts: Store<Compact<ServiceAccount>>,
    pub roles: Store<Compact<Role>>,
    pub role_bindings: Store<Compact<RoleBinding>>,
    pub config_maps: Store<Compact<ConfigMap>>,
    pub services: Store<Compact<Service>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub pods: Store<RuntimePod>,
    pub channels: Store<ChatChannel>,
    /// Every AgentDeployment (the shared cache): who calls whom.
    pub agents: Store<AgentDeployment>,
    /// Every ToolServer (the shared cache): what `spec.tools` names.
    pub tool_servers: Store<ToolServer>,
}

impl Stores {
    /// Waits until every cache has been filled once.
    pub async fn wait_ready(&self) {
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
            self.agents.wait_until_ready(),
            self.tool_servers.wait_until_ready(),
        );
    }
}

/// The streams of the watches behind [`Stores`], for the controller to react to.
pub struct Triggers {
    pub deployments: Trigger<Deployment>,
    pub service_accounts: Trigger<ServiceAccount>,
    pub roles: Trigger<Role>,
    pub role_bindings: Trigger<RoleBinding>,
    pub config_maps: Trigger<ConfigMap>,
    pub services: Trigger<Service>,
    pub secrets: Trigger<PartialObjectMeta<Secret>>,
    pub pods: Trigger<Pod>,
}

/// The shared caches of the kinds the agent controller reads but does not own.
pub struct SharedStores {
    pub channels: Store<ChatChannel>,
    pub agents: Store<AgentDeployment>,
    pub tool_servers: Store<ToolServer>,
}

/// Opens the watches of the operator's children in `namespace` (all when `None`);
/// `shared` are the caches shared with the other controllers.
pub fn watch_children(
    client: &Client,
    namespace: Option<&str>,
    shared: SharedStores,
    metrics: &Metrics,
) -> (Stores, Triggers) {
    let SharedStores {
        channels,
        agents,
        tool_servers,
    } = shared;
    let (deployments, deployments_t) = whole::<Deployment>(client, namespace, metrics);
    let (service_accounts, service_accounts_t) =
        whole::<ServiceAccount>(client, namespace, metrics);
    let (roles, roles_t) = whole::<Role>(client, namespace, metrics);
    let (role_bindings, role_bindings_t) = whole::<RoleBinding>(client, namespace, metrics);
    let (config_maps, config_maps_t) = whole::<ConfigMap>(client, namespace, metrics);
    let (services, services_t) = whole::<Service>(client, namespace, metrics);
    let (secrets, secrets_t) = metadata_only::<Secret>(client, namespace, metrics);
    let (pods, pods_t) = pods(client, namespace, metrics);
    (
        Stores {
            deployments,
            service_accounts,
            roles,
            role_bindings,
            config_maps,
            services,
            secrets,
            pods,
            channels,
            agents,
            tool_servers,
        },
        Triggers {
            deployments: deployments_t,
            service_accounts: service_accounts_t,
            roles: roles_t,
            role_bindings: role_bindings_t,
            config_maps: config_maps_t,
            services: services_t,
            secrets: secrets_t,
            pods: pods_t,
        },
    )
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn managed() -> watcher::Config {
    watcher::Config::default().labels(&names::managed_selector())
}

/// Objects the operator labelled, without their managed fields, cached in their
/// compact form (the trigger stream carries them whole).
fn whole<K>(
    client: &Client,
    namespace: Option<&str>,
    metrics: &Metrics,
) -> (Store<Compact<K>>, Trigger<K>)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, mut writer) = reflector::store::<Compact<K>>();
    let kind = K::kind(&()).into_owned();
    let stream = observed(
        watcher(api::<K>(client, namespace), managed()),
        metrics,
        &kind,
    )
    .default_backoff()
    .modify(slim_metadata::<K>)
    .inspect_ok(move |event| {
        if let Some(event) = converted(event, compact) {
            writer.apply_watcher_event(&event);
        }
    })
    .touched_objects()
    .boxed();
    (reader, stream)
}

/// `object`'s compact form (`None` for an object that does not serialise, which a typed
/// object from the API server always does).
fn compact<K>(object: &K) -> Option<Compact<K>>
where
    K: Resource + Serialize + DeserializeOwned,
{
    Compact::new(object)
        .inspect_err(|error| warn!(%error, name = %object.name_any(), "could not cache a child"))
        .ok()
}

/// `event` with its objects converted by `convert` (`None` when one does not convert).
fn converted<K, C>(
    event: &watcher::Event<K>,
    convert: impl Fn(&K) -> Option<C>,
) -> Option<watcher::Event<C>> {
    use watcher::Event;
    Some(match event {
        Event::Apply(o) => Event::Apply(convert(o)?),
        Event::InitApply(o) => Event::InitApply(convert(o)?),
        Event::Delete(o) => Event::Delete(convert(o)?),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    })
}

/// Metadata of the objects the operator labelled.
fn metadata_only<K>(
    client: &Client,
    namespace: Option<&str>,
    metrics: &Metrics,
) -> (Store<PartialObjectMeta<K>>, Trigger<PartialObjectMeta<K>>)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).into_owned();
    let stream = observed(
        watcher(api::<PartialObjectMeta<K>>(client, namespace), managed()),
        metrics,
        &kind,
    )
    .default_backoff()
    .modify(|object: &mut PartialObjectMeta<K>| object.metadata.managed_fields = None)
    .reflect(writer)
    .touched_objects()
    .boxed();
    (reader, stream)
}

/// The runtime pods: cached as [`RuntimePod`]s, their trigger stream carrying each
/// reduced to its metadata and the waiting state of its containers.
fn pods(
    client: &Client,
    namespace: Option<&str>,
    metrics: &Metrics,
) -> (Store<RuntimePod>, Trigger<Pod>) {
    let (reader, mut writer) = reflector::store::<RuntimePod>();
    let stream = observed(
        watcher(api::<Pod>(client, namespace), managed()),
        metrics,
        "Pod",
    )
    .default_backoff()
    .modify(slim_pod)
    .inspect_ok(move |event| {
        if let Some(event) = converted(event, |pod| Some(RuntimePod::new(pod))) {
            writer.apply_watcher_event(&event);
        }
    })
    .touched_objects()
    .boxed();
    (reader, stream)
}

/// Drops from `pod` everything but its metadata and its containers' waiting states.
pub fn slim_pod(pod: &mut Pod) {
    slim_metadata(pod);
    pod.spec = None;
    let waiting = |statuses: Option<Vec<ContainerStatus>>| {
        statuses.map(|list| {
            list.into_iter()
                .filter(|s| s.state.as_ref().is_some_and(|st| st.waiting.is_some()))
                .map(|s| ContainerStatus {
                    name: s.name,
                    image: s.image,
                    state: s.state,
                    ..Default::default()
                })
                .collect()
        })
    };
    pod.status = pod.status.take().map(|status| PodStatus {
        container_statuses: waiting(status.container_statuses),
        init_container_statuses: waiting(status.init_container_statuses),
        ..Default::default()
    });
}
