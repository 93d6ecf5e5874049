//! The client API key Secret: created once with a generated key, never rewritten.

use std::collections::BTreeMap;

use crds::AgentDeployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::metadata;
use crate::names;

/// The Secret holding `api_key`.
pub fn build(agent: &AgentDeployment, api_key: &str) -> Secret {
    Secret {
        metadata: metadata(agent, &names::api_key_secret(&agent.name_any())),
        type_: Some("Opaque".to_owned()),
        string_data: Some(BTreeMap::from([(
            names::API_KEY_KEY.to_owned(),
            api_key.to_owned(),
        )])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn the_key_is_only_in_string_data() {
        let key = build(&full(), "sb-key");
        assert_eq!(key.metadata.name.as_deref(), Some("support-api-key"));
        assert_eq!(key.string_data.as_ref().unwrap()["api-key"], "sb-key");
        assert!(key.metadata.annotations.is_none() && key.data.is_none());
    }
}
