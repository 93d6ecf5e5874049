//! The key Secrets: the agent's client key, its admin key, a key for each
//! channel with `spec.clientKey: Channel`, and a key for each agent it calls. Each is created once with a generated
//! key and never rewritten (rotating one is writing a new value into it; the
//! pods re-read it without a restart).

use std::collections::BTreeMap;

use crds::AgentDeployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use super::{AgentKey, OwnKeyChannel, metadata};
use crate::names;

fn key_secret(
    mut meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Secret {
    meta.annotations = None;
    Secret {
        metadata: meta,
        type_: Some("Opaque".to_owned()),
        string_data: Some(BTreeMap::from([(
            names::API_KEY_KEY.to_owned(),
            key.to_owned(),
        )])),
        ..Default::default()
    }
}

/// The Secret holding the client key `api_key`.
pub fn build(agent: &AgentDeployment, api_key: &str) -> Secret {
    key_secret(
        metadata(agent, &names::api_key_secret(&agent.name_any())),
        api_key,
    )
}

/// The Secret holding the admin key `admin_key`.
pub fn build_admin(agent: &AgentDeployment, admin_key: &str) -> Secret {
    key_secret(
        metadata(agent, &names::admin_key_secret(&agent.name_any())),
        admin_key,
    )
}

/// The Secret holding `channel`'s own key, owned by the ChatChannel (it goes
/// with the channel) and labelled as the agent's (the operator's cache sees it).
pub fn build_channel(agent: &AgentDeployment, channel: &OwnKeyChannel) -> Secret {
    let mut meta = metadata(agent, &names::channel_key_secret(&channel.name));
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "switchboard.dev/v1alpha1".to_owned(),
        kind: "ChatChannel".to_owned(),
        name: channel.name.clone(),
        uid: channel.uid.clone(),
        controller: Some(true),
        // Not blocking: that would need delete rights on ChatChannels where
        // owner references are enforced.
        block_owner_deletion: None,
    }]);
    key_secret(meta, &channel.new_key)
}

/// The Secret holding the key `agent` calls `key.callee` with: owned by the caller
/// (it goes with the caller) and labelled with the callee, whose pods read it as
/// file `agent.<caller>`.
pub fn build_agent_call(agent: &AgentDeployment, key: &AgentKey) -> Secret {
    let mut meta = metadata(
        agent,
        &names::agent_call_key_secret(&agent.name_any(), &key.callee),
    );
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(names::CALLEE_LABEL.to_owned(), key.callee.clone());
    key_secret(meta, &key.new_key)
}

#[cfg(test)]
mod tests {
    use super::super::BuildInputs;
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn the_key_is_only_in_string_data() {
        let key = build(&full(), "sb-key");
        assert_eq!(key.metadata.name.as_deref(), Some("support-api-key"));
        assert_eq!(key.string_data.as_ref().unwrap()["api-key"], "sb-key");
        assert!(key.metadata.annotations.is_none() && key.data.is_none());
        let admin = build_admin(&full(), "sb-admin");
        assert_eq!(admin.metadata.name.as_deref(), Some("support-admin-key"));
    }

    #[test]
    fn a_channel_key_belongs_to_its_channel() {
        let channel = OwnKeyChannel {
            name: "partners".to_owned(),
            uid: "uid-1".to_owned(),
            new_key: "sb-ch".to_owned(),
        };
        let secret = build_channel(&full(), &channel);
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("partners-channel-key")
        );
        let owners = secret.metadata.owner_references.unwrap();
        assert_eq!(owners[0].kind, "ChatChannel");
        assert_eq!(owners[0].uid, "uid-1");
        assert_eq!(
            secret.metadata.labels.unwrap()[names::INSTANCE_LABEL],
            "support"
        );
    }

    #[test]
    fn an_agent_call_key_belongs_to_the_caller_and_names_the_callee() {
        let inputs = BuildInputs {
            agent_keys: vec![AgentKey {
                callee: "billing".to_owned(),
                new_key: "sb-agent-x".to_owned(),
            }],
            ..inputs(false)
        };
        let children = super::super::build_children(&full(), &inputs);
        let [secret] = children.agent_key_secrets.as_slice() else {
            panic!("one agent-call key: {:?}", children.agent_key_secrets);
        };
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("support-calls-billing")
        );
        assert_eq!(
            secret.string_data.as_ref().unwrap()["api-key"],
            "sb-agent-x"
        );
        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[names::CALLEE_LABEL], "billing");
        assert_eq!(labels[names::INSTANCE_LABEL], "support");
        assert_eq!(labels[names::MANAGED_BY_LABEL], names::MANAGED_BY);
        let owners = secret.metadata.owner_references.as_ref().unwrap();
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].name.as_str()),
            ("AgentDeployment", "support")
        );
    }
}
