//! The runtime configuration: the file the runtime reads (rendered from the spec;
//! secrets appear only as the names of env vars) and the ConfigMap that carries it.

use std::collections::BTreeMap;

use crds::runtime_config::{
    self as rc, AgentIdentity, ContextConfig, DatabaseConfig, Micros, ModelConfig, RateLimitConfig,
    RuntimeConfig, SessionsConfig,
};
use crds::{AgentDeployment, ModelProvider, ModelSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::metadata;
use crate::names;

/// The ConfigMap holding the rendered file `runtime_config`.
pub fn build(agent: &AgentDeployment, runtime_config: &str) -> ConfigMap {
    ConfigMap {
        metadata: metadata(agent, &names::config_map(&agent.name_any())),
        data: Some(BTreeMap::from([(
            names::CONFIG_KEY.to_owned(),
            runtime_config.to_owned(),
        )])),
        ..Default::default()
    }
}

/// The runtime configuration file for `agent`, with `tools` rendered from
/// `spec.tools` (see [`crate::agent::tools::tools_config`]). Secrets appear only as
/// env var names.
pub fn runtime_config(
    agent: &AgentDeployment,
    system_prompt_from: Option<&str>,
    tools: rc::ToolsConfig,
) -> RuntimeConfig {
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
            .or_else(|| system_prompt_from.map(str::to_owned)),
        context: ContextConfig {
            max_tokens: u32::try_from(spec.context.max_tokens).unwrap_or(8192),
        },
        database: DatabaseConfig {
            url_env: Some(names::DATABASE_URL_ENV.to_owned()),
            sqlite_path: None,
        },
        auth: rc::AuthConfig {
            api_key_env: names::API_KEY_ENV.to_owned(),
            keys_dir: Some(names::KEYS_DIR.to_owned()),
            key_rotation_grace_seconds: u64::try_from(spec.keys.rotation_grace_seconds)
                .unwrap_or(3600),
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
        // The runtime watches the ChatChannels itself (changes apply without a restart).
        channels: Vec::new(),
        default_channel: spec.default_channel.clone(),
        server: rc::ServerConfig {
            listen: format!("0.0.0.0:{}", names::HTTP_PORT),
            // The runtime's default.
            client_timeout_seconds: None,
        },
        limits: rc::LimitsConfig::default(),
        budget: spec.budget.as_ref().and_then(|b| {
            Some(rc::BudgetConfig {
                // The schema bounds the amount; an unusable one leaves the agent unlimited.
                monthly: Micros::from_f64(b.monthly).ok()?,
                when_spent: b.when_spent,
            })
        }),
        tools,
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
        top_p: model.top_p,
        max_output_tokens: model.max_output_tokens.and_then(|v| u32::try_from(v).ok()),
        timeout_seconds: u64::try_from(model.timeout_seconds).unwrap_or(60),
        pricing: model.pricing.as_ref().and_then(|p| {
            Some(rc::PricingConfig {
                input_per_million_tokens: Micros::from_f64(p.input_per_million_tokens).ok()?,
                output_per_million_tokens: Micros::from_f64(p.output_per_million_tokens).ok()?,
                currency: p.currency.clone(),
            })
        }),
        accepts_images: model.accepts_images.unwrap_or(true),
        http2_prior_knowledge: model.http2_prior_knowledge.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn runtime_config_renders_as_the_expected_file() {
        let rendered = runtime_config(&full(), None, Default::default());
        let expected =
            RuntimeConfig::from_yaml(include_str!("../../../fixtures/agent-full.runtime.yaml"))
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
    fn http2_prior_knowledge_reaches_the_file_per_model() {
        let unset = runtime_config(&full(), None, Default::default());
        assert!(!unset.model.http2_prior_knowledge, "unset: HTTP/1.1");
        assert!(!unset.to_yaml().unwrap().contains("http2PriorKnowledge"));
        let mut agent = full();
        agent.spec.model.http2_prior_knowledge = Some(true);
        agent.spec.fallbacks[1].http2_prior_knowledge = Some(true);
        let config = runtime_config(&agent, None, Default::default());
        assert!(config.model.http2_prior_knowledge);
        assert!(!config.fallbacks[0].http2_prior_knowledge);
        assert!(config.fallbacks[1].http2_prior_knowledge);
        let text = config.to_yaml().unwrap();
        assert_eq!(
            text.matches("http2PriorKnowledge: true").count(),
            2,
            "{text}"
        );
    }

    #[test]
    fn a_prompt_from_a_config_map_lands_in_the_file() {
        let config = runtime_config(&minimal(), Some("Hello prompt"), Default::default());
        assert_eq!(config.system_prompt.as_deref(), Some("Hello prompt"));
        assert_eq!(config.model.api_key_env, None);
        let map = build(&minimal(), "x: 1\n");
        assert_eq!(map.data.unwrap()[names::CONFIG_KEY], "x: 1\n");
    }
}
