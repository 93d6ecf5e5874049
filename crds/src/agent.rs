//! `AgentDeployment` (short name `agd`): one tenant's chat agent, its model chain,
//! database, limits and scheduling, and the status the operator and the agent's own
//! runtime pods report back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::agent_tools::{AgentTool, ToolPolicySpec};
use crate::common::{ConfigMapKeyRef, LocalObjectRef, SecretKeyRef};

/// CEL: the characters an image reference can hold (letters, digits and `-._/:@+[]`, as
/// in `[fd00::1]:5000/team/runtime:1.2@sha256:...`): no whitespace, quotes or control
/// characters, which the apiserver lets into a pod and the kubelet then refuses
/// (`InvalidImageName`). [`is_image_reference_char`] is the same set, for the operator.
const IMAGE_RULE: &str = "self.matches('^[-._a-zA-Z0-9/:@+\\\\[\\\\]]+$')";

/// Whether `c` can be part of an image reference: the characters `spec.image`'s rule
/// lets through.
pub fn is_image_reference_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._/:@+[]".contains(c)
}

/// Desired state of an agent: which models answer, how they are prompted, where the
/// conversation history is kept and how the runtime pods are run.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "AgentDeployment",
    plural = "agentdeployments",
    singular = "agentdeployment",
    shortname = "agd",
    category = "switchboard",
    namespaced,
    status = "AgentDeploymentStatus",
    derive = "PartialEq",
    doc = "An AI chat agent run by Switchboard for one tenant: models, prompt, database, limits and runtime pods.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready", description = "Ready runtime pods / desired pods"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Summary of the agent's state"),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.name", description = "Primary model"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", description = "In-cluster URL of the agent's API"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter) of at most 50 characters: it names the agent's Deployment, Service and database")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.spec.tools) || self.spec.tools.all(t, !has(t.agent) || t.agent != self.metadata.name)")
        .message("spec.tools[].agent must name another agent: an agent cannot call itself")
        .reason(Reason::FieldValueInvalid)
)]
#[x_kube(
    validation = Rule::new("!has(self.fallbacks) || self.fallbacks.all(f, !(f.provider == self.model.provider && f.name == self.model.name && (has(f.baseUrl) ? f.baseUrl : '') == (has(self.model.baseUrl) ? self.model.baseUrl : '')))")
        .message("spec.fallbacks: a fallback must differ from spec.model (same provider, name and baseUrl)")
        .field_path(".fallbacks")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!(has(self.systemPrompt) && has(self.systemPromptFrom))")
        .message("spec.systemPrompt and spec.systemPromptFrom are mutually exclusive: set one")
        .field_path(".systemPromptFrom")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.fallbacks) || self.fallbacks.all(f, !has(f.pricing) || ((!has(self.model.pricing) || f.pricing.currency == self.model.pricing.currency) && self.fallbacks.all(g, !has(g.pricing) || g.pricing.currency == f.pricing.currency)))")
        .message("spec.fallbacks: every model's pricing.currency must be the same (costs and the budget are summed in one currency)")
        .field_path(".fallbacks")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.budget) || has(self.model.pricing) || (has(self.fallbacks) && self.fallbacks.exists(f, has(f.pricing)))")
        .message("spec.budget needs prices: set pricing on spec.model (or on a fallback) so turns have a cost")
        .field_path(".budget")
        .reason(Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct AgentDeploymentSpec {
    /// The primary model that answers chats.
    pub model: ModelSpec,

    /// Further models tried in order when the primary fails (errors, timeouts, an open
    /// circuit). At most 5; none may equal the primary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    #[x_kube(validation = Rule::new("self.size() <= 5").message("spec.fallbacks: at most 5 fallback models are allowed").reason(Reason::FieldValueInvalid))]
    pub fallbacks: Vec<ModelSpec>,

    /// The system prompt put before every conversation. Mutually exclusive with
    /// `systemPromptFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub system_prompt: Option<String>,

    /// Reads the system prompt from a key of a ConfigMap in the agent's namespace.
    /// Mutually exclusive with `systemPrompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_from: Option<ConfigMapKeyRef>,

    /// How much conversation history is sent to the model.
    #[serde(default)]
    pub context: ContextSpec,

    /// Number of runtime pods, 0 to 100, written into the agent's Deployment (named
    /// like the agent). `kubectl scale agd/<name>` and a HorizontalPodAutoscaler whose
    /// `scaleTargetRef` is this AgentDeployment change it through the scale
    /// subresource, which cannot be read while the field is unset and refuses more
    /// than 100 (keep such an HPA's `maxReplicas` at most 100). Unset: the operator
    /// leaves the Deployment's count alone, for an HPA that targets the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("spec.replicas must be between 0 and 100").reason(Reason::FieldValueInvalid))]
    pub replicas: Option<i32>,

    /// Compute resources of the runtime container. Defaults to a small request and a
    /// memory limit suited to a chat server. `limits` and `requests` take Kubernetes
    /// quantities such as `500m` or `256Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::upstream_schema::quantity_pattern)]
    pub resources: Option<ResourceRequirements>,

    /// Where the runtime pods may be scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,

    /// Runtime container image. Defaults to the image the operator is configured with;
    /// set it only to pin or test a specific runtime build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_RULE).message("spec.image must be an image reference such as ghcr.io/acme/agent-runtime:1.2: letters, digits and . _ - / : @ + [ ] only, no spaces").reason(Reason::FieldValueInvalid))]
    pub image: Option<String>,

    /// Where the agent keeps sessions and messages. `mode` cannot change after
    /// creation: make a new agent instead.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.mode == oldSelf.mode").message("spec.database.mode is immutable: switching between Managed and External would lose the history or leave a database behind; create a new AgentDeployment instead").field_path(".mode").reason(Reason::FieldValueForbidden))]
    pub database: DatabaseSpec,

    /// Session lifecycle.
    #[serde(default)]
    pub sessions: SessionsSpec,

    /// Request and token limits for the whole agent. Channels may set tighter ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,

    /// The answer given when every model fails, by language tag (BCP 47, e.g. `en`,
    /// `de`, `pt-BR`). The channel's language picks the entry; `en` is the last resort.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50), extend("additionalProperties" = {"type": "string", "maxLength": 4096}))]
    #[x_kube(validation = Rule::new("self.all(k, k.size() <= 35 && k.matches('^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$'))").message("spec.fallbackResponses keys must be BCP 47 language tags such as en, de or pt-BR").reason(Reason::FieldValueInvalid))]
    pub fallback_responses: BTreeMap<String, String>,

    /// Prometheus scraping of the runtime pods.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// A monthly spending limit for the agent, in the models' pricing currency (needs
    /// `pricing` on the models). The spend of the current calendar month (UTC) is
    /// shared by all the agent's pods through its database and shown in
    /// `status.usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,

    /// The ChatChannel (of this agent, in this namespace) that the root routes
    /// `/v1/...` and `/api/...` belong to; the agent's client key opens it (unless
    /// the channel has a key of its own). Unset: the root routes answer 404 and
    /// clients use `/channels/{name}/...`. The condition `DefaultChannel` says
    /// whether it names one of this agent's channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("spec.defaultChannel must name a ChatChannel (a DNS label)").reason(Reason::FieldValueInvalid))]
    pub default_channel: Option<String>,

    /// Client, channel and admin keys: how long a replaced key keeps working.
    #[serde(default)]
    pub keys: KeysSpec,

    /// Server-side tools the model may call, each entry naming a ToolServer
    /// (optionally a subset of its tools) or another agent of this namespace. At
    /// most 32, each named once. A missing or failing source leaves the agent
    /// running without it (condition `ToolsReady` says which).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(o, (has(o.toolServer) ? 's/' + o.toolServer : 'a/' + (has(o.agent) ? o.agent : '')) == (has(t.toolServer) ? 's/' + t.toolServer : 'a/' + (has(t.agent) ? t.agent : ''))))").message("spec.tools: each toolServer and each agent may be named once").reason(Reason::FieldValueInvalid))]
    pub tools: Vec<AgentTool>,

    /// Rules of the tool loop: approvals, the step limit, the approval timeout.
    #[serde(default)]
    pub tool_policy: ToolPolicySpec,
}

/// Key rotation. Key Secrets are read by the runtime pods without a restart; after a
/// Secret changes, the key it held before keeps working for the grace period.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeysSpec {
    /// Seconds a replaced client, channel or admin key keeps working after its
    /// Secret changes (0 to 604800, default 3600). 0 ends it at once.
    #[serde(default = "default_rotation_grace_seconds")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 604800").message("spec.keys.rotationGraceSeconds must be between 0 and 604800 (a week)").reason(Reason::FieldValueInvalid))]
    pub rotation_grace_seconds: i32,
}

fn default_rotation_grace_seconds() -> i32 {
    3600
}

impl Default for KeysSpec {
    fn default() -> Self {
        Self {
            rotation_grace_seconds: default_rotation_grace_seconds(),
        }
    }
}

/// What a model costs, per million tokens. Amounts are numbers such as `0.15`,
/// kept exactly to six decimal places.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelPricing {
    /// Price of one million prompt (input) tokens, e.g. `0.15`.
    #[x_kube(
        validation = Rule::new("self >= 0.0").message("pricing.inputPerMillionTokens must not be negative").reason(Reason::FieldValueInvalid),
        validation = Rule::new("self <= 1000000.0").message("pricing.inputPerMillionTokens must be at most 1000000").reason(Reason::FieldValueInvalid),
    )]
    pub input_per_million_tokens: f64,
    /// Price of one million generated (output) tokens, e.g. `0.60`.
    #[x_kube(
        validation = Rule::new("self >= 0.0").message("pricing.outputPerMillionTokens must not be negative").reason(Reason::FieldValueInvalid),
        validation = Rule::new("self <= 1000000.0").message("pricing.outputPerMillionTokens must be at most 1000000").reason(Reason::FieldValueInvalid),
    )]
    pub output_per_million_tokens: f64,
    /// ISO 4217 currency code of the prices (default `USD`); every model of an agent
    /// uses the same one.
    #[serde(default = "default_currency")]
    #[schemars(length(max = 3))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Z]{3}$')").message("pricing.currency must be a three-letter ISO 4217 code such as USD or EUR").reason(Reason::FieldValueInvalid))]
    pub currency: String,
}

fn default_currency() -> String {
    "USD".to_owned()
}

/// What the agent answers once the month's budget is spent.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BudgetAction {
    /// Answer with the fallback response for the channel's language (no model is
    /// called); 429 when there is none.
    #[default]
    Fallback,
    /// Refuse new turns with 429 (`budget_exceeded`) until the next month.
    Reject,
}

/// A monthly spending limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Spend allowed per calendar month (UTC), in the models' pricing currency,
    /// e.g. `50`.
    #[x_kube(
        validation = Rule::new("self > 0.0").message("budget.monthly must be positive").reason(Reason::FieldValueInvalid),
        validation = Rule::new("self <= 1000000000.0").message("budget.monthly must be at most 1000000000").reason(Reason::FieldValueInvalid),
    )]
    pub monthly: f64,
    /// `Fallback` (default): answer with the fallback response; `Reject`: 429.
    #[serde(default)]
    pub when_spent: BudgetAction,
}

/// A model provider speaking one wire format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelProvider {
    /// Any OpenAI-compatible server: OpenAI, vLLM, Ollama, LiteLLM, ...
    #[default]
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

impl ModelProvider {
    /// The base URL used when `baseUrl` is not set.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ModelProvider::Openai => "https://api.openai.com/v1",
            ModelProvider::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The wire name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelProvider::Openai => "openai",
            ModelProvider::Anthropic => "anthropic",
        }
    }
}

/// One model: provider, name, endpoint, credentials and sampling parameters.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.http2PriorKnowledge) || !self.http2PriorKnowledge || (has(self.baseUrl) && self.baseUrl.startsWith('http://'))")
        .message("http2PriorKnowledge is for plain-text http:// upstreams that serve h2c: set an http:// baseUrl or leave it unset (https:// upstreams, the providers' own endpoints included, negotiate HTTP/2 by themselves)")
        .field_path(".http2PriorKnowledge")
        .reason(Reason::FieldValueInvalid)
)]
pub struct ModelSpec {
    /// Wire format of the upstream: `openai` (any OpenAI-compatible server) or `anthropic`.
    pub provider: ModelProvider,

    /// Model name as the upstream knows it, e.g. `gpt-4o-mini` or `claude-sonnet-4-5`.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("model name must not be empty").reason(Reason::FieldValueRequired))]
    pub name: String,

    /// Base URL of the upstream API (http or https), e.g. `http://vllm.models:8000/v1`.
    /// Defaults to the provider's public endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+([/?#][^\\\\s]*)?$')").message("baseUrl must be an http:// or https:// URL, e.g. https://api.openai.com/v1").reason(Reason::FieldValueInvalid))]
    pub base_url: Option<String>,

    /// The Secret key holding the upstream API key. Optional for servers that need none
    /// (a local vLLM or Ollama).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,

    /// Sampling temperature, 0 to 2. Unset: the upstream's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 2.0").message("temperature must be between 0 and 2").reason(Reason::FieldValueInvalid))]
    pub temperature: Option<f64>,

    /// Nucleus sampling, above 0 and at most 1. Unset: the upstream's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("topP must be above 0 and at most 1").reason(Reason::FieldValueInvalid))]
    pub top_p: Option<f64>,

    /// Upper bound on tokens generated per answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000").message("maxOutputTokens must be between 1 and 1000000").reason(Reason::FieldValueInvalid))]
    pub max_output_tokens: Option<i32>,

    /// What the model costs (for the cost metrics, `status.usage` and the budget).
    /// Unset: its tokens are counted but cost nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<ModelPricing>,

    /// Whether the model accepts images (OpenAI `image_url` content parts). Unset:
    /// true, images are passed through as before. false: a request whose prompt
    /// carries an image skips this model for the next one of the chain that accepts
    /// images; when none does, it is refused with a 400 naming the first image part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepts_images: Option<bool>,

    /// Speak HTTP/2 to a plain-text (`http://`) upstream from the first byte
    /// (h2c, "prior knowledge"): all of the agent's calls to the model share one
    /// connection instead of one connection per call in flight, which is most of
    /// what a long stream costs the runtime. Only for upstreams that serve h2c;
    /// vLLM, Ollama and most self-hosted servers speak HTTP/1.1 only, and every
    /// call to them would fail. Unset: false. Refused with an `https://` (or unset)
    /// `baseUrl`: those upstreams negotiate HTTP/2 by themselves (ALPN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_prior_knowledge: Option<bool>,

    /// Seconds to wait for the upstream before the attempt counts as failed.
    #[serde(default = "default_timeout_seconds")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3600").message("timeoutSeconds must be between 1 and 3600").reason(Reason::FieldValueInvalid))]
    pub timeout_seconds: i32,
}

fn default_timeout_seconds() -> i32 {
    60
}

/// How much history goes upstream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContextSpec {
    /// Token budget of the history sent to the model, counted with the model's
    /// tokenizer. The system prompt and the newest turns are always kept; older turns
    /// are dropped to fit. 256 to 2,000,000.
    #[serde(default = "default_context_max_tokens")]
    #[x_kube(validation = Rule::new("self >= 256 && self <= 2000000").message("context.maxTokens must be between 256 and 2000000").reason(Reason::FieldValueInvalid))]
    pub max_tokens: i32,
}

fn default_context_max_tokens() -> i32 {
    8192
}

impl Default for ContextSpec {
    fn default() -> Self {
        Self {
            max_tokens: default_context_max_tokens(),
        }
    }
}

/// Scheduling overrides for the runtime pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Nodes the pods may run on, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod (anti-)affinity. Weights are 1 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::upstream_schema::bound_affinity_weights)]
    pub affinity: Option<Affinity>,
}

/// Whether the operator creates the database or the tenant brings one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DatabaseMode {
    /// The operator creates a role and a database of the agent's own on the Postgres
    /// server it is configured with, and a Secret with the credentials.
    #[default]
    Managed,
    /// The tenant's own Postgres; `externalSecretRef` names a Secret with its URL under `uri`.
    External,
}

/// What happens to a managed database when the AgentDeployment is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Keep the database and role (the safe default); an event says so.
    #[default]
    Retain,
    /// Drop the database and role.
    Delete,
}

/// Where sessions and messages are stored.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.mode != 'External' || has(self.externalSecretRef)")
        .message("spec.database.externalSecretRef is required when mode is External")
        .field_path(".externalSecretRef")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.mode != 'Managed' || !has(self.externalSecretRef)")
        .message("spec.database.externalSecretRef must not be set when mode is Managed (the operator creates the credentials)")
        .field_path(".externalSecretRef")
        .reason(Reason::FieldValueForbidden),
)]
pub struct DatabaseSpec {
    /// `Managed` (default): the operator provisions a database for this agent alone.
    /// `External`: use the database in `externalSecretRef`.
    #[serde(default)]
    pub mode: DatabaseMode,
    /// `Retain` (default) keeps a managed database when the agent is deleted; `Delete`
    /// drops it. A retained database is adopted, data and history included, by a new
    /// agent of the same name in the same namespace, and that agent says so:
    /// condition DatabaseReady with reason `DatabaseAdopted` and a `DatabaseAdopted`
    /// event; drop the database and role by hand before re-creating the agent to start
    /// empty. When a `Delete` cannot drop (no admin connection, a failing server), the
    /// agent is kept and says so (reason `DatabaseDropFailed`); the annotation
    /// `switchboard.dev/skip-database-drop: "true"` lets it go without the drop.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
    /// External mode only: a Secret in the agent's namespace whose `uri` key holds a
    /// `postgres://` URL of the tenant's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret_ref: Option<LocalObjectRef>,
}

/// Session lifecycle.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionsSpec {
    /// Minutes without a message after which a session counts as idle (no longer active).
    #[serde(default = "default_idle_timeout_minutes")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 525600").message("sessions.idleTimeoutMinutes must be between 1 and 525600 (a year)").reason(Reason::FieldValueInvalid))]
    pub idle_timeout_minutes: i32,
    /// Days after which deleted sessions are purged from the database.
    #[serde(default = "default_retention_days")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3650").message("sessions.retentionDays must be between 1 and 3650").reason(Reason::FieldValueInvalid))]
    pub retention_days: i32,
}

fn default_idle_timeout_minutes() -> i32 {
    30
}

fn default_retention_days() -> i32 {
    90
}

impl Default for SessionsSpec {
    fn default() -> Self {
        Self {
            idle_timeout_minutes: default_idle_timeout_minutes(),
            retention_days: default_retention_days(),
        }
    }
}

/// Request and token limits. Every limit set must be positive; unset means unlimited.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Chat requests one user may make per minute (1 to 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self > 0").message("rateLimit.requestsPerMinutePerUser must be positive").reason(Reason::FieldValueInvalid),
        validation = Rule::new("self <= 1000000").message("rateLimit.requestsPerMinutePerUser must be at most 1000000").reason(Reason::FieldValueInvalid),
    )]
    pub requests_per_minute_per_user: Option<i32>,
    /// Model tokens (in and out) the whole tenant may use per minute (1 to
    /// 1,000,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self > 0").message("rateLimit.tokensPerMinute must be positive").reason(Reason::FieldValueInvalid),
        validation = Rule::new("self <= 1000000000").message("rateLimit.tokensPerMinute must be at most 1000000000").reason(Reason::FieldValueInvalid),
    )]
    pub tokens_per_minute: Option<i64>,
}

/// Prometheus scraping.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A ServiceMonitor for the Prometheus Operator.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
    /// OpenTelemetry traces: a server span per request and a GenAI `chat` span per
    /// model turn, sent over OTLP/HTTP. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
}

/// Where the runtime sends traces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// OTLP/HTTP endpoint of a collector, e.g. `http://otel-collector.observability:4318`
    /// (`/v1/traces` is appended). Set as `OTEL_EXPORTER_OTLP_ENDPOINT` in the pods,
    /// with `OTEL_SERVICE_NAME` the agent's name.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+([/?#][^\\\\s]*)?$')").message("monitoring.tracing.otlpEndpoint must be an http:// or https:// URL, e.g. http://otel-collector:4318").reason(Reason::FieldValueInvalid))]
    pub otlp_endpoint: String,
}

/// ServiceMonitor settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create a ServiceMonitor when the Prometheus Operator's CRD is installed (default
    /// true). Without the CRD a status condition says why none was made.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Scrape interval, a Prometheus duration such as `30s` or `1m`.
    #[serde(default = "default_scrape_interval")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(ms|s|m|h)$')").message("monitoring.serviceMonitor.interval must be a duration such as 30s or 1m").reason(Reason::FieldValueInvalid))]
    pub interval: String,
}

fn default_true() -> bool {
    true
}

fn default_scrape_interval() -> String {
    "30s".to_owned()
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_scrape_interval(),
        }
    }
}

/// Observed state, written by the operator (everything but `runtime`) and by the
/// runtime pods (each its own `runtime` entry).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// A one-word summary: Pending, Provisioning, Ready, Degraded, ScaledToZero or
    /// Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready, DatabaseReady, Available, RuntimeReady, ModelReachable,
    /// ServiceMonitorReady, each with the generation it was computed for; with
    /// `spec.tools`, ToolsReady (False naming each missing or not-Ready ToolServer and
    /// each missing agent; it does not hold Ready back: turns go on without them); with
    /// `spec.defaultChannel`, DefaultChannel (True when a ChatChannel of that name leads
    /// to this agent, False with reason `ChannelNotFound` while none does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,
    /// Runtime pods that exist (the scale subresource reads this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub replicas: Option<i32>,
    /// Runtime pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub ready_replicas: Option<i32>,
    /// `readyReplicas/replicas`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Label selector of the runtime pods, for the scale subresource and HPAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// In-cluster URL of the agent's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Names of the Secrets the operator generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<GeneratedSecrets>,
    /// One entry per runtime pod, written by that pod itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".to_owned()]))]
    pub runtime: Vec<RuntimePodStatus>,
    /// Tokens and cost of the current budget window (the calendar month, UTC),
    /// shared by all pods; written by the runtime pods when the models have prices
    /// or a budget is set, never by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageStatus>,
}

/// Tokens and cost of one budget window, as the runtime pods report it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageStatus {
    /// The window: a calendar month in UTC, e.g. `2026-12`.
    pub window: String,
    /// Prompt tokens in the window.
    #[serde(default)]
    pub input_tokens: i64,
    /// Generated tokens in the window.
    #[serde(default)]
    pub output_tokens: i64,
    /// Cost in the window, an exact decimal, e.g. `0.0123`.
    pub cost: String,
    /// Currency of `cost` and `budget`.
    pub currency: String,
    /// The month's budget, when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    /// The budget is spent: turns get the configured answer (fallback or 429).
    #[serde(default)]
    pub budget_spent: bool,
}

/// Summary of an agent's state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing provisioned yet.
    Pending,
    /// Database, secrets or pods are being created.
    Provisioning,
    /// Everything is up and at least one runtime pod answers.
    Ready,
    /// Serving, but something is wrong (e.g. the model is unreachable).
    Degraded,
    /// `spec.replicas` is 0 and no runtime pod is left: settled, answering nothing
    /// until scaled up.
    ScaledToZero,
    /// Cannot serve: the spec or a dependency needs a fix; conditions say which.
    Failed,
}

/// Names of generated Secrets (the values are never copied into status).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedSecrets {
    /// Secret with the client API key (key `api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Secret with the database credentials (host, port, dbname, user, password, uri).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Secret with the admin key for `/api/admin/*` (key `api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
}

/// Health of one runtime pod, as that pod reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimePodStatus {
    /// Pod name.
    pub name: String,
    /// The runtime serves requests (its database is reachable).
    pub ready: bool,
    /// The last upstream call (or probe) succeeded.
    pub upstream_healthy: bool,
    /// Sessions with a message within the idle timeout.
    #[serde(default)]
    pub active_sessions: i64,
    /// Messages handled since the pod started.
    #[serde(default)]
    pub messages_total: i64,
    /// When the pod last reported.
    pub last_heartbeat: Time,
    /// Runtime version.
    #[serde(default)]
    pub version: String,
}
