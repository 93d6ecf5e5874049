//! The database step: provision the agent's own database (Managed) or check the
//! tenant's Secret (External), and say where the runtime finds its URL.

use std::time::{Duration, Instant};

use crds::{AgentDeployment, DatabaseMode};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::build::SecretKey;
use super::build::database_secret;
use super::context::AgentContext;
use super::status::DatabaseState;
use crate::apply::{create_once, foreign_holder};
use crate::backoff::ObjectKey;
use crate::database::{database_identifier, generate_password};
use crate::error::{Error, Result};
use crate::names;

/// How long a successful database check is trusted before it is repeated.
const DATABASE_RECHECK: Duration = Duration::from_secs(600);

/// Provisions (Managed) or checks (External) the database. Returns its state for the
/// status, where the runtime finds its URL, and the error to retry with, if any.
pub async fn ensure_database(
    agent: &AgentDeployment,
    ctx: &AgentContext,
) -> (DatabaseState, SecretKey, Option<Error>) {
    let name = agent.name_any();
    let namespace = agent.namespace().unwrap_or_default();
    let not_ready = |reason: &str, error: Error| {
        (
            DatabaseState::NotReady {
                reason: reason.to_owned(),
                message: error.to_string(),
                permanent: error.is_permanent(),
            },
            error,
        )
    };
    match agent.spec.database.mode {
        DatabaseMode::External => {
            let Some(reference) = &agent.spec.database.external_secret_ref else {
                let (s, e) = not_ready(
                    "InvalidSpec",
                    Error::InvalidSpec("spec.database.externalSecretRef is required".to_owned()),
                );
                return (
                    s,
                    SecretKey {
                        name: String::new(),
                        key: String::new(),
                    },
                    Some(e),
                );
            };
            let url = SecretKey {
                name: reference.name.clone(),
                key: names::DATABASE_URI_KEY.to_owned(),
            };
            let ready = || DatabaseState::Ready {
                secret: reference.name.clone(),
                generated: false,
                adopted: false,
            };
            // Read once per version of the Secret: the metadata watch says when it
            // changed (and requeues the agents whose pods read it).
            let versions = &ctx.shared.secret_versions;
            if versions.holds(&namespace, &reference.name, names::DATABASE_URI_KEY) {
                return (ready(), url, None);
            }
            let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), &namespace);
            match api.get_opt(&reference.name).await {
                Ok(Some(secret)) => {
                    let has_uri = secret.data.as_ref().is_some_and(|d| {
                        d.get(names::DATABASE_URI_KEY)
                            .is_some_and(|v| !v.0.is_empty())
                    });
                    if has_uri {
                        if let Some(version) = &secret.metadata.resource_version {
                            versions.remember_held(
                                &namespace,
                                &reference.name,
                                names::DATABASE_URI_KEY,
                                version,
                            );
                        }
                        (ready(), url, None)
                    } else {
                        let (s, e) = not_ready(
                            "ExternalSecretInvalid",
                            Error::MissingDependency(format!(
                                "Secret {} has no `uri` key; add a postgres:// URL under `uri`",
                                reference.name
                            )),
                        );
                        (s, url, Some(e))
                    }
                }
                Ok(None) => {
                    let (s, e) = not_ready(
                        "ExternalSecretNotFound",
                        Error::MissingDependency(format!(
                            "Secret {} named by spec.database.externalSecretRef does not exist; create it",
                            reference.name
                        )),
                    );
                    (s, url, Some(e))
                }
                Err(e) => {
                    let (s, e) = not_ready(
                        "ExternalSecretUnreadable",
                        Error::kube("reading the external database Secret")(e),
                    );
                    (s, url, Some(e))
                }
            }
        }
        DatabaseMode::Managed => {
            let secret_name = names::database_secret(&name);
            let url = SecretKey {
                name: secret_name.clone(),
                key: names::DATABASE_URI_KEY.to_owned(),
            };
            match ensure_managed_database(agent, ctx).await {
                Ok(adopted) => (
                    DatabaseState::Ready {
                        secret: secret_name,
                        generated: true,
                        adopted,
                    },
                    url,
                    None,
                ),
                Err(e) => {
                    let reason = match &e {
                        Error::NoDatabaseAdmin | Error::DatabaseAdminSecret(_) => "NoDatabaseAdmin",
                        Error::Database { .. } => "DatabaseUnavailable",
                        Error::ChildConflict { .. } => "ChildConflict",
                        _ => "ProvisioningFailed",
                    };
                    let (s, e) = not_ready(reason, e);
                    (s, url, Some(e))
                }
            }
        }
    }
}

/// Returns true when an existing database was adopted by this run.
async fn ensure_managed_database(agent: &AgentDeployment, ctx: &AgentContext) -> Result<bool> {
    let admin = ctx.shared.database.as_ref().ok_or(Error::NoDatabaseAdmin)?;
    admin.ready().await?;
    let name = agent.name_any();
    let namespace = agent.namespace().unwrap_or_default();
    let key = ObjectKey::of(agent);
    let secret_name = names::database_secret(&name);
    let secret_cached = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&secret_name).within(&namespace))
        .is_some();
    let recently_checked = ctx
        .database_checked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .is_some_and(|at| at.elapsed() < DATABASE_RECHECK);
    if secret_cached && recently_checked {
        return Ok(false);
    }

    let identifier = database_identifier(&namespace, &name);
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), &namespace);
    // Only the agent's own Secret is read: one of that name made by someone else would
    // hand the runtime its `uri` (and this role its password).
    let ours = super::build::metadata(agent, &secret_name);
    let read_password = |secret: Option<Secret>| -> Result<Option<String>> {
        let Some(secret) = secret else {
            return Ok(None);
        };
        if let Some(holder) = foreign_holder(&ours, &secret.metadata) {
            return Err(Error::ChildConflict {
                kind: "Secret".to_owned(),
                name: secret_name.clone(),
                holder,
            });
        }
        let password = secret
            .data
            .as_ref()
            .and_then(|d| d.get("password"))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|p| !p.is_empty());
        password.map(Some).ok_or_else(|| {
            Error::MissingDependency(format!(
                "Secret {secret_name} exists but has no password; delete it and the operator resets the password"
            ))
        })
    };
    let existing = read_password(
        api.get_opt(&secret_name)
            .await
            .map_err(Error::kube("reading the database Secret"))?,
    )?;
    let (password, is_new) = match existing {
        Some(p) => (p, false),
        None => {
            // Write the Secret first: if the operator dies before the role exists, the
            // next run finds the password and creates the role with it.
            let password = generate_password();
            let secret =
                database_secret::build(agent, &admin.credentials(&identifier, password.clone()));
            if create_once(&ctx.shared, &api, &secret).await? {
                (password, true)
            } else {
                let raced = api
                    .get_opt(&secret_name)
                    .await
                    .map_err(Error::kube("reading the database Secret"))?;
                (read_password(raced)?.unwrap_or(password), false)
            }
        }
    };
    let adopted = admin.ensure(&identifier, &password, is_new).await?;
    if adopted {
        ctx.shared
            .event(
                &agent.object_ref(&()),
                EventType::Warning,
                "DatabaseAdopted",
                "ProvisionDatabase",
                format!(
                    "database and role {identifier} already existed (kept by reclaimPolicy: Retain from a deleted agent of this name): adopted with their data and history, new password in Secret {secret_name}"
                ),
            )
            .await;
    } else if is_new {
        ctx.shared
            .event(
                &agent.object_ref(&()),
                EventType::Normal,
                "DatabaseProvisioned",
                "ProvisionDatabase",
                format!(
                    "database and role {identifier} ready; credentials in Secret {secret_name}"
                ),
            )
            .await;
    }
    ctx.database_checked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, Instant::now());
    Ok(adopted)
}
