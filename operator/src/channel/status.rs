//! Pure status of a ChatChannel: whether it is accepted, whether its agent is Ready,
//! and its URL, from the channel and the agent it points to.

use crds::condition::{FALSE, TRUE, UNKNOWN, find_condition, new_condition, set_condition};
use crds::conditions::{ACCEPTED, AGENT_READY, CONNECTED, READY};
use crds::{AgentDeployment, ChatChannel, ChatChannelStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

/// URL path of a channel under its agent's endpoint.
pub fn channel_path(channel: &str) -> String {
    format!("/channels/{channel}")
}

/// The conditions the operator writes: all but `Connected`, which the runtime pod
/// holding the platform connection writes with its own field manager (the
/// operator's server-side apply leaves out what it does not own, so it never
/// takes over or removes that condition).
fn operator_conditions(conditions: &[Condition]) -> Vec<Condition> {
    conditions
        .iter()
        .filter(|c| c.type_ != CONNECTED)
        .cloned()
        .collect()
}

/// The status the operator wants for `channel`, given its agent (if it exists). Keeps
/// transition times of unchanged conditions; `activity` and the `Connected`
/// condition belong to the runtime pods.
pub fn desired_status(channel: &ChatChannel, agent: Option<&AgentDeployment>) -> ChatChannelStatus {
    let generation = channel.metadata.generation;
    let current = channel.status.clone().unwrap_or_default();
    let mut conditions = operator_conditions(&current.conditions);
    let mut set = |type_: &str, status: &str, reason: &str, message: String| {
        set_condition(
            &mut conditions,
            new_condition(type_, status, reason, message, generation),
        );
    };
    let agent_name = &channel.spec.agent_ref.name;
    let problems = super::validate::validate(channel);
    let accepted = if !problems.is_empty() {
        set(ACCEPTED, FALSE, "InvalidSpec", problems.join("; "));
        false
    } else if agent.is_none() {
        set(
            ACCEPTED,
            FALSE,
            "AgentNotFound",
            format!(
                "AgentDeployment {agent_name} does not exist in this namespace; create it or fix spec.agentRef"
            ),
        );
        false
    } else {
        set(
            ACCEPTED,
            TRUE,
            "Accepted",
            format!("bound to AgentDeployment {agent_name}"),
        );
        true
    };

    let agent_ready = match agent {
        None => {
            set(
                AGENT_READY,
                FALSE,
                "AgentNotFound",
                format!("AgentDeployment {agent_name} does not exist"),
            );
            false
        }
        Some(agent) => {
            let conditions = agent
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            match find_condition(conditions, READY) {
                Some(c) => {
                    set(
                        AGENT_READY,
                        &c.status,
                        &c.reason,
                        format!(
                            "AgentDeployment {agent_name} Ready={}: {}",
                            c.status, c.message
                        ),
                    );
                    c.status == TRUE
                }
                None => {
                    set(
                        AGENT_READY,
                        UNKNOWN,
                        "AgentPending",
                        format!("AgentDeployment {agent_name} reports no Ready condition yet"),
                    );
                    false
                }
            }
        }
    };

    let (status, reason, message) = if !accepted {
        (
            FALSE,
            "NotAccepted",
            "the channel is not accepted; see the Accepted condition".to_owned(),
        )
    } else if !channel.spec.enabled {
        (
            FALSE,
            "Disabled",
            "spec.enabled is false: the channel refuses new messages".to_owned(),
        )
    } else if !agent_ready {
        (
            FALSE,
            "AgentNotReady",
            format!("AgentDeployment {agent_name} is not Ready"),
        )
    } else {
        (TRUE, "Ready", "the channel's agent is Ready".to_owned())
    };
    set(READY, status, reason, message);

    let endpoint = agent
        .and_then(|a| a.status.as_ref())
        .and_then(|s| s.endpoint.as_ref())
        .map(|e| {
            format!(
                "{}{}",
                e.trim_end_matches('/'),
                channel_path(&channel.name_any())
            )
        });
    ChatChannelStatus {
        observed_generation: generation,
        conditions,
        endpoint,
        client_key_secret: (channel.spec.client_key == crds::ClientKeyMode::Channel)
            .then(|| crate::names::channel_key_secret(&channel.name_any())),
        activity: Vec::new(),
    }
}

/// What of a channel its controllers (its own and its agent's) act on, as a hash: the
/// whole object but the resource version, the conditions' transition times and the
/// activity its runtime pods report. A busy channel's pods write their activity every
/// 30 s, and each write woke the channel's reconcile and its agent's. The runtime's
/// `Connected` condition stays in: a connection that drops is seen at once.
pub fn significant(channel: &ChatChannel) -> u64 {
    let mut channel = channel.clone();
    channel.metadata.resource_version = None;
    channel.metadata.managed_fields = None;
    if let Some(status) = channel.status.as_mut() {
        status.activity.clear();
        crate::agent::status::normalize_times(&mut status.conditions);
    }
    crate::hash::content_hash(&channel)
}

/// Whether writing `desired` changes anything but timestamps (and what the pods
/// write: activity and `Connected`).
pub fn status_differs(current: Option<&ChatChannelStatus>, desired: &ChatChannelStatus) -> bool {
    let Some(current) = current else { return true };
    let mut current = current.clone();
    current.activity.clear();
    current.conditions = operator_conditions(&current.conditions);
    let mut desired = desired.clone();
    crate::agent::status::normalize_times(&mut current.conditions);
    crate::agent::status::normalize_times(&mut desired.conditions);
    current != desired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::condition::is_true;

    fn channel() -> ChatChannel {
        serde_yaml::from_str(include_str!("../../fixtures/channel-web.yaml")).unwrap()
    }

    fn agent(ready: &str) -> AgentDeployment {
        let mut agent: AgentDeployment =
            serde_yaml::from_str(include_str!("../../fixtures/agent-full.yaml")).unwrap();
        agent.status = Some(crds::AgentDeploymentStatus {
            endpoint: Some("http://support.tenant-a.svc.cluster.local:8080".to_owned()),
            conditions: vec![new_condition(READY, ready, "Because", "why", Some(3))],
            ..Default::default()
        });
        agent
    }

    #[test]
    fn missing_agent_is_not_accepted_with_a_reason() {
        let status = desired_status(&channel(), None);
        let accepted = find_condition(&status.conditions, ACCEPTED).unwrap();
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            (FALSE, "AgentNotFound")
        );
        assert!(!is_true(&status.conditions, READY));
        assert_eq!(status.endpoint, None);
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn ready_agent_makes_the_channel_ready_with_its_endpoint() {
        let status = desired_status(&channel(), Some(&agent(TRUE)));
        assert!(is_true(&status.conditions, ACCEPTED));
        assert!(is_true(&status.conditions, AGENT_READY));
        assert!(is_true(&status.conditions, READY));
        assert_eq!(
            status.endpoint.as_deref(),
            Some("http://support.tenant-a.svc.cluster.local:8080/channels/support-web")
        );
    }

    #[test]
    fn agent_ready_mirrors_the_agent_and_disabled_channels_are_not_ready() {
        let status = desired_status(&channel(), Some(&agent(FALSE)));
        assert!(is_true(&status.conditions, ACCEPTED));
        let mirrored = find_condition(&status.conditions, AGENT_READY).unwrap();
        assert_eq!(
            (mirrored.status.as_str(), mirrored.reason.as_str()),
            (FALSE, "Because")
        );
        let mut disabled = channel();
        disabled.spec.enabled = false;
        let status = desired_status(&disabled, Some(&agent(TRUE)));
        assert_eq!(
            find_condition(&status.conditions, READY).unwrap().reason,
            "Disabled"
        );
    }

    #[test]
    fn the_runtimes_connected_condition_is_neither_written_nor_compared() {
        let mut ch = channel();
        let first = desired_status(&ch, Some(&agent(TRUE)));
        let mut with_connected = first.clone();
        with_connected.conditions.push(
            crds::channel::ConnectionState::Unauthorized
                .condition("apps.connections.open: invalid_auth", None),
        );
        ch.status = Some(with_connected);
        let second = desired_status(&ch, Some(&agent(TRUE)));
        assert!(find_condition(&second.conditions, CONNECTED).is_none());
        assert!(!status_differs(ch.status.as_ref(), &second));
    }

    #[test]
    fn the_runtimes_activity_is_not_a_significant_change_and_the_rest_is() {
        let mut ch = channel();
        ch.metadata.resource_version = Some("1".to_owned());
        ch.status = Some(desired_status(&ch, Some(&agent(TRUE))));
        let before = significant(&ch);
        let mut busy = ch.clone();
        busy.metadata.resource_version = Some("2".to_owned());
        busy.status.as_mut().unwrap().activity = vec![crds::channel::ChannelActivity {
            pod: "support-7d9-abc".to_owned(),
            messages_total: 12,
            active_sessions: 3,
            last_message_time: None,
        }];
        assert_eq!(significant(&busy), before, "activity and a new version");
        let mut connected = busy.clone();
        connected.status.as_mut().unwrap().conditions.push(
            crds::channel::ConnectionState::Unauthorized
                .condition("apps.connections.open: invalid_auth", None),
        );
        assert_ne!(significant(&connected), before, "the runtime's Connected");
        let mut disabled = busy.clone();
        disabled.spec.enabled = false;
        assert_ne!(significant(&disabled), before, "the spec");
    }

    #[test]
    fn unchanged_inputs_need_no_write() {
        let mut ch = channel();
        let first = desired_status(&ch, Some(&agent(TRUE)));
        ch.status = Some(first);
        let second = desired_status(&ch, Some(&agent(TRUE)));
        assert!(!status_differs(ch.status.as_ref(), &second));
    }
}
