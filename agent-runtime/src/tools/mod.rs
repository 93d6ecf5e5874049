//! Server-side tools: the tools the runtime offers the model and calls itself
//! (the config file's `tools.sources`). An MCP server (Streamable HTTP, through
//! `rmcp`) offers the tools it lists, or the subset the source names; another
//! agent is one tool, `ask_<name>`, answered by that agent's agent-call route
//! (`POST <url>/agents/v1/chat/completions`).
//!
//! The [`ToolRegistry`] lists every MCP source at start and then periodically
//! (sooner after a failure); a source that cannot be reached or lists no tools
//! is logged, counted (`switchboard_runtime_tool_source_up`), reported in the
//! pod's status ([`ToolRegistry::problems`]) and left out: turns go on with the
//! tools that are there.

mod mcp;
pub mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crds::runtime_config::{ToolSourceConfig, ToolSourceKind, ToolsConfig};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::providers::ToolSpec;
use crate::shutdown::Lifecycle;

/// How often a healthy source is listed again.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// How soon a source that failed is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// Timeout of a source when its config has none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a tool call failed; the text goes back to the model as the tool's result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ToolError {
    /// The arguments are not JSON or do not fit the tool's schema.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool answered with an error.
    #[error("the tool failed: {0}")]
    Failed(String),
    /// No answer within the source's timeout.
    #[error("the tool did not answer within {0} seconds")]
    Timeout(u64),
    /// The source could not be reached.
    #[error("the tool's server could not be reached: {0}")]
    Unavailable(String),
    /// A person rejected the call (or nobody decided in time); the text says which.
    #[error("{0}")]
    Rejected(String),
}

impl ToolError {
    /// The outcome label of metrics and the stored status.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidArguments(_) => "invalid_arguments",
            Self::Failed(_) => "error",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Rejected(_) => "rejected",
        }
    }
}

/// One tool the model may call and the runtime runs.
#[derive(Clone, Debug)]
pub struct ServerTool {
    /// The name the model sees.
    pub name: String,
    /// The name at its source (an MCP tool's own name).
    pub remote_name: String,
    /// The source's name.
    pub source: String,
    /// What it does.
    pub description: Option<String>,
    /// Its arguments (a JSON Schema object).
    pub schema: Value,
    /// How long one call may take.
    pub timeout: Duration,
}

impl ServerTool {
    /// The tool as offered to the model.
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: Some(self.schema.clone()),
            strict: None,
        }
    }
}

/// A source that could not be listed (or listed no tools).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceProblem {
    /// The source's name.
    pub source: String,
    /// What went wrong (no secret: header values are never part of it).
    pub error: String,
}

#[derive(Default)]
struct Snapshot {
    tools: Vec<ServerTool>,
    problems: Vec<SourceProblem>,
    connections: HashMap<String, Arc<mcp::Connection>>,
}

/// The server-side tools available now.
pub struct ToolRegistry {
    config: ToolsConfig,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    snapshot: RwLock<Arc<Snapshot>>,
    wake: Notify,
    /// Turns waiting for an approval's decision, by approval id.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

fn timeout_of(source: &ToolSourceConfig) -> Duration {
    match source.timeout_seconds {
        0 => DEFAULT_TIMEOUT,
        s => Duration::from_secs(s),
    }
}

/// The tool name of an agent source: `ask_<name>` with `-` as `_`.
pub fn agent_tool_name(source: &str) -> String {
    format!("ask_{}", source.replace(['-', '.'], "_"))
}

impl ToolRegistry {
    /// A registry of `config`'s sources, listed by [`Self::refresh`].
    pub fn new(config: ToolsConfig, client: reqwest::Client, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            client,
            metrics,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            wake: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// The rules of the tool loop.
    pub fn config(&self) -> &ToolsConfig {
        &self.config
    }

    /// Whether any source is configured.
    pub fn is_empty(&self) -> bool {
        self.config.sources.is_empty()
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The tools offered now.
    pub fn tools(&self) -> Vec<ServerTool> {
        self.current().tools.clone()
    }

    /// Whether any tool is offered now (without copying them).
    pub fn any(&self) -> bool {
        !self.current().tools.is_empty()
    }

    /// Whether a tool of this name is offered now (without copying it).
    pub fn offers(&self, name: &str) -> bool {
        self.current().tools.iter().any(|t| t.name == name)
    }

    /// A tool offered now, by the name the model uses.
    pub fn find(&self, name: &str) -> Option<ServerTool> {
        self.current()
            .tools
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    /// Sources that could not be listed or listed no tools, at the last listing.
    pub fn problems(&self) -> Vec<SourceProblem> {
        self.current().problems.clone()
    }

    /// Whether calls to `name` wait for a person's approval.
    pub fn needs_approval(&self, name: &str) -> bool {
        self.config.require_approval.iter().any(|n| n == name)
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        match self.waiters.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// What wakes the turn waiting for approval `id` (registered until
    /// [`Self::approval_settled`]).
    pub fn approval_waiter(&self, id: &str) -> Arc<Notify> {
        self.waiters().entry(id.to_owned()).or_default().clone()
    }

    /// Wakes the turn waiting for approval `id` in this process, if any (it
    /// reads the decision from the database).
    pub fn approval_decided(&self, id: &str) {
        if let Some(notify) = self.waiters().get(id) {
            notify.notify_one();
        }
    }

    /// Forgets the waiter of approval `id`.
    pub fn approval_settled(&self, id: &str) {
        self.waiters().remove(id);
    }

    /// Lists every source again now (MCP sources connect anew when their
    /// connection failed) and replaces the tools offered.
    pub async fn refresh(&self) {
        let previous = self.current();
        let mut next = Snapshot::default();
        for source in &self.config.sources {
            match source.kind {
                ToolSourceKind::Agent => next.tools.push(ServerTool {
                    name: agent_tool_name(&source.name),
                    remote_name: source.name.clone(),
                    source: source.name.clone(),
                    description: Some(source.description.clone().unwrap_or_else(|| {
                        format!("Ask the agent {} and get its answer.", source.name)
                    })),
                    schema: json!({
                        "type": "object",
                        "properties": {"message": {"type": "string", "description": "What to ask the agent."}},
                        "required": ["message"],
                    }),
                    timeout: timeout_of(source),
                }),
                ToolSourceKind::Mcp => {
                    let reuse = previous.connections.get(&source.name).cloned();
                    match mcp::list(source, reuse, &self.client).await {
                        Ok((connection, listed)) => {
                            let offered: Vec<_> = listed
                                .into_iter()
                                .filter(|t| {
                                    source.tools.is_empty() || source.tools.contains(&t.name)
                                })
                                .collect();
                            if offered.is_empty() {
                                next.problems.push(SourceProblem {
                                    source: source.name.clone(),
                                    error: if source.tools.is_empty() {
                                        "the server lists no tools".to_owned()
                                    } else {
                                        format!(
                                            "the server lists none of the tools named ({})",
                                            source.tools.join(", ")
                                        )
                                    },
                                });
                            } else {
                                for tool in offered {
                                    next.tools.push(ServerTool {
                                        remote_name: tool.name.clone(),
                                        name: tool.name,
                                        source: source.name.clone(),
                                        description: tool.description,
                                        schema: tool.schema,
                                        timeout: timeout_of(source),
                                    });
                                }
                            }
                            next.connections.insert(source.name.clone(), connection);
                        }
                        Err(error) => next.problems.push(SourceProblem {
                            source: source.name.clone(),
                            error,
                        }),
                    }
                }
            }
        }
        // The first source offering a name wins.
        let mut seen = std::collections::HashSet::new();
        next.tools.retain(|t| {
            let fresh = seen.insert(t.name.clone());
            if !fresh {
                tracing::warn!(tool = %t.name, source = %t.source, "a tool of this name is offered by an earlier source: left out");
            }
            fresh
        });
        for source in &self.config.sources {
            let problem = next.problems.iter().find(|p| p.source == source.name);
            self.metrics
                .tool_source_up
                .with_label_values(&[source.name.as_str()])
                .set(i64::from(problem.is_none()));
            let was = previous.problems.iter().find(|p| p.source == source.name);
            match (problem, was) {
                (Some(p), w) if w != Some(p) => {
                    tracing::warn!(source = %p.source, error = %p.error, "tool source unavailable: turns go on without its tools");
                }
                (None, Some(_)) => {
                    tracing::info!(source = %source.name, "tool source available again")
                }
                _ => {}
            }
        }
        let fresh = Arc::new(next);
        match self.snapshot.write() {
            Ok(mut s) => *s = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// Lists the sources again periodically, sooner after a failure, until `stop`.
    pub async fn run(self: Arc<Self>, stop: Lifecycle) {
        if !self
            .config
            .sources
            .iter()
            .any(|s| s.kind == ToolSourceKind::Mcp)
        {
            return;
        }
        loop {
            let wait = if self.current().problems.is_empty() {
                REFRESH_EVERY
            } else {
                RETRY_AFTER_FAILURE
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
            self.refresh().await;
        }
    }

    /// Calls `tool` with `arguments` (already checked against its schema),
    /// bounded by its source's timeout; the result as text for the model.
    pub async fn call(&self, tool: &ServerTool, arguments: Value) -> Result<String, ToolError> {
        let Some(source) = self.config.sources.iter().find(|s| s.name == tool.source) else {
            return Err(ToolError::Unavailable(format!(
                "source {} is not configured",
                tool.source
            )));
        };
        let call = async {
            match source.kind {
                ToolSourceKind::Mcp => {
                    let connection = self.current().connections.get(&source.name).cloned();
                    let Some(connection) = connection else {
                        return Err(ToolError::Unavailable("not connected".to_owned()));
                    };
                    let result = connection.call(&tool.remote_name, arguments).await;
                    if matches!(result, Err(ToolError::Unavailable(_))) {
                        connection.mark_broken();
                        self.wake.notify_one();
                    }
                    result
                }
                ToolSourceKind::Agent => self.ask_agent(source, arguments).await,
            }
        };
        match tokio::time::timeout(tool.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(ToolError::Timeout(tool.timeout.as_secs())),
        }
    }

    async fn ask_agent(
        &self,
        source: &ToolSourceConfig,
        arguments: Value,
    ) -> Result<String, ToolError> {
        let message = arguments
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let url = format!(
            "{}/agents/v1/chat/completions",
            source.url.trim_end_matches('/')
        );
        let mut request = self.client.post(url).json(&json!({
            "model": source.name,
            "messages": [{"role": "user", "content": message}],
        }));
        if let Some(key) = source
            .key_env
            .as_deref()
            .and_then(|name| std::env::var(name).ok())
        {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ToolError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| ToolError::Failed(format!("the agent's answer is not JSON: {e}")))?;
        if !status.is_success() {
            let message = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            return Err(ToolError::Failed(format!(
                "the agent answered {}: {message}",
                status.as_u16()
            )));
        }
        body.pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ToolError::Failed("the agent's answer has no content".to_owned()))
    }
}
