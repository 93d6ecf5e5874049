//! Managed databases on the operator's Postgres server: a role and a database of the
//! agent's own, named deterministically from namespace and name, with PUBLIC access
//! revoked so no other tenant's role can connect. Passwords never leave the
//! credentials Secret: they are not logged and statement logging is off.

use std::str::FromStr;

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{Error, Result};

/// Postgres identifiers are at most 63 bytes.
const MAX_IDENTIFIER: usize = 63;

/// What the reconcile needs of the managed-database server; [`DatabaseAdmin`] in the
/// binary, a recording fake in the reconcile unit tests.
#[async_trait::async_trait]
pub trait Provisioner: Send + Sync + std::fmt::Debug {
    /// Credentials of the role named `identifier` on this server.
    fn credentials(&self, identifier: &str, password: String) -> DatabaseCredentials;

    /// Makes sure role and database `identifier` exist with `password` (see
    /// [`DatabaseAdmin::ensure`]).
    async fn ensure(&self, identifier: &str, password: &str, password_is_new: bool) -> Result<()>;

    /// Drops database and role `identifier`; succeeds when they are already gone.
    async fn drop_database(&self, identifier: &str) -> Result<()>;
}

/// Credentials of a managed database, as written into its Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseCredentials {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database name.
    pub dbname: String,
    /// Role name.
    pub user: String,
    /// Role password (never logged).
    pub password: String,
}

impl std::fmt::Debug for DatabaseCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl DatabaseCredentials {
    /// `postgres://user:password@host:port/dbname`. Names and generated passwords are
    /// `[a-z0-9_]`/alphanumeric, so nothing needs escaping.
    pub fn uri(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgres://{}:{}@{}:{}/{}",
            self.user, self.password, host, self.port, self.dbname
        )
    }
}

/// A connection pool to the Postgres server with an admin role.
#[derive(Clone)]
pub struct DatabaseAdmin {
    pool: PgPool,
    host: String,
    port: u16,
}

impl std::fmt::Debug for DatabaseAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseAdmin")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl DatabaseAdmin {
    /// A lazily connecting pool for `admin_url`; nothing is sent until first use.
    pub fn connect_lazy(admin_url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(admin_url)
            .map_err(Error::database("parsing the admin DSN"))?
            // Statements carry passwords: never log them.
            .disable_statement_logging();
        let host = options.get_host().to_owned();
        let port = options.get_port();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self { pool, host, port })
    }

    /// Makes sure role and database `identifier` exist, the role owns the database, and
    /// PUBLIC may not connect. The password is set when the role is created, and reset
    /// only when `password_is_new` (its Secret did not exist yet), so re-running never
    /// changes a password in use.
    pub async fn ensure(
        &self,
        identifier: &str,
        password: &str,
        password_is_new: bool,
    ) -> Result<()> {
        let ident = quote_identifier(identifier);
        let literal = quote_literal(password);
        let role_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(identifier)
                .fetch_one(&self.pool)
                .await
                .map_err(Error::database("looking up the role"))?;
        if !role_exists {
            let create = format!(
                "CREATE ROLE {ident} LOGIN PASSWORD {literal} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            );
            match sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&self.pool)
                .await
            {
                Ok(_) => {}
                // Created concurrently: fall through to the password reset below.
                Err(e) if sqlstate(&e).as_deref() == Some("42710") => {
                    self.set_password(&ident, &literal).await?
                }
                Err(e) => return Err(Error::database("creating the role")(e)),
            }
        } else if password_is_new {
            self.set_password(&ident, &literal).await?;
        }

        let db_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(identifier)
                .fetch_one(&self.pool)
                .await
                .map_err(Error::database("looking up the database"))?;
        if !db_exists {
            let create = format!("CREATE DATABASE {ident} OWNER {ident}");
            match sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&self.pool)
                .await
            {
                Ok(_) => {}
                Err(e) if sqlstate(&e).as_deref() == Some("42P04") => {}
                Err(e) => return Err(Error::database("creating the database")(e)),
            }
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "REVOKE ALL ON DATABASE {ident} FROM PUBLIC"
        )))
        .execute(&self.pool)
        .await
        .map_err(Error::database("revoking PUBLIC access"))?;
        Ok(())
    }

    async fn set_password(&self, ident: &str, literal: &str) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER ROLE {ident} PASSWORD {literal}"
        )))
        .execute(&self.pool)
        .await
        .map_err(Error::database("setting the role's password"))?;
        Ok(())
    }

    /// Drops database and role `identifier` (disconnecting their sessions); succeeds
    /// when they are already gone.
    pub async fn drop_database(&self, identifier: &str) -> Result<()> {
        let ident = quote_identifier(identifier);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {ident} WITH (FORCE)"
        )))
        .execute(&self.pool)
        .await
        .map_err(Error::database("dropping the database"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {ident}")))
            .execute(&self.pool)
            .await
            .map_err(Error::database("dropping the role"))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Provisioner for DatabaseAdmin {
    fn credentials(&self, identifier: &str, password: String) -> DatabaseCredentials {
        DatabaseCredentials {
            host: self.host.clone(),
            port: self.port,
            dbname: identifier.to_owned(),
            user: identifier.to_owned(),
            password,
        }
    }

    async fn ensure(&self, identifier: &str, password: &str, password_is_new: bool) -> Result<()> {
        DatabaseAdmin::ensure(self, identifier, password, password_is_new).await
    }

    async fn drop_database(&self, identifier: &str) -> Result<()> {
        DatabaseAdmin::drop_database(self, identifier).await
    }
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .filter(|c| !c.is_empty())
}

/// The role and database name of an agent: `sb_<namespace>_<name>_<hash>`, lower-case
/// `[a-z0-9_]`, at most 63 bytes; the hash of the exact namespace and name keeps
/// truncated or sanitized names distinct.
pub fn database_identifier(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let sanitize = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut stem = format!("sb_{}_{}", sanitize(namespace), sanitize(name));
    stem.truncate(MAX_IDENTIFIER - hash.len() - 1);
    format!("{stem}_{hash}")
}

/// A new random password: 32 alphanumeric characters from the thread-local CSPRNG.
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// `"ident"` with embedded quotes doubled.
pub fn quote_identifier(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `'literal'` with embedded quotes doubled; backslashes are literal in standard strings.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_safe_bounded_and_distinct() {
        let id = database_identifier("tenant-a", "support");
        assert!(id.starts_with("sb_tenant_a_support_"), "{id}");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        let long = database_identifier(&"n".repeat(63), &"a".repeat(50));
        assert_eq!(long.len(), 63);
        // Sanitizing maps both to the same stem; the hash keeps them apart.
        assert_ne!(
            database_identifier("a-b", "c"),
            database_identifier("a", "b-c")
        );
        assert_eq!(database_identifier("x", "y"), database_identifier("x", "y"));
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn credentials_debug_redacts_the_password_and_uri_carries_it() {
        let creds = DatabaseCredentials {
            host: "127.0.0.1".to_owned(),
            port: 5432,
            dbname: "sb_db".to_owned(),
            user: "sb_db".to_owned(),
            password: "pw123".to_owned(),
        };
        assert!(!format!("{creds:?}").contains("pw123"));
        assert_eq!(creds.uri(), "postgres://sb_db:pw123@127.0.0.1:5432/sb_db");
    }

    #[test]
    fn passwords_are_long_and_differ() {
        let a = generate_password();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate_password());
    }
}
