//! Names, labels and annotations shared by the builders, the status writer and the
//! watches, so every part agrees on what an agent's children are called.

use std::collections::BTreeMap;

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "switchboard-operator";
/// Finalizer that drops (or keeps) the managed database on deletion.
pub const DATABASE_FINALIZER: &str = "switchboard.dev/database";
/// Annotation on each child: hash of what the operator last applied.
pub const APPLIED_HASH: &str = "switchboard.dev/applied-hash";
/// Pod template annotation: hash of the rendered runtime configuration.
pub const CONFIG_HASH: &str = "switchboard.dev/config-hash";
/// Annotation on an agent: `"true"` lets a `reclaimPolicy: Delete` agent be deleted
/// without dropping its database (the way out when the drop cannot succeed).
pub const SKIP_DATABASE_DROP: &str = "switchboard.dev/skip-database-drop";
/// Label on every child; the operator's watches select on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "switchboard-operator";
/// Label naming the agent a child belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Label naming what a child is.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Value of [`NAME_LABEL`] on runtime objects.
pub const RUNTIME_APP: &str = "switchboard-agent";
/// Key of the rendered configuration in the ConfigMap.
pub const CONFIG_KEY: &str = "agent.yaml";
/// Where the ConfigMap is mounted in the runtime container.
pub const CONFIG_DIR: &str = "/etc/switchboard";
/// Port the runtime listens on.
pub const HTTP_PORT: i32 = 8080;
/// Key of the client API key in its Secret.
pub const API_KEY_KEY: &str = "api-key";
/// Key of the database URL in the credentials Secret.
pub const DATABASE_URI_KEY: &str = "uri";
/// Env var carrying the database URL.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";
/// Env var carrying the client API key.
pub const API_KEY_ENV: &str = "SWITCHBOARD_API_KEY";

/// ConfigMap with the rendered runtime configuration.
pub fn config_map(agent: &str) -> String {
    format!("{agent}-config")
}

/// Secret with the client API key.
pub fn api_key_secret(agent: &str) -> String {
    format!("{agent}-api-key")
}

/// Secret with the admin key (`/api/admin/*`).
pub fn admin_key_secret(agent: &str) -> String {
    format!("{agent}-admin-key")
}

/// Secret with a channel's own client key (`spec.clientKey: Channel`).
pub fn channel_key_secret(channel: &str) -> String {
    format!("{channel}-channel-key")
}

/// Where the key Secrets are mounted in the runtime container (one projected
/// volume; the runtime re-reads it, so rotation needs no restart).
pub const KEYS_DIR: &str = "/var/run/switchboard/keys";

/// Secret with the managed database's credentials.
pub fn database_secret(agent: &str) -> String {
    format!("{agent}-db")
}

/// Env var carrying the upstream key of model `index` (0 = primary).
pub fn model_key_env(index: usize) -> String {
    format!("SWITCHBOARD_MODEL_KEY_{index}")
}

/// Labels selecting an agent's runtime pods (the Deployment's and Service's selector).
pub fn selector_labels(agent: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), RUNTIME_APP.to_owned()),
        (INSTANCE_LABEL.to_owned(), agent.to_owned()),
    ])
}

/// Labels of every child and runtime pod.
pub fn labels(agent: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(agent);
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    labels.insert(
        "app.kubernetes.io/part-of".to_owned(),
        "switchboard".to_owned(),
    );
    labels.insert(
        "app.kubernetes.io/component".to_owned(),
        "runtime".to_owned(),
    );
    labels
}

/// The selector as a label-selector string (`status.selector`).
pub fn selector_string(agent: &str) -> String {
    selector_labels(agent)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The label selector of the operator's child watches.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// In-cluster URL of an agent's Service.
pub fn endpoint(agent: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("http://{agent}.{namespace}.svc.{cluster_domain}:{HTTP_PORT}")
}

/// Label on an agent-call key Secret naming the agent it opens (the callee); the
/// Secret itself belongs to the caller.
pub const CALLEE_LABEL: &str = "switchboard.dev/callee";

/// Secret with the key `caller` calls `callee` with (owned by the caller; projected
/// into the callee's keys volume as file `agent.<caller>`).
pub fn agent_call_key_secret(caller: &str, callee: &str) -> String {
    format!("{caller}-calls-{callee}")
}

/// Env var of a caller's pods holding the key it calls `callee` with.
pub fn agent_call_key_env(callee: &str) -> String {
    format!("SWITCHBOARD_AGENT_KEY_{}", env_suffix(callee))
}

/// Env var holding the value of header `index` of ToolServer `server`.
pub fn tool_header_env(server: &str, index: usize) -> String {
    format!("SWITCHBOARD_TOOL_{}_HEADER_{index}", env_suffix(server))
}

/// A DNS label as an env var name part (`search-tools` → `SEARCH_TOOLS`); distinct
/// labels stay distinct (labels hold no `_`).
fn env_suffix(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}
