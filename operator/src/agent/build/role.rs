//! The runtime's Role: it may read the channels of its namespace and read and report
//! the status of its own AgentDeployment and channels, nothing else.

use crds::AgentDeployment;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use kube::ResourceExt;

use super::{BuildInputs, metadata, strings};

/// The Role named like the agent.
pub fn build(agent: &AgentDeployment, inputs: &BuildInputs) -> Role {
    let name = agent.name_any();
    let rule =
        |group: &str, resources: &[&str], names: Option<Vec<String>>, verbs: &[&str]| PolicyRule {
            api_groups: Some(vec![group.to_owned()]),
            resources: Some(strings(resources)),
            resource_names: names,
            verbs: strings(verbs),
            ..Default::default()
        };
    let mut rules = vec![
        rule(
            crds::GROUP,
            &["chatchannels"],
            None,
            &["get", "list", "watch"],
        ),
        rule(
            crds::GROUP,
            &["agentdeployments", "agentdeployments/status"],
            Some(vec![name.clone()]),
            &["get"],
        ),
        rule(
            crds::GROUP,
            &["agentdeployments/status"],
            Some(vec![name.clone()]),
            &["patch"],
        ),
    ];
    // Only this agent's channels' status, and only their signing Secrets: an empty
    // resourceNames list would grant every object, so the rules exist only when needed.
    if !inputs.channels.is_empty() {
        rules.push(rule(
            crds::GROUP,
            &["chatchannels/status"],
            Some(inputs.channels.clone()),
            &["patch"],
        ));
    }
    if !inputs.signing_secrets.is_empty() {
        rules.push(rule(
            "",
            &["secrets"],
            Some(inputs.signing_secrets.clone()),
            &["get"],
        ));
    }
    Role {
        metadata: metadata(agent, &name),
        rules: Some(rules),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::role_binding;
    use super::*;

    #[test]
    fn role_grants_exactly_what_the_runtime_needs() {
        let role = build(&full(), &inputs(false));
        let rules = role.rules.as_ref().unwrap();
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
        let binding = role_binding::build(&full());
        assert_eq!(binding.role_ref.name, "support");
        let subject = &binding.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str()),
            ("ServiceAccount", "support")
        );
        assert_eq!(subject.namespace.as_deref(), Some("tenant-a"));
    }

    #[test]
    fn role_grants_its_channels_status_and_signing_secrets_by_name() {
        let with_channels = BuildInputs {
            channels: vec!["support-web".to_owned(), "support-hook".to_owned()],
            signing_secrets: vec!["hook-key".to_owned()],
            ..inputs(false)
        };
        let rules = build(&full(), &with_channels).rules.unwrap();
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
        assert_eq!(secrets.api_groups.as_deref(), Some(&[String::new()][..]));
        assert_eq!(
            secrets.resource_names.as_deref(),
            Some(&["hook-key".to_owned()][..])
        );
        // Without channels neither rule exists (an empty resourceNames grants all).
        assert_eq!(build(&full(), &inputs(false)).rules.unwrap().len(), 3);
    }
}
