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
    /// [`DatabaseAdmin::ensure`]); true when they existed before new credentials
    /// (an adopted database).
    async fn ensure(&self, identifier: &str, password: &str, password_is_new: bool)
    -> Result<bool>;

    /// Drops database and role `identifier`; succeeds when they are already gone.
    async fn drop_database(&self, identifier: &str) -> Result<()>;

    /// Makes the server usable; called before [`Provisioner::credentials`]. Fails when
    /// the admin connection is not known yet (its Secret is missing).
    async fn ready(&self) -> Result<()> {
        Ok(())
    }
}

/// The admin connection read from a Secret (key `uri`) when first needed and again
/// whenever it fails to load, so the operator starts without it, agents that need a
/// managed database say why they wait, and provisioning proceeds once it appears. A
/// changed `uri` replaces the connection.
pub struct AdminFromSecret {
    secrets: kube::Api<k8s_openapi::api::core::v1::Secret>,
    reference: String,
    name: String,
    current: std::sync::Mutex<Option<(String, DatabaseAdmin)>>,
}

impl std::fmt::Debug for AdminFromSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminFromSecret")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl AdminFromSecret {
    /// Reads `namespace/name` through `client` when needed.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            secrets: kube::Api::namespaced(client, namespace),
            reference: format!("{namespace}/{name}"),
            name: name.to_owned(),
            current: std::sync::Mutex::new(None),
        }
    }

    fn admin(&self) -> Option<DatabaseAdmin> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, admin)| admin.clone())
    }

    async fn loaded(&self) -> Result<DatabaseAdmin> {
        self.ready().await?;
        self.admin()
            .ok_or_else(|| Error::DatabaseAdminSecret(format!("{} is not loaded", self.reference)))
    }
}

#[async_trait::async_trait]
impl Provisioner for AdminFromSecret {
    fn credentials(&self, identifier: &str, password: String) -> DatabaseCredentials {
        match self.admin() {
            Some(admin) => Provisioner::credentials(&admin, identifier, password),
            None => DatabaseCredentials {
                host: String::new(),
                port: 0,
                dbname: identifier.to_owned(),
                user: identifier.to_owned(),
                password,
                params: String::new(),
            },
        }
    }

    async fn ready(&self) -> Result<()> {
        let secret = self
            .secrets
            .get_opt(&self.name)
            .await
            .map_err(|e| {
                Error::DatabaseAdminSecret(format!("{} cannot be read: {e}", self.reference))
            })?
            .ok_or_else(|| {
                Error::DatabaseAdminSecret(format!("{} does not exist", self.reference))
            })?;
        let uri = secret
            .data
            .as_ref()
            .and_then(|d| d.get("uri"))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                Error::DatabaseAdminSecret(format!("{} has no `uri` key", self.reference))
            })?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|(loaded, _)| *loaded == uri) {
            return Ok(());
        }
        let admin = DatabaseAdmin::connect_lazy(&uri).map_err(|_| {
            Error::DatabaseAdminSecret(format!(
                "{} holds a `uri` that is not a valid Postgres URL",
                self.reference
            ))
        })?;
        *current = Some((uri, admin));
        Ok(())
    }

    async fn ensure(
        &self,
        identifier: &str,
        password: &str,
        password_is_new: bool,
    ) -> Result<bool> {
        self.loaded()
            .await?
            .ensure(identifier, password, password_is_new)
            .await
    }

    async fn drop_database(&self, identifier: &str) -> Result<()> {
        self.loaded().await?.drop_database(identifier).await
    }
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
    /// Connection parameters of the admin DSN that tenants need too (`sslmode`,
    /// `sslrootcert`, ...), already percent-encoded, `k=v` joined by `&`; empty when none.
    pub params: String,
}

impl std::fmt::Debug for DatabaseCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("params", &self.params)
            .finish()
    }
}

impl DatabaseCredentials {
    /// `postgres://user:password@host:port/dbname[?params]`. Names and generated
    /// passwords are `[a-z0-9_]`/alphanumeric, so nothing needs escaping; the params
    /// come from the admin DSN as written there.
    pub fn uri(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut uri = format!(
            "postgres://{}:{}@{}:{}/{}",
            self.user, self.password, host, self.port, self.dbname
        );
        if !self.params.is_empty() {
            uri.push('?');
            uri.push_str(&self.params);
        }
        uri
    }
}

/// The query parameters of `admin_url` a tenant connection should carry too: every one
/// but those naming the admin's identity or database (`user`, `password`, `dbname`,
/// `host`, `hostaddr`, `port`, `options`), kept as written (still percent-encoded).
/// TLS settings such as `sslmode=verify-full&sslrootcert=/etc/ca.pem` survive, so a
/// tenant connects as securely as the operator does.
pub fn tenant_params(admin_url: &str) -> String {
    const DROPPED: [&str; 7] = [
        "user", "password", "dbname", "host", "hostaddr", "port", "options",
    ];
    let Some((_, query)) = admin_url.split_once('?') else {
        return String::new();
    };
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !DROPPED.contains(&key)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A connection pool to the Postgres server with an admin role.
#[derive(Clone)]
pub struct DatabaseAdmin {
    pool: PgPool,
    host: String,
    port: u16,
    params: String,
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
        // At most 8 statements at once: the bound on databases created in parallel
        // (CREATE DATABASE copies the template; a 2-core server gains little past
        // that). Reconciles beyond it wait for a connection, up to a minute, rather
        // than fail.
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(60))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            host,
            port,
            params: tenant_params(admin_url),
        })
    }

    /// Makes sure role and database `identifier` exist, the role owns the database, and
    /// PUBLIC may not connect. The password is set when the role is created, and reset
    /// only when `password_is_new` (its Secret did not exist yet), so re-running never
    /// changes a password in use. Returns true when new credentials met a database
    /// that already existed (one kept by `reclaimPolicy: Retain`): it is adopted.
    pub async fn ensure(
        &self,
        identifier: &str,
        password: &str,
        password_is_new: bool,
    ) -> Result<bool> {
        let ident = quote_identifier(identifier);
        let literal = quote_literal(password);
        // What exists, and whether the admin is a superuser, in one round trip.
        let (role_exists, db_exists, superuser): (bool, bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), \
               EXISTS (SELECT 1 FROM pg_database WHERE datname = $1), \
               (SELECT rolsuper FROM pg_roles WHERE rolname = CURRENT_USER)",
        )
        .bind(identifier)
        .fetch_one(&self.pool)
        .await
        .map_err(Error::database("looking up the role and database"))?;
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

        // A non-superuser admin (CREATEROLE and CREATEDB, as managed Postgres services
        // hand out) may only create a database owned by a role it can SET ROLE to, and
        // drop it later as a member of the owner: make the admin a member. Granting an
        // existing membership again is a no-op (a notice); a superuser needs none but
        // takes none amiss.
        if !superuser {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "GRANT {ident} TO CURRENT_USER"
            )))
            .execute(&self.pool)
            .await
            .map_err(Error::database("making the admin a member of the role"))?;
        }

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
        Ok(password_is_new && role_exists && db_exists)
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
            params: self.params.clone(),
        }
    }

    async fn ensure(
        &self,
        identifier: &str,
        password: &str,
        password_is_new: bool,
    ) -> Result<bool> {
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
            params: String::new(),
        };
        assert!(!format!("{creds:?}").contains("pw123"));
        assert_eq!(creds.uri(), "postgres://sb_db:pw123@127.0.0.1:5432/sb_db");
    }

    #[tokio::test]
    async fn tenant_urls_keep_the_admin_dsn_tls_parameters_and_nothing_of_its_identity() {
        let admin = "postgres://admin:s3cret@db.example:5432/postgres?sslmode=verify-full\
                     &sslrootcert=%2Fetc%2Fca.pem&user=other&password=x&dbname=postgres\
                     &application_name=op";
        assert_eq!(
            tenant_params(admin),
            "sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=op"
        );
        let admin = DatabaseAdmin::connect_lazy(
            "postgres://admin:s3cret@127.0.0.1:5432/postgres?sslmode=require&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        let uri = Provisioner::credentials(&admin, "sb_x", "pw".to_owned()).uri();
        assert_eq!(
            uri,
            "postgres://sb_x:pw@127.0.0.1:5432/sb_x?sslmode=require&sslrootcert=%2Fca.pem"
        );
        assert!(!uri.contains("s3cret"));
        assert_eq!(tenant_params("postgres://a@h/db"), "");
    }

    #[test]
    fn passwords_are_long_and_differ() {
        let a = generate_password();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate_password());
    }
}
