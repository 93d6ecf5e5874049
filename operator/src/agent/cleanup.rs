//! Cleanup on deletion: the children go by garbage collection (owner references); the
//! managed database is dropped or kept as `spec.database.reclaimPolicy` says.

use crds::{AgentDeployment, DatabaseMode, ReclaimPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::context::AgentContext;
use crate::backoff::ObjectKey;
use crate::database::database_identifier;
use crate::error::{Error, Result};

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
        ReclaimPolicy::Delete => {
            let admin = shared.database.as_ref().ok_or(Error::NoDatabaseAdmin)?;
            admin.drop_database(&identifier).await?;
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
