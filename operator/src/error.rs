//! Errors of a reconcile, each with a stable category used as a metric label and an
//! event reason, and the split between invalid specs (wait for a change) and transient
//! failures (retry with backoff).

use thiserror::Error;

/// Everything a reconcile can fail with.
#[derive(Debug, Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API request failed while {action}: {source}")]
    Kube {
        /// What the operator was doing.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// The API server refused a child the operator applied as invalid (422). The same
    /// object gets the same answer: it is tried again at the resync (an admission
    /// policy that refused it may change) or when the owner changes, not with backoff.
    /// Said as a failed request is, so its event reads the same.
    #[error("Kubernetes API request failed while applying {kind} {name}: {source}")]
    ChildRefused {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// The client error, with the API server's causes.
        #[source]
        source: kube::Error,
    },

    /// A child's name is taken by an object the agent does not control (made by hand,
    /// by another tool, or held by another owner): the operator never writes over it.
    /// Tried again at the resync or when the owner changes, as a refused child is.
    #[error("{kind} {name} already exists and is not this agent's ({holder}): not written over")]
    ChildConflict {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// Who holds the object instead: another controller, or none.
        holder: String,
    },

    /// The database server refused or failed a statement.
    #[error("database provisioning failed while {action}: {source}")]
    Database {
        /// What the operator was doing.
        action: String,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },

    /// Managed databases are requested but the operator has no admin DSN.
    #[error(
        "no database admin DSN is configured: start the operator with --database-admin-secret \
         or SWITCHBOARD_DATABASE_ADMIN_URL, or use spec.database.mode: External"
    )]
    NoDatabaseAdmin,

    /// The admin DSN comes from a Secret that does not exist (yet) or holds no usable
    /// `uri`; retried with backoff until it does.
    #[error(
        "the database admin Secret {0}: managed databases wait until it exists with a \
         postgres:// URL under `uri`"
    )]
    DatabaseAdminSecret(String),

    /// The spec cannot be acted on until the user changes it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// A Secret or ConfigMap the spec points to is missing or incomplete.
    #[error("{0}")]
    MissingDependency(String),

    /// Serializing a desired object failed (a bug).
    #[error("serializing {what}: {source}")]
    Serialize {
        /// The object.
        what: String,
        /// The serializer error.
        #[source]
        source: serde_json::Error,
    },

    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short, stable category for metrics and events.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } | Error::ChildRefused { .. } => "kube_api",
            Error::ChildConflict { .. } => "conflict",
            Error::Database { .. } => "database",
            Error::NoDatabaseAdmin => "config",
            Error::DatabaseAdminSecret(_) => "database_admin",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingDependency(_) => "missing_dependency",
            Error::Serialize { .. } => "internal",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "kube_api",
            },
        }
    }

    /// An event reason (PascalCase) for this failure.
    pub fn event_reason(&self) -> &'static str {
        match self.metric_label() {
            "kube_api" => "KubeApiError",
            "database" => "DatabaseError",
            "config" => "OperatorMisconfigured",
            "database_admin" => "NoDatabaseAdmin",
            "invalid_spec" => "InvalidSpec",
            "missing_dependency" => "MissingDependency",
            "conflict" => "ChildConflict",
            _ => "InternalError",
        }
    }

    /// Whether retrying without a change to the object is pointless.
    pub fn is_permanent(&self) -> bool {
        matches!(self.metric_label(), "invalid_spec" | "config")
    }

    /// Whether this is a child the operator could not write for a reason a retry with
    /// backoff will not cure ([`Error::ChildRefused`], [`Error::ChildConflict`]): said
    /// on `Ready` and tried again at the resync.
    pub fn is_refused_child(&self) -> bool {
        matches!(
            self,
            Error::ChildRefused { .. } | Error::ChildConflict { .. }
        )
    }

    /// For a child the API server refused, a message for the status: the child, and
    /// the fields the API server named with its reason for each
    /// (`spec.template.spec.containers[0].image (FieldValueInvalid)`), never the values
    /// (a refused value may be a secret); for a child whose name is taken, whose it is;
    /// `None` for any other error.
    pub fn refusal(&self) -> Option<String> {
        let (kind, name, source) = match self {
            Error::ChildRefused { kind, name, source } => (kind, name, source),
            Error::ChildConflict { kind, name, holder } => {
                return Some(format!(
                    "{kind} {name} already exists and is not this agent's ({holder}): the \
                     operator does not write over it. Rename the AgentDeployment, or delete \
                     or rename that {kind}; applied again when the spec changes, or at the \
                     resync"
                ));
            }
            _ => return None,
        };
        let fields: Vec<String> = match source {
            kube::Error::Api(status) => status
                .details
                .iter()
                .flat_map(|d| &d.causes)
                .filter(|c| !c.field.is_empty())
                .map(|c| match c.reason.as_str() {
                    "" => c.field.clone(),
                    reason => format!("{} ({reason})", c.field),
                })
                .collect(),
            _ => Vec::new(),
        };
        let at = match fields.as_slice() {
            [] => "without naming a field".to_owned(),
            fields => format!("at {}", fields.join(", ")),
        };
        Some(format!(
            "the API server refused {kind} {name} as invalid {at}: change what sets it; its \
             whole answer is in the warning event. Applied again when the spec changes, or \
             at the resync"
        ))
    }

    /// For [`Error::ChildConflict`], the kind and name of the object another holds.
    pub fn taken(&self) -> Option<(String, String)> {
        match self {
            Error::ChildConflict { kind, name, .. } => Some((kind.clone(), name.clone())),
            _ => None,
        }
    }

    /// Wraps a client error with what the operator was doing.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// Wraps a database error with what the operator was doing.
    pub fn database(action: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
        let action = action.into();
        move |source| Error::Database { action, source }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: serde_json::Value) -> Error {
        Error::ChildRefused {
            kind: "Deployment".to_owned(),
            name: "support".to_owned(),
            source: kube::Error::Api(Box::new(serde_json::from_value(status).unwrap())),
        }
    }

    #[test]
    fn a_refused_child_is_said_with_its_fields_and_never_their_values() {
        let error = refused(serde_json::json!({
            "code": 422, "reason": "Invalid",
            "message": "Deployment.apps \"support\" is invalid: ...: Invalid value: \"s3cr3t\"",
            "details": {"causes": [
                {"reason": "FieldValueInvalid", "message": "Invalid value: \"s3cr3t\"",
                 "field": "spec.template.spec.containers[0].env[2].value"},
                {"reason": "FieldValueRequired", "message": "Required value",
                 "field": "spec.template.spec.containers[0].image"},
                {"message": "no field"},
            ]},
        }));
        let said = error.refusal().unwrap();
        assert!(
            said.starts_with(
                "the API server refused Deployment support as invalid at \
                 spec.template.spec.containers[0].env[2].value (FieldValueInvalid), \
                 spec.template.spec.containers[0].image (FieldValueRequired):"
            ),
            "{said}"
        );
        assert!(!said.contains("s3cr3t"), "{said}");
        // The event says what it said before: a failed Kubernetes request.
        assert_eq!(error.event_reason(), "KubeApiError");
        assert!(!error.is_permanent());

        let bare = refused(serde_json::json!({"code": 422, "message": "invalid"}));
        assert!(bare.refusal().unwrap().contains("without naming a field"));
        assert_eq!(Error::InvalidSpec("x".to_owned()).refusal(), None);
    }
}
