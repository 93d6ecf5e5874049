//! Turns the rendered configuration file plus the environment (which carries the
//! secrets the file only names) into the settings the runtime starts with.

use std::path::Path;

use crds::runtime_config::RuntimeConfig;

/// Why the runtime cannot start with this configuration.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML for [`RuntimeConfig`].
    #[error("config file {path} is not valid: {source}")]
    Parse {
        /// The path given.
        path: String,
        /// The YAML error.
        #[source]
        source: serde_yaml::Error,
    },
    /// Values that cannot work.
    #[error("config is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A variable the file names is missing.
    #[error("{field} names the environment variable {var}, which is not set")]
    MissingEnv {
        /// The config field.
        field: &'static str,
        /// The variable name.
        var: String,
    },
}

/// Where conversations live.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A Postgres URL (a secret: never logged).
    Postgres(String),
    /// A SQLite file path, or `:memory:`.
    Sqlite(String),
}

impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres(_) => f.write_str("Postgres(<redacted>)"),
            Self::Sqlite(path) => write!(f, "Sqlite({path:?})"),
        }
    }
}

/// The configuration with its secrets resolved.
#[derive(Clone)]
pub struct Settings {
    /// The file as parsed.
    pub config: RuntimeConfig,
    /// The client API key from the environment; `None` (and no keys directory)
    /// runs open.
    pub api_key: Option<String>,
    /// The admin key from the environment.
    pub admin_key: Option<String>,
    /// The database.
    pub database: DatabaseTarget,
    /// Upstream API keys, one per model in chain order.
    pub upstream_keys: Vec<Option<String>>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Reads and parses the config file.
pub fn read_config(path: &Path) -> Result<RuntimeConfig, SettingsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: shown.clone(),
        source,
    })?;
    RuntimeConfig::from_yaml(&text).map_err(|source| SettingsError::Parse {
        path: shown,
        source,
    })
}

impl Settings {
    /// Resolves secrets from `env` (a lookup such as `std::env::var`).
    pub fn resolve(
        config: RuntimeConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(SettingsError::Invalid(problems));
        }
        let non_empty = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        let api_key = non_empty(&config.auth.api_key_env);
        let admin_key = non_empty(&config.auth.admin_key_env);
        let database = match &config.database.url_env {
            Some(var) => DatabaseTarget::Postgres(non_empty(var).ok_or_else(|| {
                SettingsError::MissingEnv {
                    field: "database.urlEnv",
                    var: var.clone(),
                }
            })?),
            None => DatabaseTarget::Sqlite(
                config
                    .database
                    .sqlite_path
                    .clone()
                    .unwrap_or_else(|| "switchboard.db".to_owned()),
            ),
        };
        let upstream_keys = config
            .model_chain()
            .map(|m| m.api_key_env.as_deref().and_then(non_empty))
            .collect();
        Ok(Self {
            config,
            api_key,
            admin_key,
            database,
            upstream_keys,
        })
    }
}

/// An environment lookup over fixed pairs, for unit tests.
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_env as env;

    #[test]
    fn secrets_come_from_the_named_variables() {
        let config = RuntimeConfig::from_yaml(
            "model: {name: m, apiKeyEnv: UP}\ndatabase: {urlEnv: DB}\nauth: {apiKeyEnv: KEY}\n",
        )
        .expect("parses");
        let settings = Settings::resolve(
            config,
            env(&[("UP", "sk-up"), ("DB", "postgres://x"), ("KEY", "k")]),
        )
        .expect("resolves");
        assert_eq!(settings.api_key.as_deref(), Some("k"));
        assert_eq!(
            settings.database,
            DatabaseTarget::Postgres("postgres://x".into())
        );
        assert_eq!(settings.upstream_keys, vec![Some("sk-up".to_owned())]);
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("sk-up") && !shown.contains("postgres://x"),
            "{shown}"
        );
    }

    #[test]
    fn a_named_but_unset_database_variable_is_an_error() {
        let config = RuntimeConfig::from_yaml("database: {urlEnv: DB}\n").expect("parses");
        let err = Settings::resolve(config, env(&[])).expect_err("must fail");
        assert!(err.to_string().contains("DB"), "{err}");
    }

    #[test]
    fn standalone_defaults_to_sqlite_and_open_auth() {
        let settings = Settings::resolve(RuntimeConfig::default(), env(&[])).expect("resolves");
        assert_eq!(
            settings.database,
            DatabaseTarget::Sqlite("switchboard.db".into())
        );
        assert!(settings.api_key.is_none());
    }
}
