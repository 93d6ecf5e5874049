//! `spec.tools`: what each entry resolves to (a ToolServer and its readiness, another
//! agent of the namespace), the `tools` section of the runtime configuration, the
//! Secrets the pods read for it, the agents that call this one, and the ToolsReady
//! condition. Pure: the caches' contents come in as plain values.

use std::collections::BTreeSet;
use std::sync::Arc;

use crds::condition::{FALSE, TRUE, find_condition};
use crds::runtime_config::{ToolHeaderConfig, ToolSourceConfig, ToolSourceKind, ToolsConfig};
use crds::{AgentDeployment, ToolServer};
use kube::ResourceExt;

use crate::names;

/// One `spec.tools` entry, resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolvedTool {
    /// A ToolServer entry: the server (absent when there is none of that name) and
    /// the subset of its tools.
    Server {
        name: String,
        server: Option<Arc<ToolServer>>,
        tools: Vec<String>,
    },
    /// Another agent: whether it exists, and what it does as the model reads it.
    Agent {
        name: String,
        exists: bool,
        description: Option<String>,
    },
}

/// A Secret key a runtime pod reads into an env var for its tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolEnv {
    /// The env var.
    pub var: String,
    /// The Secret.
    pub secret: String,
    /// The key in it.
    pub key: String,
}

/// Resolves `agent`'s `spec.tools` against the ToolServers of the cache and the
/// agents `agent_exists` (by name, in `agent`'s namespace) says are there.
pub fn resolve(
    agent: &AgentDeployment,
    servers: &[Arc<ToolServer>],
    agent_exists: impl Fn(&str) -> bool,
) -> Vec<ResolvedTool> {
    let namespace = agent.namespace();
    agent
        .spec
        .tools
        .iter()
        .filter_map(|entry| match (&entry.tool_server, &entry.agent) {
            (Some(name), _) => Some(ResolvedTool::Server {
                name: name.clone(),
                server: servers
                    .iter()
                    .find(|s| s.namespace() == namespace && s.name_any() == *name)
                    .cloned(),
                tools: entry.tools.clone(),
            }),
            (None, Some(name)) => Some(ResolvedTool::Agent {
                name: name.clone(),
                exists: agent_exists(name),
                description: entry.description.clone(),
            }),
            (None, None) => None,
        })
        .collect()
}

/// The runtime's `tools` section. A ToolServer that does not exist is left out (it
/// has no URL); one that exists is rendered whether or not it answers now (the
/// runtime reports what it reaches), so its readiness never rolls the pods. An agent
/// that does not exist is left out too.
pub fn tools_config(
    agent: &AgentDeployment,
    resolved: &[ResolvedTool],
    cluster_domain: &str,
) -> ToolsConfig {
    let namespace = agent.namespace().unwrap_or_default();
    let policy = &agent.spec.tool_policy;
    let defaults = ToolsConfig::default();
    let sources = resolved
        .iter()
        .filter_map(|tool| match tool {
            ResolvedTool::Server {
                name,
                server: Some(server),
                tools,
            } => Some(ToolSourceConfig {
                name: name.clone(),
                kind: ToolSourceKind::Mcp,
                url: server.spec.url.clone(),
                headers: server
                    .spec
                    .headers
                    .iter()
                    .enumerate()
                    .map(|(i, h)| ToolHeaderConfig {
                        name: h.name.clone(),
                        value_env: names::tool_header_env(name, i),
                    })
                    .collect(),
                timeout_seconds: u64::try_from(server.spec.timeout_seconds).unwrap_or(30),
                tools: tools.clone(),
                description: None,
                key_env: None,
            }),
            ResolvedTool::Server { server: None, .. } => None,
            ResolvedTool::Agent {
                name,
                exists: true,
                description,
            } => Some(ToolSourceConfig {
                name: name.clone(),
                kind: ToolSourceKind::Agent,
                url: names::endpoint(name, &namespace, cluster_domain),
                headers: Vec::new(),
                // An agent's answer takes a model turn (or several): as long as the
                // slowest model the callee may try, bounded by the approval wait.
                timeout_seconds: AGENT_CALL_TIMEOUT_SECONDS,
                tools: Vec::new(),
                description: description.clone(),
                key_env: Some(names::agent_call_key_env(name)),
            }),
            ResolvedTool::Agent { exists: false, .. } => None,
        })
        .collect();
    ToolsConfig {
        sources,
        require_approval: policy.require_approval.clone(),
        max_steps: u32::try_from(policy.max_steps).unwrap_or(defaults.max_steps),
        approval_timeout_seconds: u64::try_from(policy.approval_timeout_seconds)
            .unwrap_or(defaults.approval_timeout_seconds),
    }
}

/// Seconds a call of another agent may take.
pub const AGENT_CALL_TIMEOUT_SECONDS: u64 = 120;

/// The env vars `agent`'s pods read for their tools: each ToolServer header's value
/// and the key of each agent it calls (both from Secrets).
pub fn tool_env(agent: &AgentDeployment, resolved: &[ResolvedTool]) -> Vec<ToolEnv> {
    let caller = agent.name_any();
    let mut env = Vec::new();
    for tool in resolved {
        match tool {
            ResolvedTool::Server {
                name,
                server: Some(server),
                ..
            } => env.extend(
                server
                    .spec
                    .headers
                    .iter()
                    .enumerate()
                    .map(|(i, h)| ToolEnv {
                        var: names::tool_header_env(name, i),
                        secret: h.value_from.name.clone(),
                        key: h.value_from.key.clone(),
                    }),
            ),
            ResolvedTool::Agent {
                name, exists: true, ..
            } => env.push(ToolEnv {
                var: names::agent_call_key_env(name),
                secret: names::agent_call_key_secret(&caller, name),
                key: names::API_KEY_KEY.to_owned(),
            }),
            _ => {}
        }
    }
    env
}

/// The agents `agent` calls (named in `spec.tools`, whether they exist yet or not),
/// sorted: each gets a key Secret.
pub fn callees(agent: &AgentDeployment) -> Vec<String> {
    let own = agent.name_any();
    let set: BTreeSet<String> = agent
        .spec
        .tools
        .iter()
        .filter_map(|t| t.agent.clone())
        .filter(|callee| *callee != own)
        .collect();
    set.into_iter().collect()
}

/// The agents `agent` names in its `spec.tools`: the values the callers index keeps
/// it under (see [`callers`]).
pub fn callee_values(agent: &AgentDeployment) -> Vec<Box<str>> {
    callees(agent).into_iter().map(Into::into).collect()
}

/// The agents of `agent`'s namespace that name it in their `spec.tools`, sorted:
/// their key Secrets become files `agent.<caller>` in its keys volume.
pub fn callers<A: AsRef<AgentDeployment>>(all: &[A], agent: &AgentDeployment) -> Vec<String> {
    let namespace = agent.namespace();
    let name = agent.name_any();
    let set: BTreeSet<String> = all
        .iter()
        .map(AsRef::as_ref)
        .filter(|a| a.namespace() == namespace && a.name_any() != name)
        .filter(|a| {
            a.spec
                .tools
                .iter()
                .any(|t| t.agent.as_deref() == Some(&name))
        })
        .map(ResourceExt::name_any)
        .collect();
    set.into_iter().collect()
}

/// The agents of the namespace naming ToolServer `server` in their `spec.tools`.
pub fn agents_naming_server<A: AsRef<AgentDeployment>>(
    all: &[A],
    namespace: Option<&str>,
    server: &str,
) -> Vec<(String, String)> {
    all.iter()
        .map(AsRef::as_ref)
        .filter(|a| a.namespace().as_deref() == namespace)
        .filter(|a| {
            a.spec
                .tools
                .iter()
                .any(|t| t.tool_server.as_deref() == Some(server))
        })
        .map(|a| (a.name_any(), a.namespace().unwrap_or_default()))
        .collect()
}

/// What the ToolsReady condition says: `None` while `spec.tools` is empty (no
/// condition), else (status, reason, message).
pub fn tools_ready(resolved: &[ResolvedTool]) -> Option<(&'static str, &'static str, String)> {
    if resolved.is_empty() {
        return None;
    }
    let mut problems = Vec::new();
    let mut ready = Vec::new();
    for tool in resolved {
        match tool {
            ResolvedTool::Server { name, server, .. } => match server {
                None => problems.push(format!(
                    "toolServer {name}: no ToolServer of that name in this namespace"
                )),
                Some(server) => {
                    let conditions = server
                        .status
                        .as_ref()
                        .map(|s| s.conditions.as_slice())
                        .unwrap_or_default();
                    match find_condition(conditions, crds::conditions::READY) {
                        Some(c) if c.status == TRUE => {
                            let count = server.status.as_ref().and_then(|s| s.tool_count);
                            ready.push(match count {
                                Some(n) => format!("toolServer {name} ({n} tools)"),
                                None => format!("toolServer {name}"),
                            });
                        }
                        Some(c) if c.status == FALSE => problems.push(format!(
                            "toolServer {name} is not Ready ({}): {}",
                            c.reason, c.message
                        )),
                        _ => problems.push(format!("toolServer {name} has not been listed yet")),
                    }
                }
            },
            ResolvedTool::Agent { name, exists, .. } => {
                if *exists {
                    ready.push(format!("agent {name}"));
                } else {
                    problems.push(format!(
                        "agent {name}: no AgentDeployment of that name in this namespace"
                    ));
                }
            }
        }
    }
    Some(if problems.is_empty() {
        (
            TRUE,
            "ToolSourcesReady",
            format!("every tool source is ready: {}", ready.join(", ")),
        )
    } else {
        (
            FALSE,
            "ToolSourcesNotReady",
            format!("{}; turns go on without them", problems.join("; ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::build::fixtures::full;
    use crds::AgentTool;

    fn server(name: &str, ready: Option<bool>) -> ToolServer {
        let mut server: ToolServer = serde_json::from_value(serde_json::json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "ToolServer",
            "metadata": {"name": name, "namespace": "tenant-a"},
            "spec": {"url": format!("http://{name}.tools:8000/mcp"), "timeoutSeconds": 20,
                "headers": [{"name": "Authorization", "valueFrom": {"name": format!("{name}-token"), "key": "auth"}}]},
        }))
        .unwrap();
        if let Some(ready) = ready {
            server.status = Some(crds::ToolServerStatus {
                conditions: vec![crds::condition::new_condition(
                    "Ready",
                    if ready { TRUE } else { FALSE },
                    if ready { "Listed" } else { "Unreachable" },
                    if ready {
                        "listed 2 tools".to_owned()
                    } else {
                        "connection refused".to_owned()
                    },
                    Some(1),
                )],
                tool_count: ready.then_some(2),
                ..Default::default()
            });
        }
        server
    }

    fn arcs<T: Clone>(items: &[T]) -> Vec<std::sync::Arc<T>> {
        items.iter().cloned().map(std::sync::Arc::new).collect()
    }

    fn agent_with_tools(name: &str, tools: Vec<AgentTool>) -> AgentDeployment {
        let mut agent = full();
        agent.metadata.name = Some(name.to_owned());
        agent.spec.tools = tools;
        agent
    }

    fn server_entry(name: &str, tools: &[&str]) -> AgentTool {
        AgentTool {
            tool_server: Some(name.to_owned()),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn agent_entry(name: &str) -> AgentTool {
        AgentTool {
            agent: Some(name.to_owned()),
            description: Some(format!("{name} knows things")),
            ..Default::default()
        }
    }

    #[test]
    fn each_entry_renders_as_a_source_with_env_names_for_its_secrets() {
        let support = agent_with_tools(
            "support",
            vec![
                server_entry("search", &["search"]),
                server_entry("gone", &[]),
                agent_entry("billing"),
                agent_entry("nobody"),
            ],
        );
        let billing = agent_with_tools("billing", Vec::new());
        let servers = [server("search", Some(true))];
        let agents = [support.clone(), billing];
        let resolved = resolve(&support, &arcs(&servers), |name| {
            agents.iter().any(|a| a.name_any() == name)
        });
        let config = tools_config(&support, &resolved, "cluster.local");
        assert_eq!(config.sources.len(), 2, "{config:?}");
        let mcp = &config.sources[0];
        assert_eq!(mcp.kind, ToolSourceKind::Mcp);
        assert_eq!(mcp.name, "search");
        assert_eq!(mcp.url, "http://search.tools:8000/mcp");
        assert_eq!(mcp.timeout_seconds, 20);
        assert_eq!(mcp.tools, ["search"]);
        assert_eq!(mcp.headers[0].name, "Authorization");
        assert_eq!(mcp.headers[0].value_env, "SWITCHBOARD_TOOL_SEARCH_HEADER_0");
        let callee = &config.sources[1];
        assert_eq!(callee.kind, ToolSourceKind::Agent);
        assert_eq!(callee.url, "http://billing.tenant-a.svc.cluster.local:8080");
        assert_eq!(
            callee.key_env.as_deref(),
            Some("SWITCHBOARD_AGENT_KEY_BILLING")
        );
        assert_eq!(callee.description.as_deref(), Some("billing knows things"));
        assert_eq!(config.max_steps, 8);
        assert_eq!(config.approval_timeout_seconds, 600);

        let env = tool_env(&support, &resolved);
        assert_eq!(
            env,
            [
                ToolEnv {
                    var: "SWITCHBOARD_TOOL_SEARCH_HEADER_0".to_owned(),
                    secret: "search-token".to_owned(),
                    key: "auth".to_owned()
                },
                ToolEnv {
                    var: "SWITCHBOARD_AGENT_KEY_BILLING".to_owned(),
                    secret: "support-calls-billing".to_owned(),
                    key: "api-key".to_owned()
                },
            ]
        );
        assert_eq!(callees(&support), ["billing", "nobody"]);
    }

    #[test]
    fn the_condition_names_every_missing_or_failing_source() {
        let support = agent_with_tools(
            "support",
            vec![
                server_entry("live", &[]),
                server_entry("dead", &[]),
                server_entry("gone", &[]),
                agent_entry("nobody"),
            ],
        );
        let servers = [server("live", Some(true)), server("dead", Some(false))];
        let resolved = resolve(&support, &arcs(&servers), |name| name == "support");
        let (status, reason, message) = tools_ready(&resolved).unwrap();
        assert_eq!((status, reason), (FALSE, "ToolSourcesNotReady"));
        assert!(
            message.contains("toolServer dead is not Ready (Unreachable): connection refused"),
            "{message}"
        );
        assert!(
            message.contains("toolServer gone: no ToolServer"),
            "{message}"
        );
        assert!(
            message.contains("agent nobody: no AgentDeployment"),
            "{message}"
        );
        assert!(!message.contains("live"), "{message}");

        let ok = agent_with_tools("support", vec![server_entry("live", &[])]);
        let (status, _, message) =
            tools_ready(&resolve(&ok, &arcs(&servers), |name| name == "support")).unwrap();
        assert_eq!(status, TRUE);
        assert!(message.contains("live (2 tools)"), "{message}");
        assert_eq!(tools_ready(&[]), None);
    }

    #[test]
    fn callers_are_the_agents_of_the_namespace_naming_this_one() {
        let billing = agent_with_tools("billing", Vec::new());
        let support = agent_with_tools("support", vec![agent_entry("billing")]);
        let sales = agent_with_tools(
            "sales",
            vec![agent_entry("billing"), server_entry("x", &[])],
        );
        let mut elsewhere = agent_with_tools("other", vec![agent_entry("billing")]);
        elsewhere.metadata.namespace = Some("tenant-b".to_owned());
        let all = arcs(&[billing.clone(), support, sales, elsewhere]);
        assert_eq!(callers(&all, &billing), ["sales", "support"]);
        assert_eq!(
            agents_naming_server(&all, Some("tenant-a"), "x"),
            [("sales".to_owned(), "tenant-a".to_owned())]
        );
    }
}
