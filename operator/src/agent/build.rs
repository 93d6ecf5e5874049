//! Pure builders: an AgentDeployment spec (plus what it points to) in, the desired
//! children out. No I/O; unit-tested from YAML fixtures.

use std::collections::BTreeMap;

use crds::runtime_config::{
    self as rc, AgentIdentity, ContextConfig, DatabaseConfig, ModelConfig, RateLimitConfig,
    RuntimeConfig, SessionsConfig,
};
use crds::{AgentDeployment, ModelProvider, ModelSpec};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::names;

/// What the builders need besides the spec: results of the dereference step and the
/// operator's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildInputs {
    /// Image used when the spec sets none.
    pub default_image: String,
    /// The system prompt read from `spec.systemPromptFrom`, if the spec uses it.
    pub system_prompt_from: Option<String>,
    /// Where the runtime's database URL lives.
    pub database_url: SecretKey,
    /// Whether to build a ServiceMonitor (enabled in the spec and the CRD is served).
    pub service_monitor: bool,
    /// Names of the ChatChannels that lead to this agent (the runtime reports their
    /// activity into their status).
    pub channels: Vec<String>,
    /// Secrets holding those channels' webhook signing keys (the runtime reads them).
    pub signing_secrets: Vec<String>,
}

/// A key of a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretKey {
    /// Secret name.
    pub name: String,
    /// Key in the Secret.
    pub key: String,
}

/// Every child the operator applies for one agent (the two Secrets are made
/// elsewhere: they hold generated values and are created once).
#[derive(Clone, Debug)]
pub struct Children {
    /// Identity of the runtime pods.
    pub service_account: ServiceAccount,
    /// What the runtime may do.
    pub role: Role,
    /// Binds the Role to the ServiceAccount.
    pub role_binding: RoleBinding,
    /// The rendered runtime configuration.
    pub config_map: ConfigMap,
    /// The runtime pods.
    pub deployment: Deployment,
    /// The agent's in-cluster address.
    pub service: Service,
    /// Prometheus Operator scrape config, when wanted and possible.
    pub service_monitor: Option<DynamicObject>,
}

/// Builds every child of `agent`.
pub fn build_children(agent: &AgentDeployment, inputs: &BuildInputs) -> Result<Children> {
    let config = render_runtime_config(agent, inputs);
    let config_yaml = serde_yaml::to_string(&config).map_err(|e| Error::Serialize {
        what: "runtime configuration".to_owned(),
        source: serde_json::Error::io(std::io::Error::other(e.to_string())),
    })?;
    Ok(Children {
        service_account: service_account(agent)?,
        role: role(agent, inputs)?,
        role_binding: role_binding(agent)?,
        config_map: config_map(agent, &config_yaml)?,
        deployment: deployment(agent, inputs, &short_hash(config_yaml.as_bytes()))?,
        service: service(agent)?,
        service_monitor: if inputs.service_monitor {
            Some(service_monitor(agent)?)
        } else {
            None
        },
    })
}

/// The runtime configuration file for `agent`. Secrets appear only as env var names.
pub fn render_runtime_config(agent: &AgentDeployment, inputs: &BuildInputs) -> RuntimeConfig {
    let spec = &agent.spec;
    let model_chain: Vec<ModelConfig> = std::iter::once(&spec.model)
        .chain(spec.fallbacks.iter())
        .enumerate()
        .map(|(i, m)| model_config(m, i))
        .collect();
    let mut chain = model_chain.into_iter();
    let model = chain.next().unwrap_or_default();
    RuntimeConfig {
        agent: AgentIdentity {
            name: agent.name_any(),
            namespace: agent.namespace(),
        },
        model,
        fallbacks: chain.collect(),
        system_prompt: spec
            .system_prompt
            .clone()
            .or_else(|| inputs.system_prompt_from.clone()),
        context: ContextConfig {
            max_tokens: u32::try_from(spec.context.max_tokens).unwrap_or(8192),
        },
        database: DatabaseConfig {
            url_env: Some(names::DATABASE_URL_ENV.to_owned()),
            sqlite_path: None,
        },
        auth: rc::AuthConfig {
            api_key_env: names::API_KEY_ENV.to_owned(),
            ..Default::default()
        },
        sessions: SessionsConfig {
            idle_timeout_minutes: u32::try_from(spec.sessions.idle_timeout_minutes).ok(),
            retention_days: u32::try_from(spec.sessions.retention_days).ok(),
        },
        rate_limit: spec.rate_limit.as_ref().map(|r| RateLimitConfig {
            requests_per_minute_per_user: r
                .requests_per_minute_per_user
                .and_then(|v| u32::try_from(v).ok()),
            // The file's field is 32-bit; larger budgets saturate (effectively unlimited).
            tokens_per_minute: r
                .tokens_per_minute
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        }),
        fallback_responses: spec.fallback_responses.clone(),
        channels: Vec::new(),
        server: rc::ServerConfig {
            listen: format!("0.0.0.0:{}", names::HTTP_PORT),
        },
        limits: rc::LimitsConfig::default(),
    }
}

fn model_config(model: &ModelSpec, index: usize) -> ModelConfig {
    ModelConfig {
        provider: match model.provider {
            ModelProvider::Openai => rc::ModelProvider::Openai,
            ModelProvider::Anthropic => rc::ModelProvider::Anthropic,
        },
        name: model.name.clone(),
        base_url: model.base_url.clone(),
        api_key_env: model
            .api_key_secret_ref
            .as_ref()
            .map(|_| names::model_key_env(index)),
        temperature: model.temperature,
        max_output_tokens: model.max_output_tokens.and_then(|v| u32::try_from(v).ok()),
        timeout_seconds: u64::try_from(model.timeout_seconds).unwrap_or(60),
    }
}

/// Metadata common to every child: name, namespace, labels, owner reference.
fn metadata(agent: &AgentDeployment, name: &str) -> Value {
    json!({
        "name": name,
        "namespace": agent.namespace(),
        "labels": names::labels(&agent.name_any()),
        "ownerReferences": [owner_reference(agent)],
    })
}

/// The controller owner reference pointing at `agent`.
pub fn owner_reference(agent: &AgentDeployment) -> OwnerReference {
    OwnerReference {
        api_version: AgentDeployment::api_version(&()).into_owned(),
        kind: AgentDeployment::kind(&()).into_owned(),
        name: agent.name_any(),
        uid: agent.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn typed<T: DeserializeOwned>(what: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|source| Error::Serialize {
        what: what.to_owned(),
        source,
    })
}

fn service_account(agent: &AgentDeployment) -> Result<ServiceAccount> {
    typed(
        "ServiceAccount",
        json!({ "metadata": metadata(agent, &agent.name_any()) }),
    )
}

/// The runtime may read the channels of its namespace and read and report the status of
/// its own AgentDeployment, nothing else.
fn role(agent: &AgentDeployment, inputs: &BuildInputs) -> Result<Role> {
    let name = agent.name_any();
    let mut rules = vec![
        json!({
            "apiGroups": [crds::GROUP],
            "resources": ["chatchannels"],
            "verbs": ["get", "list", "watch"],
        }),
        json!({
            "apiGroups": [crds::GROUP],
            "resources": ["agentdeployments", "agentdeployments/status"],
            "resourceNames": [name],
            "verbs": ["get"],
        }),
        json!({
            "apiGroups": [crds::GROUP],
            "resources": ["agentdeployments/status"],
            "resourceNames": [name],
            "verbs": ["patch"],
        }),
    ];
    // Only this agent's channels' status, and only their signing Secrets: an empty
    // resourceNames list would grant every object, so the rules exist only when needed.
    if !inputs.channels.is_empty() {
        rules.push(json!({
            "apiGroups": [crds::GROUP],
            "resources": ["chatchannels/status"],
            "resourceNames": inputs.channels,
            "verbs": ["patch"],
        }));
    }
    if !inputs.signing_secrets.is_empty() {
        rules.push(json!({
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": inputs.signing_secrets,
            "verbs": ["get"],
        }));
    }
    typed(
        "Role",
        json!({ "metadata": metadata(agent, &name), "rules": rules }),
    )
}

fn role_binding(agent: &AgentDeployment) -> Result<RoleBinding> {
    let name = agent.name_any();
    typed(
        "RoleBinding",
        json!({
            "metadata": metadata(agent, &name),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": agent.namespace() }],
        }),
    )
}

fn config_map(agent: &AgentDeployment, config_yaml: &str) -> Result<ConfigMap> {
    typed(
        "ConfigMap",
        json!({
            "metadata": metadata(agent, &names::config_map(&agent.name_any())),
            "data": { names::CONFIG_KEY: config_yaml },
        }),
    )
}

fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": secret, "key": key } } })
}

fn deployment(
    agent: &AgentDeployment,
    inputs: &BuildInputs,
    config_hash: &str,
) -> Result<Deployment> {
    let name = agent.name_any();
    let spec = &agent.spec;
    let mut env = vec![
        json!({ "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        json!({ "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } }),
        secret_env(
            names::DATABASE_URL_ENV,
            &inputs.database_url.name,
            &inputs.database_url.key,
        ),
        secret_env(
            names::API_KEY_ENV,
            &names::api_key_secret(&name),
            names::API_KEY_KEY,
        ),
    ];
    for (i, model) in std::iter::once(&spec.model)
        .chain(&spec.fallbacks)
        .enumerate()
    {
        if let Some(key_ref) = &model.api_key_secret_ref {
            env.push(secret_env(
                &names::model_key_env(i),
                &key_ref.name,
                &key_ref.key,
            ));
        }
    }
    if let Some(tracing) = &spec.monitoring.tracing {
        env.extend([
            json!({ "name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": tracing.otlp_endpoint }),
            json!({ "name": "OTEL_SERVICE_NAME", "value": name }),
            json!({
                "name": "OTEL_RESOURCE_ATTRIBUTES",
                "value": "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.deployment.name=".to_owned() + &name,
            }),
        ]);
    }
    let resources = match &spec.resources {
        Some(r) => serde_json::to_value(r).map_err(|source| Error::Serialize {
            what: "resources".to_owned(),
            source,
        })?,
        None => json!({
            "requests": { "cpu": "50m", "memory": "64Mi" },
            "limits": { "memory": "256Mi" },
        }),
    };
    let probe = |path: &str, period: i32, failures: i32| {
        json!({
            "httpGet": { "path": path, "port": "http" },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        })
    };
    let mut pod_spec = json!({
        "serviceAccountName": name,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "containers": [{
            "name": "runtime",
            "image": spec.image.as_deref().unwrap_or(&inputs.default_image),
            "command": ["agent-runtime"],
            "args": ["--config", format!("{}/{}", names::CONFIG_DIR, names::CONFIG_KEY)],
            "ports": [{ "name": "http", "containerPort": names::HTTP_PORT, "protocol": "TCP" }],
            "env": env,
            "resources": resources,
            "livenessProbe": probe("/healthz", 10, 3),
            "readinessProbe": probe("/readyz", 5, 2),
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": true,
                "privileged": false,
                "capabilities": { "drop": ["ALL"] },
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "volumeMounts": [
                { "name": "config", "mountPath": names::CONFIG_DIR, "readOnly": true },
                { "name": "tmp", "mountPath": "/tmp" },
            ],
        }],
        "volumes": [
            { "name": "config", "configMap": { "name": names::config_map(&name) } },
            { "name": "tmp", "emptyDir": { "sizeLimit": "64Mi" } },
        ],
    });
    if let Some(scheduling) = &spec.scheduling {
        let s = serde_json::to_value(scheduling).map_err(|source| Error::Serialize {
            what: "scheduling".to_owned(),
            source,
        })?;
        if let (Some(pod), Some(s)) = (pod_spec.as_object_mut(), s.as_object()) {
            for (k, v) in s {
                pod.insert(k.clone(), v.clone());
            }
        }
    }
    let mut deployment_spec = json!({
        "selector": { "matchLabels": names::selector_labels(&name) },
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 },
        },
        "template": {
            "metadata": {
                "labels": names::labels(&name),
                "annotations": { names::CONFIG_HASH: config_hash },
            },
            "spec": pod_spec,
        },
    });
    // Without spec.replicas the field is left out entirely, so an HPA or `kubectl
    // scale` owns it and this field manager never fights them.
    if let Some(replicas) = spec.replicas {
        deployment_spec["replicas"] = json!(replicas);
    }
    typed(
        "Deployment",
        json!({ "metadata": metadata(agent, &name), "spec": deployment_spec }),
    )
}

fn service(agent: &AgentDeployment) -> Result<Service> {
    let name = agent.name_any();
    typed(
        "Service",
        json!({
            "metadata": metadata(agent, &name),
            "spec": {
                "type": "ClusterIP",
                "selector": names::selector_labels(&name),
                "ports": [{ "name": "http", "port": names::HTTP_PORT, "targetPort": "http", "protocol": "TCP" }],
            },
        }),
    )
}

/// API resource of the Prometheus Operator's ServiceMonitor.
pub fn service_monitor_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

fn service_monitor(agent: &AgentDeployment) -> Result<DynamicObject> {
    let name = agent.name_any();
    typed(
        "ServiceMonitor",
        json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": metadata(agent, &name),
            "spec": {
                "selector": { "matchLabels": names::selector_labels(&name) },
                "endpoints": [{
                    "port": "http",
                    "path": "/metrics",
                    "interval": agent.spec.monitoring.service_monitor.interval,
                }],
            },
        }),
    )
}

/// The client API key Secret (created once, never rewritten).
pub fn api_key_secret(agent: &AgentDeployment, api_key: &str) -> Result<Secret> {
    typed(
        "Secret",
        json!({
            "metadata": metadata(agent, &names::api_key_secret(&agent.name_any())),
            "type": "Opaque",
            "stringData": { names::API_KEY_KEY: api_key },
        }),
    )
}

/// Credentials of a managed database, as written into its Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseCredentials {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database name.
    pub dbname: String,
    /// Role name.
    pub user: String,
    /// Role password (never logged).
    pub password: String,
}

impl std::fmt::Debug for DatabaseCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl DatabaseCredentials {
    /// `postgres://user:password@host:port/dbname`. Names and generated passwords are
    /// `[a-z0-9_]`/alphanumeric, so nothing needs escaping.
    pub fn uri(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgres://{}:{}@{}:{}/{}",
            self.user, self.password, host, self.port, self.dbname
        )
    }
}

/// The managed database's credentials Secret.
pub fn database_secret(agent: &AgentDeployment, creds: &DatabaseCredentials) -> Result<Secret> {
    typed(
        "Secret",
        json!({
            "metadata": metadata(agent, &names::database_secret(&agent.name_any())),
            "type": "Opaque",
            "stringData": {
                "host": creds.host,
                "port": creds.port.to_string(),
                "dbname": creds.dbname,
                "user": creds.user,
                "password": creds.password,
                names::DATABASE_URI_KEY: creds.uri(),
            },
        }),
    )
}

/// First 16 hex digits of the SHA-256 of `bytes`.
pub fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Stamps `obj` with the hash of its own content (without the stamp), so a later
/// reconcile can tell from the live object's metadata alone whether it must re-apply.
pub fn stamp_applied_hash<T: Serialize + Resource>(obj: &mut T) -> Result<String> {
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .remove(names::APPLIED_HASH);
    let bytes = serde_json::to_vec(&*obj).map_err(|source| Error::Serialize {
        what: "child".to_owned(),
        source,
    })?;
    let hash = short_hash(&bytes);
    let annotations = obj.meta_mut().annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(names::APPLIED_HASH.to_owned(), hash.clone());
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    fn fixture(text: &str) -> AgentDeployment {
        serde_yaml::from_str(text).expect("fixture parses as an AgentDeployment")
    }

    fn full() -> AgentDeployment {
        fixture(include_str!("../../fixtures/agent-full.yaml"))
    }

    fn minimal() -> AgentDeployment {
        fixture(include_str!("../../fixtures/agent-minimal.yaml"))
    }

    fn inputs(service_monitor: bool) -> BuildInputs {
        BuildInputs {
            default_image: "registry.local/agent-runtime:1.0".to_owned(),
            system_prompt_from: None,
            database_url: SecretKey {
                name: "support-db".to_owned(),
                key: "uri".to_owned(),
            },
            service_monitor,
            channels: Vec::new(),
            signing_secrets: Vec::new(),
        }
    }

    fn container(children: &Children) -> &Container {
        &children
            .deployment
            .spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    #[test]
    fn runtime_config_renders_as_the_expected_file() {
        let rendered = render_runtime_config(&full(), &inputs(true));
        let expected =
            RuntimeConfig::from_yaml(include_str!("../../fixtures/agent-full.runtime.yaml"))
                .expect("expected fixture parses");
        assert_eq!(rendered, expected);
        assert!(rendered.validate().is_empty(), "{:?}", rendered.validate());
        let text = rendered.to_yaml().unwrap();
        assert!(
            !text.contains("openai-api-key") && !text.contains("model-credentials"),
            "no secret references in the file:\n{text}"
        );
    }

    #[test]
    fn every_child_is_owned_by_the_agent_and_labelled() {
        let agent = full();
        let children = build_children(&agent, &inputs(true)).unwrap();
        let metas = [
            &children.service_account.metadata,
            &children.role.metadata,
            &children.role_binding.metadata,
            &children.config_map.metadata,
            &children.deployment.metadata,
            &children.service.metadata,
            &children.service_monitor.as_ref().unwrap().metadata,
        ];
        for meta in metas {
            let owners = meta.owner_references.as_ref().expect("owner references");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "AgentDeployment");
            assert_eq!(owners[0].uid, "6f1c2f4e-0000-4000-8000-000000000001");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("tenant-a"));
            assert_eq!(
                meta.labels.as_ref().unwrap()[names::MANAGED_BY_LABEL],
                names::MANAGED_BY
            );
        }
    }

    #[test]
    fn deployment_is_restricted_probed_and_rolls_without_unavailability() {
        let children = build_children(&full(), &inputs(true)).unwrap();
        let spec = &children.deployment.spec;
        assert_eq!(spec.replicas, Some(2));
        let rolling = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(
            serde_json::to_value(&rolling.max_unavailable).unwrap(),
            json!(0)
        );
        let pod = spec.template.spec.as_ref().unwrap();
        let pod_sc = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(
            pod_sc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("support"));
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "agents");
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
        let c = container(&children);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(c.image.as_deref(), Some("registry.local/agent-runtime:1.0"));
        assert_eq!(
            c.command.as_deref(),
            Some(&["agent-runtime".to_owned()][..])
        );
        assert_eq!(
            c.args.as_ref().unwrap(),
            &["--config", "/etc/switchboard/agent.yaml"]
        );
        let live = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (live.path.as_deref(), ready.path.as_deref()),
            (Some("/healthz"), Some("/readyz"))
        );
        let env: BTreeMap<_, _> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.clone(), e.value_from.clone()))
            .collect();
        let secret_of = |name: &str| {
            let s = env[name].as_ref().unwrap().secret_key_ref.as_ref().unwrap();
            (s.name.clone(), s.key.clone())
        };
        assert_eq!(
            secret_of("DATABASE_URL"),
            ("support-db".to_owned(), "uri".to_owned())
        );
        assert_eq!(
            secret_of("SWITCHBOARD_API_KEY"),
            ("support-api-key".to_owned(), "api-key".to_owned())
        );
        assert_eq!(
            secret_of("SWITCHBOARD_MODEL_KEY_0"),
            ("model-credentials".to_owned(), "openai-api-key".to_owned())
        );
        assert_eq!(
            secret_of("SWITCHBOARD_MODEL_KEY_1"),
            (
                "model-credentials".to_owned(),
                "anthropic-api-key".to_owned()
            )
        );
        assert!(
            !env.contains_key("SWITCHBOARD_MODEL_KEY_2"),
            "the keyless fallback gets no env var"
        );
        assert!(env.contains_key("POD_NAME") && env.contains_key("POD_NAMESPACE"));
        assert!(
            c.env.as_ref().unwrap().iter().all(|e| e.value.is_none()),
            "no literal values in env"
        );
    }

    #[test]
    fn tracing_sets_the_otlp_variables_only_when_asked() {
        let env_of = |agent: &AgentDeployment| -> BTreeMap<String, Option<String>> {
            let children = build_children(agent, &inputs(true)).unwrap();
            let c = container(&children);
            c.env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.name, e.value))
                .collect()
        };
        let mut agent = full();
        agent.spec.monitoring.tracing = None;
        assert!(!env_of(&agent).keys().any(|k| k.starts_with("OTEL_")));
        agent.spec.monitoring.tracing = Some(crds::agent::TracingSpec {
            otlp_endpoint: "http://otel-collector.observability:4318".into(),
        });
        let env = env_of(&agent);
        assert_eq!(
            env["OTEL_EXPORTER_OTLP_ENDPOINT"].as_deref(),
            Some("http://otel-collector.observability:4318")
        );
        assert_eq!(env["OTEL_SERVICE_NAME"].as_deref(), Some("support"));
        assert!(
            env["OTEL_RESOURCE_ATTRIBUTES"]
                .as_deref()
                .is_some_and(|v| v.contains("k8s.pod.name=$(POD_NAME)"))
        );
    }

    #[test]
    fn config_change_changes_the_pod_template_hash() {
        let agent = full();
        let before = build_children(&agent, &inputs(true)).unwrap();
        let mut changed = agent.clone();
        changed.spec.system_prompt = Some("Be brief.".to_owned());
        let after = build_children(&changed, &inputs(true)).unwrap();
        let hash = |c: &Children| {
            c.deployment
                .spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[names::CONFIG_HASH]
                .clone()
        };
        assert_ne!(hash(&before), hash(&after));
        let again = build_children(&agent, &inputs(true)).unwrap();
        assert_eq!(hash(&before), hash(&again), "rendering is deterministic");
        // Only the config hash differs between the two Deployments' pod templates.
        assert_eq!(container(&before), container(&after));
    }

    #[test]
    fn unset_replicas_leave_the_field_out_for_an_hpa() {
        let children = build_children(
            &minimal(),
            &BuildInputs {
                system_prompt_from: Some("Hello prompt".to_owned()),
                database_url: SecretKey {
                    name: "hello-pg".to_owned(),
                    key: "uri".to_owned(),
                },
                ..inputs(false)
            },
        )
        .unwrap();
        let value = serde_json::to_value(&children.deployment).unwrap();
        assert!(value["spec"].get("replicas").is_none(), "{}", value["spec"]);
        assert!(children.service_monitor.is_none());
        let config = RuntimeConfig::from_yaml(
            &children.config_map.data.as_ref().unwrap()[names::CONFIG_KEY],
        )
        .unwrap();
        assert_eq!(config.system_prompt.as_deref(), Some("Hello prompt"));
        assert_eq!(config.model.api_key_env, None);
        let c = container(&children);
        let db = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "DATABASE_URL")
            .unwrap();
        assert_eq!(
            db.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "hello-pg"
        );
        // Default resources apply.
        assert!(
            c.resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()
                .contains_key("memory")
        );
    }

    #[test]
    fn role_grants_exactly_what_the_runtime_needs() {
        let children = build_children(&full(), &inputs(false)).unwrap();
        let rules = children.role.rules.as_ref().unwrap();
        let channels = &rules[0];
        assert_eq!(
            channels.resources.as_deref(),
            Some(&["chatchannels".to_owned()][..])
        );
        assert_eq!(channels.verbs, ["get", "list", "watch"]);
        for rule in &rules[1..] {
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(&["support".to_owned()][..]),
                "only its own agent"
            );
            assert!(
                !rule
                    .verbs
                    .iter()
                    .any(|v| v == "update" || v == "delete" || v == "create" || v == "*")
            );
        }
        let patch = rules
            .iter()
            .find(|r| r.verbs.contains(&"patch".to_owned()))
            .unwrap();
        assert_eq!(
            patch.resources.as_deref(),
            Some(&["agentdeployments/status".to_owned()][..])
        );
        let binding = &children.role_binding;
        assert_eq!(binding.role_ref.name, "support");
        let subject = &binding.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str()),
            ("ServiceAccount", "support")
        );
    }

    #[test]
    fn role_grants_its_channels_status_and_signing_secrets_by_name() {
        let with_channels = BuildInputs {
            channels: vec!["support-web".to_owned(), "support-hook".to_owned()],
            signing_secrets: vec!["hook-key".to_owned()],
            ..inputs(false)
        };
        let children = build_children(&full(), &with_channels).unwrap();
        let rules = children.role.rules.unwrap();
        let status = rules
            .iter()
            .find(|r| r.resources.as_deref() == Some(&["chatchannels/status".to_owned()][..]))
            .expect("chatchannels/status rule");
        assert_eq!(status.verbs, ["patch"]);
        assert_eq!(
            status.resource_names.as_deref(),
            Some(&["support-web".to_owned(), "support-hook".to_owned()][..])
        );
        let secrets = rules
            .iter()
            .find(|r| r.resources.as_deref() == Some(&["secrets".to_owned()][..]))
            .expect("secrets rule");
        assert_eq!(secrets.verbs, ["get"]);
        assert_eq!(
            secrets.resource_names.as_deref(),
            Some(&["hook-key".to_owned()][..])
        );
        // Without channels neither rule exists (an empty resourceNames grants all).
        let bare = build_children(&full(), &inputs(false)).unwrap();
        assert_eq!(bare.role.rules.unwrap().len(), 3);
    }

    #[test]
    fn service_and_service_monitor_select_the_runtime_pods() {
        let children = build_children(&full(), &inputs(true)).unwrap();
        let svc = children.service.spec.as_ref().unwrap();
        assert_eq!(
            svc.selector.as_ref().unwrap(),
            &names::selector_labels("support")
        );
        assert_eq!(svc.ports.as_ref().unwrap()[0].port, 8080);
        let sm = children.service_monitor.unwrap();
        assert_eq!(sm.data["spec"]["endpoints"][0]["interval"], "15s");
        assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "http");
        let selector = names::selector_labels("support");
        assert_eq!(
            sm.data["spec"]["selector"]["matchLabels"],
            serde_json::to_value(&selector).unwrap()
        );
    }

    #[test]
    fn secrets_carry_generated_values_only_in_data() {
        let agent = full();
        let key = api_key_secret(&agent, "sb-key").unwrap();
        assert_eq!(key.metadata.name.as_deref(), Some("support-api-key"));
        assert_eq!(key.string_data.as_ref().unwrap()["api-key"], "sb-key");
        let creds = DatabaseCredentials {
            host: "127.0.0.1".to_owned(),
            port: 5432,
            dbname: "sb_db".to_owned(),
            user: "sb_db".to_owned(),
            password: "pw123".to_owned(),
        };
        assert!(
            !format!("{creds:?}").contains("pw123"),
            "Debug redacts the password"
        );
        let db = database_secret(&agent, &creds).unwrap();
        let data = db.string_data.unwrap();
        assert_eq!(data["uri"], "postgres://sb_db:pw123@127.0.0.1:5432/sb_db");
        for key in ["host", "port", "dbname", "user", "password", "uri"] {
            assert!(data.contains_key(key), "{key}");
        }
    }

    #[test]
    fn applied_hash_is_stable_and_content_sensitive() {
        let children = build_children(&full(), &inputs(true)).unwrap();
        let mut a = children.service.clone();
        let mut b = children.service.clone();
        let ha = stamp_applied_hash(&mut a).unwrap();
        assert_eq!(ha, stamp_applied_hash(&mut b).unwrap());
        assert_eq!(
            ha,
            stamp_applied_hash(&mut a).unwrap(),
            "re-stamping ignores the old stamp"
        );
        b.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("x".to_owned(), "y".to_owned());
        assert_ne!(ha, stamp_applied_hash(&mut b).unwrap());
    }
}
