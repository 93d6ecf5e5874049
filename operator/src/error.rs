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
            Error::Kube { .. } => "kube_api",
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
            _ => "InternalError",
        }
    }

    /// Whether retrying without a change to the object is pointless.
    pub fn is_permanent(&self) -> bool {
        matches!(self.metric_label(), "invalid_spec" | "config")
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
