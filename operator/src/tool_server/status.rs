//! Pure status computation of a ToolServer: the outcome of one listing in, the
//! status out, with condition times moving only on real transitions and
//! `lastListedTime` only when the listing changed what the status says.

use crds::ToolServerStatus;
use crds::condition::{FALSE, TRUE, new_condition, set_condition};
use crds::conditions::READY;
use crds::tool_server::ToolInfo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::agent::status::normalize_times;

/// What one attempt to list the server's tools came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The server answered with these tools (possibly none).
    Listed(Vec<ToolInfo>),
    /// It could not be listed: a PascalCase reason and the message (no secrets).
    Failed { reason: String, message: String },
}

/// The status after `outcome`, starting from `current`. A failure keeps the tools
/// last listed (Ready False says they cannot be reached now).
pub fn desired_status(
    current: &ToolServerStatus,
    generation: Option<i64>,
    outcome: &Outcome,
    now: Time,
) -> ToolServerStatus {
    let mut status = current.clone();
    status.observed_generation = generation;
    let (ready, reason, message) = match outcome {
        Outcome::Listed(tools) => {
            let mut unique: Vec<ToolInfo> = Vec::with_capacity(tools.len());
            for tool in tools {
                if !unique.iter().any(|t| t.name == tool.name) {
                    unique.push(tool.clone());
                }
            }
            let changed = status.tools != unique || status.last_listed_time.is_none();
            status.tool_count = Some(i32::try_from(unique.len()).unwrap_or(i32::MAX));
            status.tools = unique;
            if changed {
                status.last_listed_time = Some(now);
            }
            if status.tools.is_empty() {
                (
                    FALSE,
                    "NoTools".to_owned(),
                    "the server answered but lists no tools; agents naming it get none".to_owned(),
                )
            } else {
                (
                    TRUE,
                    "Listed".to_owned(),
                    format!("the server lists {} tools", status.tools.len()),
                )
            }
        }
        Outcome::Failed { reason, message } => (FALSE, reason.clone(), message.clone()),
    };
    set_condition(
        &mut status.conditions,
        new_condition(READY, ready, &reason, message, generation),
    );
    status
}

/// Whether writing `desired` changes anything but condition transition times.
pub fn status_differs(current: Option<&ToolServerStatus>, desired: &ToolServerStatus) -> bool {
    let Some(current) = current else {
        return true;
    };
    let mut current = current.clone();
    let mut desired = desired.clone();
    normalize_times(&mut current.conditions);
    normalize_times(&mut desired.conditions);
    current != desired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::condition::find_condition;
    use k8s_openapi::jiff::Timestamp;

    fn tool(name: &str) -> ToolInfo {
        ToolInfo {
            name: name.to_owned(),
            description: Some(format!("{name} things")),
        }
    }

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn a_listing_sets_ready_tools_and_count_and_an_unchanged_one_writes_nothing() {
        let listed = Outcome::Listed(vec![tool("add"), tool("echo"), tool("add")]);
        let first = desired_status(&ToolServerStatus::default(), Some(2), &listed, at(100));
        assert_eq!(first.tool_count, Some(2));
        assert_eq!(first.tools.len(), 2);
        assert_eq!(first.last_listed_time, Some(at(100)));
        assert_eq!(first.observed_generation, Some(2));
        let ready = find_condition(&first.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            (TRUE, "Listed")
        );
        let again = desired_status(&first, Some(2), &listed, at(400));
        assert!(
            !status_differs(Some(&first), &again),
            "an idle re-list writes nothing"
        );
    }

    #[test]
    fn failures_and_empty_listings_are_ready_false_with_their_reason() {
        let listed = Outcome::Listed(vec![tool("add")]);
        let up = desired_status(&ToolServerStatus::default(), Some(1), &listed, at(100));
        let failed = Outcome::Failed {
            reason: "Unreachable".to_owned(),
            message: "connection refused".to_owned(),
        };
        let down = desired_status(&up, Some(1), &failed, at(200));
        let c = find_condition(&down.conditions, READY).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            (FALSE, "Unreachable")
        );
        assert_eq!(c.message, "connection refused");
        assert_eq!(down.tools, up.tools, "the last listed tools stay");
        assert!(status_differs(Some(&up), &down));
        let empty = desired_status(&down, Some(1), &Outcome::Listed(Vec::new()), at(300));
        let c = find_condition(&empty.conditions, READY).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), (FALSE, "NoTools"));
        assert_eq!(empty.tool_count, Some(0));
    }
}
