//! Validate: ChatChannel spec problems the CRD schema cannot express (or that slipped
//! past an older one). Pure.

use crds::{ChannelType, ChatChannel};

/// Spec problems the CRD schema cannot express (or that slipped past an older one).
pub fn validate(channel: &ChatChannel) -> Vec<String> {
    let spec = &channel.spec;
    let mut problems = Vec::new();
    if spec.agent_ref.name.trim().is_empty() {
        problems.push("spec.agentRef.name must not be empty".to_owned());
    }
    if spec.type_ == ChannelType::Webhook && spec.webhook.is_none() {
        problems.push("spec.webhook is required when spec.type is webhook".to_owned());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_channel_needs_its_webhook_and_every_channel_an_agent() {
        let mut channel: ChatChannel =
            serde_yaml::from_str(include_str!("../../fixtures/channel-web.yaml")).unwrap();
        assert!(validate(&channel).is_empty());
        channel.spec.agent_ref.name = " ".to_owned();
        channel.spec.type_ = ChannelType::Webhook;
        channel.spec.webhook = None;
        let problems = validate(&channel);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("spec.agentRef.name"));
        assert!(problems[1].contains("spec.webhook"));
    }
}
