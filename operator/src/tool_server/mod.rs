//! The ToolServer controller: connects to each server (MCP over Streamable HTTP,
//! with the headers read from their Secrets), lists its tools into the status and
//! sets Ready (or Ready False with the server's error, secrets scrubbed). It
//! re-lists every 5 minutes, sooner with backoff while the server fails, at once when
//! a header's Secret is created, changed or deleted (a watch of Secrets by metadata),
//! and writes the status only when something changed. A failure only a Secret can
//! fix (missing, refused, not a header value) waits for that Secret, not the backoff.

pub mod mcp;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use crds::ToolServer;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tracing::{info, instrument};

use self::status::Outcome;
use crate::backoff::ObjectKey;
use crate::context::Context;
use crate::controller::{apply_status, on_error, on_success};
use crate::error::{Error, Result};

/// Label of this controller in metrics.
const CONTROLLER: &str = "toolserver";

/// How often a server that answers is listed again.
pub const RELIST_EVERY: Duration = Duration::from_secs(300);

/// Listings at once (each may wait up to the server's timeout).
const CONCURRENCY: u16 = 4;

/// Runs the ToolServer controller until `shutdown` resolves; `tool_servers` comes
/// from the watch shared with the agent controller.
pub async fn run(
    shared: Arc<Context>,
    tool_servers: (
        Store<ToolServer>,
        impl Stream<Item = Result<ToolServer, watcher::Error>> + Send + 'static,
    ),
    secrets: impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (store, stream) = tool_servers;
    let config = ControllerConfig::default()
        .concurrency(CONCURRENCY)
        .debounce(Duration::from_millis(300));
    let servers = store.clone();
    Controller::for_stream(stream, store)
        .with_config(config)
        // A header's Secret changed (or came, or went): list its servers again.
        .watches_stream(secrets, move |secret| {
            let namespace = secret.namespace().unwrap_or_default();
            servers_reading_secret(&servers.state(), &namespace, &secret.name_any())
                .into_iter()
                .map(|server| ObjectRef::<ToolServer>::new(&server).within(&namespace))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, shared)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "tool server reconcile did not complete");
            }
        })
        .await;
}

/// One listing of `server`'s tools.
#[instrument(skip_all, fields(namespace = server.namespace().unwrap_or_default(), toolserver = server.name_any()))]
pub async fn reconcile(server: Arc<ToolServer>, shared: Arc<Context>) -> Result<Action> {
    let metrics = &shared.metrics;
    let _reconcile = metrics.reconcile_started(CONTROLLER);

    let timeout =
        Duration::from_secs(u64::try_from(server.spec.timeout_seconds.clamp(1, 600)).unwrap_or(30));
    let outcome = match read_headers(&server, &shared).await? {
        Err(message) => Outcome::Failed {
            reason: "SecretMissing".to_owned(),
            message,
        },
        Ok(headers) => match mcp::list_tools(&server.spec.url, &headers, timeout).await {
            Ok(tools) => Outcome::Listed(tools),
            Err(e) => Outcome::Failed {
                reason: e.reason().to_owned(),
                message: e.to_string(),
            },
        },
    };
    let current = server.status.clone().unwrap_or_default();
    let desired = status::desired_status(
        &current,
        server.metadata.generation,
        &outcome,
        Time(Timestamp::now()),
    );
    if status::status_differs(server.status.as_ref(), &desired) {
        match &outcome {
            Outcome::Listed(tools) => info!(tools = tools.len(), "listed the server's tools"),
            Outcome::Failed { reason, message } => {
                info!(%reason, %message, "the server's tools could not be listed")
            }
        }
        apply_status(&shared, &*server, &desired).await?;
    }
    let key = ObjectKey::of(&*server);
    Ok(match outcome {
        Outcome::Listed(_) => {
            on_success(&shared, &*server);
            Action::requeue(RELIST_EVERY)
        }
        // Only a Secret can fix these: its watch brings the next listing.
        Outcome::Failed { reason, .. } if WAITS_FOR_SECRET.contains(&reason.as_str()) => {
            Action::requeue(RELIST_EVERY)
        }
        Outcome::Failed { .. } => Action::requeue(shared.backoff.next(&key).min(RELIST_EVERY)),
    })
}

/// Failure reasons a header Secret causes: listed again when one of the server's
/// Secrets changes (or at the next regular re-list), not retried with backoff.
const WAITS_FOR_SECRET: [&str; 3] = ["SecretMissing", "Unauthorized", "InvalidHeader"];

/// The ToolServers of `namespace` (names) whose `spec.headers` read Secret `secret`.
pub fn servers_reading_secret(
    servers: &[Arc<ToolServer>],
    namespace: &str,
    secret: &str,
) -> Vec<String> {
    servers
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace))
        .filter(|s| s.spec.headers.iter().any(|h| h.value_from.name == secret))
        .map(|s| s.name_any())
        .collect()
}

/// The error policy of the controller (see [`on_error`]).
pub fn error_policy(server: Arc<ToolServer>, error: &Error, shared: Arc<Context>) -> Action {
    on_error(&shared, CONTROLLER, &*server, error)
}

/// The headers as (name, value), read from their Secrets; `Ok(Err(message))` when
/// one is missing (the message names the Secret and key, never a value).
async fn read_headers(
    server: &ToolServer,
    shared: &Context,
) -> Result<std::result::Result<Vec<(String, String)>, String>> {
    let api: Api<Secret> = Api::namespaced(
        shared.client.clone(),
        &server.namespace().unwrap_or_default(),
    );
    let mut headers = Vec::new();
    for (i, header) in server.spec.headers.iter().enumerate() {
        let r = &header.value_from;
        let secret = api.get_opt(&r.name).await.map_err(Error::kube(format!(
            "reading Secret {} (a ToolServer header)",
            r.name
        )))?;
        let Some(secret) = secret else {
            return Ok(Err(format!(
                "spec.headers[{i}].valueFrom: Secret {} not found; create it with key {}",
                r.name, r.key
            )));
        };
        let value = secret.data.as_ref().and_then(|d| d.get(&r.key));
        let Some(value) = value else {
            return Ok(Err(format!(
                "spec.headers[{i}].valueFrom: Secret {} has no key {}",
                r.name, r.key
            )));
        };
        let Ok(value) = String::from_utf8(value.0.clone()) else {
            return Ok(Err(format!(
                "spec.headers[{i}].valueFrom: key {} of Secret {} is not text",
                r.key, r.name
            )));
        };
        headers.push((
            header.name.clone(),
            value.trim_end_matches(['\r', '\n']).to_owned(),
        ));
    }
    Ok(Ok(headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(namespace: &str, name: &str, secrets: &[&str]) -> Arc<ToolServer> {
        let headers: Vec<_> = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"name": format!("X-H{i}"), "valueFrom": {"name": s, "key": "k"}}))
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "switchboard.dev/v1alpha1", "kind": "ToolServer",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"url": "http://mcp:8000/mcp", "headers": headers},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_secret_maps_to_the_servers_of_its_namespace_that_read_it() {
        let servers = [
            server("a", "one", &["token"]),
            server("a", "two", &["other", "token"]),
            server("a", "three", &["other"]),
            server("b", "four", &["token"]),
        ];
        assert_eq!(
            servers_reading_secret(&servers, "a", "token"),
            ["one", "two"]
        );
        assert_eq!(servers_reading_secret(&servers, "b", "token"), ["four"]);
        assert!(servers_reading_secret(&servers, "a", "unrelated").is_empty());
    }
}
