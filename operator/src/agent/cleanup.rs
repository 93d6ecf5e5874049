//! Cleanup on deletion: the children go by garbage collection (owner references); the
//! managed database is dropped or kept as `spec.database.reclaimPolicy` says.

use crds::{AgentDeployment, DatabaseMode, ReclaimPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::AgentContext;
use super::status::DatabaseState;
use super::write_status::write_status;
use crate::backoff::ObjectKey;
use crate::database::database_identifier;
use crate::error::{Error, Result};
use crate::names;

/// On deletion: drop the managed database and role with `reclaimPolicy: Delete`, keep
/// them (and say so) with `Retain`.
pub async fn cleanup_agent(agent: &AgentDeployment, ctx: &AgentContext) -> Result<Action> {
    let shared = &ctx.shared;
    if agent.spec.database.mode != DatabaseMode::Managed {
        return Ok(Action::await_change());
    }
    let name = agent.name_any();
    let namespace = agent.namespace().unwrap_or_default();
    let identifier = database_identifier(&namespace, &name);
    let reference = agent.object_ref(&());
    match agent.spec.database.reclaim_policy {
        ReclaimPolicy::Delete
            if agent
                .annotations()
                .get(names::SKIP_DATABASE_DROP)
                .is_some_and(|v| v == "true") =>
        {
            warn!(%identifier, "not dropping the managed database: skip annotation set");
            shared
                .event(
                    &reference,
                    EventType::Warning,
                    "DatabaseDropSkipped",
                    "DeleteDatabase",
                    format!(
                        "did not drop database and role {identifier} ({} is \"true\"); drop them by hand if they still exist: DROP DATABASE \"{identifier}\" WITH (FORCE); DROP ROLE \"{identifier}\";",
                        names::SKIP_DATABASE_DROP
                    ),
                )
                .await;
        }
        ReclaimPolicy::Delete => {
            let dropped = match shared.database.as_ref() {
                Some(admin) => admin.drop_database(&identifier).await,
                None => Err(Error::NoDatabaseAdmin),
            };
            if let Err(error) = dropped {
                // Deletion waits for the drop, but never in silence: the condition and
                // event say why and name both ways out.
                let message = format!(
                    "cannot drop database and role {identifier} (reclaimPolicy: Delete): {error}. \
                     The agent is kept until they are dropped: fix the admin connection, or drop \
                     them by hand (DROP DATABASE \"{identifier}\" WITH (FORCE); DROP ROLE \"{identifier}\";) \
                     and then `kubectl annotate agd {name} {}=true`",
                    names::SKIP_DATABASE_DROP
                );
                let state = DatabaseState::NotReady {
                    reason: "DatabaseDropFailed".to_owned(),
                    message: message.clone(),
                    permanent: false,
                };
                // The ServiceMonitor was not looked at: its condition stays as it was.
                if let Err(status_error) = write_status(agent, ctx, Some(state), None, None).await {
                    warn!(%status_error, "could not report the failed drop in the status");
                }
                shared
                    .event(
                        &reference,
                        EventType::Warning,
                        "DatabaseDropFailed",
                        "DeleteDatabase",
                        message,
                    )
                    .await;
                return Err(error);
            }
            info!(%identifier, "dropped the managed database and role");
            shared
                .event(
                    &reference,
                    EventType::Normal,
                    "DatabaseDropped",
                    "DeleteDatabase",
                    format!("dropped database and role {identifier} (reclaimPolicy: Delete)"),
                )
                .await;
        }
        ReclaimPolicy::Retain => {
            info!(%identifier, "keeping the managed database and role");
            shared
                .event(
                    &reference,
                    EventType::Normal,
                    "DatabaseRetained",
                    "RetainDatabase",
                    format!(
                        "kept database and role {identifier} (reclaimPolicy: Retain); drop them by hand when no longer needed"
                    ),
                )
                .await;
        }
    }
    ctx.database_checked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&ObjectKey::of(agent));
    Ok(Action::await_change())
}
