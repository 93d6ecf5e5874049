//! The agent controller's caches: its children (with their managed fields dropped,
//! in their compact form, so a hand edit can be compared with what is wanted), the Secrets it
//! creates once (metadata only: their values stay out of memory), the runtime pods
//! (metadata and container waiting states only), and the shared ChatChannel,
//! AgentDeployment and ToolServer caches.

use std::fmt::Debug;
use std::sync::Arc;

use crds::{AgentDeployment, ChatChannel, ToolServer};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStatus, Pod, PodCondition, PodStatus, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::runtime_pod::RuntimePod;
use crate::compact::Compact;
use crate::index::{Index, IndexWriter, Values, index};
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
    /// The Deployments by the Secrets they read.
    pub deployments_by_secret: Index<Compact<Deployment>>,
    /// The agent-call key Secrets by the agent that holds them (its instance label).
    pub key_secrets: Index<PartialObjectMeta<Secret>>,
    /// The runtime pods by their agent.
    pub agent_pods: Index<RuntimePod>,
    /// The agents by the agents their `spec.tools` names.
    pub callers: Index<AgentDeployment>,
    /// The ChatChannels by the agent they serve.
    pub agent_channels: Index<ChatChannel>,
}

impl Stores {
    /// Whether agent `name` of `agent`'s namespace is cached.
    pub fn agent_exists(&self, agent: &AgentDeployment, name: &str) -> bool {
        let reference = ObjectRef::new(name);
        let reference = match agent.namespace() {
            Some(namespace) => reference.within(&namespace),
            None => reference,
        };
        self.agents.get(&reference).is_some()
    }

    /// The cached ChatChannels of `agent`'s namespace that serve it.
    pub fn channels_of(&self, agent: &AgentDeployment) -> Vec<Arc<ChatChannel>> {
        self.agent_channels.get(
            agent.namespace().as_deref().unwrap_or_default(),
            &agent.name_any(),
        )
    }

    /// The cached agents of `agent`'s namespace whose `spec.tools` names it.
    pub fn callers_of(&self, agent: &AgentDeployment) -> Vec<Arc<AgentDeployment>> {
        self.callers.get(
            agent.namespace().as_deref().unwrap_or_default(),
            &agent.name_any(),
        )
    }

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
    /// The ChatChannels by the agent they serve (kept by the shared watch).
    pub agent_channels: Index<ChatChannel>,
    pub agents: Store<AgentDeployment>,
    /// The agents by the agents their `spec.tools` names (kept by the shared watch).
    pub callers: Index<AgentDeployment>,
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
        agent_channels,
        agents,
        callers,
        tool_servers,
    } = shared;
    let (deployments, deployments_t, deployments_by_secret) =
        whole_indexed::<Deployment>(client, namespace, metrics, deployment_secrets);
    let (service_accounts, service_accounts_t) =
        whole::<ServiceAccount>(client, namespace, metrics);
    let (roles, roles_t) = whole::<Role>(client, namespace, metrics);
    let (role_bindings, role_bindings_t) = whole::<RoleBinding>(client, namespace, metrics);
    let (config_maps, config_maps_t) = whole::<ConfigMap>(client, namespace, metrics);
    let (services, services_t) = whole::<Service>(client, namespace, metrics);
    let (secrets, secrets_t, key_secrets) = secrets_metadata(client, namespace, metrics);
    let (pods, pods_t, agent_pods) = pods(client, namespace, metrics);
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
            deployments_by_secret,
            key_secrets,
            agent_pods,
            callers,
            agent_channels,
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

pub(crate) fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

pub(crate) fn managed() -> watcher::Config {
    watcher::Config::default().labels(&names::managed_selector())
}

/// A kind the operator's children are cached as, whole (see [`whole`]).
trait Whole:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Serialize
    + DeserializeOwned
    + Clone
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Whole for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Objects the operator labelled, without their managed fields, cached in their
/// compact form (the trigger stream carries them whole).
fn whole<K>(
    client: &Client,
    namespace: Option<&str>,
    metrics: &Metrics,
) -> (Store<Compact<K>>, Trigger<K>)
where
    K: Whole,
{
    let (reader, writer) = reflector::store::<Compact<K>>();
    let trigger = watch_whole(client, namespace, metrics, writer, None);
    (reader, trigger)
}

/// As [`whole`], with the cache indexed under `values`.
fn whole_indexed<K>(
    client: &Client,
    namespace: Option<&str>,
    metrics: &Metrics,
    values: Values<Compact<K>>,
) -> (Store<Compact<K>>, Trigger<K>, Index<Compact<K>>)
where
    K: Whole,
{
    let (reader, writer) = reflector::store::<Compact<K>>();
    let (index, index_writer) = index(values, reader.clone());
    let trigger = watch_whole(client, namespace, metrics, writer, Some(index_writer));
    (reader, trigger, index)
}

/// The watch that fills a [`whole`] cache (and its index) and triggers reconciles.
fn watch_whole<K>(
    client: &Client,
    namespace: Option<&str>,
    metrics: &Metrics,
    mut writer: reflector::store::Writer<Compact<K>>,
    mut index: Option<IndexWriter<Compact<K>>>,
) -> Trigger<K>
where
    K: Whole,
{
    let kind = K::kind(&()).into_owned();
    observed(
        watcher(api::<K>(client, namespace), managed()),
        metrics,
        &kind,
    )
    .default_backoff()
    .modify(slim_metadata::<K>)
    .inspect_ok(move |event| {
        if let Some(event) = converted(event, compact) {
            if let Some(index) = &mut index {
                index.apply_watcher_event(&event);
            }
            writer.apply_watcher_event(&event);
        }
    })
    .touched_objects()
    .boxed()
}

/// `object`'s compact form (`None` for an object that does not serialise, which a typed
/// object from the API server always does).
pub(crate) fn compact<K>(object: &K) -> Option<Compact<K>>
where
    K: Resource + Serialize + DeserializeOwned,
{
    Compact::new(object)
        .inspect_err(|error| warn!(%error, name = %object.name_any(), "could not cache a child"))
        .ok()
}

/// `event` with its objects converted by `convert` (`None` when one does not convert).
pub(crate) fn converted<K, C>(
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

/// The Secrets a Deployment reads: the values the Deployments index keeps it under.
pub(crate) fn deployment_secrets(deployment: &Compact<Deployment>) -> Vec<Box<str>> {
    deployment.secret_refs().to_vec()
}

/// A runtime pod's agent: the value the pods index keeps it under.
pub(crate) fn pod_agent(pod: &RuntimePod) -> Vec<Box<str>> {
    pod.agent().map(Into::into).into_iter().collect()
}

/// The agent an agent-call key Secret belongs to (its instance label): the value the
/// key Secrets index keeps it under; none for the other Secrets.
pub(crate) fn key_secret_agent(secret: &PartialObjectMeta<Secret>) -> Vec<Box<str>> {
    let labels = secret.labels();
    if !labels.contains_key(names::CALLEE_LABEL) {
        return Vec::new();
    }
    labels
        .get(names::INSTANCE_LABEL)
        .map(|agent| agent.as_str().into())
        .into_iter()
        .collect()
}

/// A Secret's metadata, without its values.
type SecretMeta = PartialObjectMeta<Secret>;

/// Metadata of the Secrets the operator labelled (their values stay out of memory).
fn secrets_metadata(
    client: &Client,
    namespace: Option<&str>,
    metrics: &Metrics,
) -> (Store<SecretMeta>, Trigger<SecretMeta>, Index<SecretMeta>) {
    let (reader, mut writer) = reflector::store();
    let (key_secrets, mut index) = index(key_secret_agent, reader.clone());
    let stream = observed(
        watcher(
            api::<PartialObjectMeta<Secret>>(client, namespace),
            managed(),
        ),
        metrics,
        "Secret",
    )
    .default_backoff()
    .modify(|object: &mut PartialObjectMeta<Secret>| object.metadata.managed_fields = None)
    .inspect_ok(move |event| {
        index.apply_watcher_event(event);
        writer.apply_watcher_event(event);
    })
    .touched_objects()
    .boxed();
    (reader, stream, key_secrets)
}

/// The runtime pods: cached as [`RuntimePod`]s, their trigger stream carrying each
/// reduced to its metadata and the waiting state of its containers.
fn pods(
    client: &Client,
    namespace: Option<&str>,
    metrics: &Metrics,
) -> (Store<RuntimePod>, Trigger<Pod>, Index<RuntimePod>) {
    let (reader, mut writer) = reflector::store::<RuntimePod>();
    let (agent_pods, mut index) = index(pod_agent, reader.clone());
    let stream = observed(
        watcher(api::<Pod>(client, namespace), managed()),
        metrics,
        "Pod",
    )
    .default_backoff()
    .modify(slim_pod)
    .inspect_ok(move |event| {
        if let Some(event) = converted(event, |pod| Some(RuntimePod::new(pod))) {
            index.apply_watcher_event(&event);
            writer.apply_watcher_event(&event);
        }
    })
    .touched_objects()
    .boxed();
    (reader, stream, agent_pods)
}

/// Drops from `pod` everything but its metadata, its Ready condition and its
/// containers' waiting states.
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
        conditions: status.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.type_ == "Ready")
                .map(|c| PodCondition {
                    type_: c.type_,
                    status: c.status,
                    ..Default::default()
                })
                .collect()
        }),
        container_statuses: waiting(status.container_statuses),
        init_container_statuses: waiting(status.init_container_statuses),
        ..Default::default()
    });
}
