//! One MCP server over Streamable HTTP, through the `rmcp` client: connect
//! (`initialize`), list its tools, call one. Header values come from the
//! environment variables the source names and are marked sensitive (never in
//! a log or an error).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crds::runtime_config::ToolSourceConfig;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use super::{ToolError, timeout_of};

/// A tool as the server lists it.
pub(super) struct Listed {
    pub name: String,
    pub description: Option<String>,
    pub schema: Value,
}

/// An initialized session with one server.
pub(super) struct Connection {
    service: RunningService<RoleClient, ()>,
    broken: AtomicBool,
}

impl Connection {
    /// Marks the connection for replacement at the next listing.
    pub(super) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    /// Calls a tool; a tool's own error (`isError`) is [`ToolError::Failed`].
    pub(super) async fn call(&self, name: &str, arguments: Value) -> Result<String, ToolError> {
        let arguments = match arguments {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => {
                return Err(ToolError::InvalidArguments(format!(
                    "arguments must be a JSON object, not {other}"
                )));
            }
        };
        let result = self
            .service
            .call_tool(CallToolRequestParams {
                meta: None,
                name: name.to_owned().into(),
                arguments,
                task: None,
            })
            .await
            .map_err(|e| match e {
                rmcp::ServiceError::McpError(e) => ToolError::Failed(e.message.to_string()),
                other => ToolError::Unavailable(other.to_string()),
            })?;
        let mut text = String::new();
        for content in &result.content {
            if let Some(t) = content.as_text() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&t.text);
            }
        }
        if text.is_empty()
            && let Some(structured) = &result.structured_content
        {
            text = structured.to_string();
        }
        if result.is_error == Some(true) {
            return Err(ToolError::Failed(text));
        }
        Ok(text)
    }
}

fn headers(source: &ToolSourceConfig) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for header in &source.headers {
        let name = HeaderName::try_from(header.name.as_str())
            .map_err(|_| format!("header name {:?} is not valid", header.name))?;
        let value = std::env::var(&header.value_env).map_err(|_| {
            format!(
                "header {}: environment variable {} is not set",
                header.name, header.value_env
            )
        })?;
        let mut value = HeaderValue::try_from(value).map_err(|_| {
            format!(
                "header {}: the value of {} is not a valid header value",
                header.name, header.value_env
            )
        })?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

async fn connect(source: &ToolSourceConfig) -> Result<Connection, String> {
    let client = reqwest::Client::builder()
        .default_headers(headers(source)?)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let transport = StreamableHttpClientTransport::with_client(
        client,
        StreamableHttpClientTransportConfig::with_uri(source.url.as_str()),
    );
    let service = tokio::time::timeout(timeout_of(source), ().serve(transport))
        .await
        .map_err(|_| {
            format!(
                "no answer to initialize within {} seconds",
                timeout_of(source).as_secs()
            )
        })?
        .map_err(|e| format!("initialize failed: {e}"))?;
    Ok(Connection {
        service,
        broken: AtomicBool::new(false),
    })
}

async fn list_on(
    connection: &Connection,
    source: &ToolSourceConfig,
) -> Result<Vec<Listed>, String> {
    let tools = tokio::time::timeout(timeout_of(source), connection.service.list_all_tools())
        .await
        .map_err(|_| {
            format!(
                "no answer to tools/list within {} seconds",
                timeout_of(source).as_secs()
            )
        })?
        .map_err(|e| format!("tools/list failed: {e}"))?;
    Ok(tools
        .into_iter()
        .map(|t| Listed {
            name: t.name.into_owned(),
            description: t.description.map(|d| d.into_owned()),
            schema: Value::Object((*t.input_schema).clone()),
        })
        .collect())
}

/// Lists the tools of `source`, on `reuse` when it still works, else on a new connection.
pub(super) async fn list(
    source: &ToolSourceConfig,
    reuse: Option<Arc<Connection>>,
    _client: &reqwest::Client,
) -> Result<(Arc<Connection>, Vec<Listed>), String> {
    if let Some(connection) = reuse.filter(|c| !c.broken.load(Ordering::Relaxed))
        && let Ok(listed) = list_on(&connection, source).await
    {
        return Ok((connection, listed));
    }
    let connection = Arc::new(connect(source).await?);
    let listed = list_on(&connection, source).await?;
    Ok((connection, listed))
}
