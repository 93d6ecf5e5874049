//! Dereference: read what the spec points to (the prompt ConfigMap), which channels
//! lead to the agent (from the shared cache), and whether a ServiceMonitor can be made.

use std::collections::BTreeSet;
use std::sync::Arc;

use crds::{AgentDeployment, ChatChannel};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;

use crate::context::Context;
use crate::error::{Error, Result};

/// What the spec's references resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct References {
    /// The system prompt read from `spec.systemPromptFrom`, if the spec uses it.
    pub system_prompt_from: Option<String>,
    /// Names of the agent's ChatChannels, sorted.
    pub channels: Vec<String>,
    /// Their webhook signing Secrets, sorted.
    pub signing_secrets: Vec<String>,
    /// Those opened by a key of their own, as (name, uid), sorted by name.
    pub own_key_channels: Vec<(String, String)>,
    /// What becomes of the ServiceMonitor.
    pub service_monitor: ServiceMonitorPlan,
}

/// Whether the ServiceMonitor is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceMonitorPlan {
    /// Disabled in the spec.
    Disabled,
    /// Wanted, but the cluster does not serve the CRD.
    CrdMissing,
    /// Wanted and possible.
    Build,
}

/// Reads what `agent`'s spec points to.
pub async fn dereference(
    agent: &AgentDeployment,
    shared: &Context,
    channels: &[Arc<ChatChannel>],
) -> Result<References> {
    let system_prompt_from = match &agent.spec.system_prompt_from {
        None => None,
        Some(r) => {
            let namespace = agent.namespace().unwrap_or_default();
            let cms: Api<ConfigMap> = Api::namespaced(shared.client.clone(), &namespace);
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
    let service_monitor = if !agent.spec.monitoring.service_monitor.enabled {
        ServiceMonitorPlan::Disabled
    } else if shared.service_monitor_crd_installed().await {
        ServiceMonitorPlan::Build
    } else {
        ServiceMonitorPlan::CrdMissing
    };
    let own_key_channels = own_key_channels(channels, agent);
    let (channels, signing_secrets) = agent_channels(channels, agent);
    Ok(References {
        system_prompt_from,
        channels,
        signing_secrets,
        own_key_channels,
        service_monitor,
    })
}

/// The names of the agent's ChatChannels and of the Secrets the runtime reads for them
/// (webhook signing keys; Slack bot tokens, signing secrets and app tokens; Discord bot
/// tokens and public keys), sorted and without duplicates (so the Role's hash is stable).
pub fn agent_channels<C: AsRef<ChatChannel>>(
    all: &[C],
    agent: &AgentDeployment,
) -> (Vec<String>, Vec<String>) {
    let namespace = agent.namespace();
    let name = agent.name_any();
    let mut channels = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for channel in all.iter().map(AsRef::as_ref) {
        if channel.namespace() != namespace || channel.spec.agent_ref.name != name {
            continue;
        }
        channels.insert(channel.name_any());
        if let Some(webhook) = &channel.spec.webhook {
            secrets.insert(webhook.signing_secret_ref.name.clone());
        }
        if let Some(slack) = &channel.spec.slack {
            secrets.insert(slack.bot_token_ref.name.clone());
            for r in [&slack.signing_secret_ref, &slack.app_token_ref]
                .into_iter()
                .flatten()
            {
                secrets.insert(r.name.clone());
            }
        }
        if let Some(discord) = &channel.spec.discord {
            secrets.insert(discord.bot_token_ref.name.clone());
            if let Some(r) = &discord.public_key_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    (
        channels.into_iter().collect(),
        secrets.into_iter().collect(),
    )
}

/// The agent's channels with `spec.clientKey: Channel`, as (name, uid), sorted.
pub fn own_key_channels<C: AsRef<ChatChannel>>(
    all: &[C],
    agent: &AgentDeployment,
) -> Vec<(String, String)> {
    let namespace = agent.namespace();
    let name = agent.name_any();
    let mut out: Vec<(String, String)> = all
        .iter()
        .map(AsRef::as_ref)
        .filter(|c| c.namespace() == namespace && c.spec.agent_ref.name == name)
        .filter(|c| c.spec.client_key == crds::ClientKeyMode::Channel)
        .map(|c| (c.name_any(), c.uid().unwrap_or_default()))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::build::fixtures::full;

    fn channel(name: &str, namespace: &str, agent: &str) -> ChatChannel {
        let mut channel: ChatChannel =
            serde_yaml::from_str(include_str!("../../fixtures/channel-web.yaml")).unwrap();
        channel.metadata.name = Some(name.to_owned());
        channel.metadata.namespace = Some(namespace.to_owned());
        channel.spec.agent_ref.name = agent.to_owned();
        channel
    }

    #[test]
    fn only_the_agents_own_channels_count_sorted() {
        let all = vec![
            std::sync::Arc::new(channel("web-b", "tenant-a", "support")),
            std::sync::Arc::new(channel("web-a", "tenant-a", "support")),
            std::sync::Arc::new(channel("other", "tenant-a", "sales")),
            std::sync::Arc::new(channel("elsewhere", "tenant-b", "support")),
        ];
        let (channels, secrets) = agent_channels(&all, &full());
        assert_eq!(channels, ["web-a", "web-b"]);
        assert!(secrets.is_empty());
        assert!(own_key_channels(&all, &full()).is_empty());
        let mut keyed = channel("keyed", "tenant-a", "support");
        keyed.spec.client_key = crds::ClientKeyMode::Channel;
        keyed.metadata.uid = Some("uid-k".to_owned());
        let all = vec![std::sync::Arc::new(keyed), all[0].clone()];
        assert_eq!(
            own_key_channels(&all, &full()),
            [("keyed".to_owned(), "uid-k".to_owned())]
        );
    }

    #[test]
    fn chat_app_secrets_are_granted_by_name() {
        let chat_app = |name: &str, spec: serde_json::Value| -> ChatChannel {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "switchboard.dev/v1alpha1", "kind": "ChatChannel",
                "metadata": {"name": name, "namespace": "tenant-a"},
                "spec": spec,
            }))
            .unwrap()
        };
        let slack = chat_app(
            "slack",
            serde_json::json!({"agentRef": {"name": "support"}, "type": "slack", "slack": {
                "mode": "SocketMode",
                "botTokenRef": {"name": "slack-bot", "key": "token"},
                "signingSecretRef": {"name": "slack-signing", "key": "secret"},
                "appTokenRef": {"name": "slack-app", "key": "token"}}}),
        );
        let discord = chat_app(
            "discord",
            serde_json::json!({"agentRef": {"name": "support"}, "type": "discord", "discord": {
                "botTokenRef": {"name": "discord-bot", "key": "token"},
                "applicationId": "1234567890123456789",
                "publicKeyRef": {"name": "discord-public", "key": "key"}}}),
        );
        let all = [std::sync::Arc::new(slack), std::sync::Arc::new(discord)];
        let (channels, secrets) = agent_channels(&all, &full());
        assert_eq!(channels, ["discord", "slack"]);
        assert_eq!(
            secrets,
            [
                "discord-bot",
                "discord-public",
                "slack-app",
                "slack-bot",
                "slack-signing"
            ]
        );
    }
}
