//! A fresh Postgres database per test on the harness's server, dropped
//! afterwards; and a throwaway server of a test's own ([`ThrowawayPostgres`])
//! for tests that crash and restart Postgres.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The harness's superuser DSN, or a panic saying how to get one.
pub fn admin_url() -> String {
    std::env::var("SWITCHBOARD_DATABASE_ADMIN_URL").unwrap_or_else(|_| {
        panic!(
            "SWITCHBOARD_DATABASE_ADMIN_URL is not set. Tests that need Postgres run against \
             the harness's server: run `make test`, or `make cluster-up` and \
             `eval \"$(make -s cluster-env)\"` first."
        )
    })
}

/// Replaces the database name (the URL path) of a Postgres URL.
pub fn with_database(url: &str, dbname: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{dbname}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database that is dropped (with its connections) on drop.
pub struct TestDatabase {
    name: String,
    url: String,
    admin: String,
}

impl TestDatabase {
    /// Creates `sbtest_<random>` on the harness server.
    pub async fn create() -> TestDatabase {
        Self::create_on(&admin_url()).await
    }

    /// Creates `sbtest_<random>` on the server of superuser URL `admin`.
    pub async fn create_on(admin: &str) -> TestDatabase {
        let admin = admin.to_owned();
        let name = format!("sbtest_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("connecting to the harness Postgres: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        let url = with_database(&admin, &name);
        TestDatabase { name, url, admin }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A superuser URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        run_admin_sql(
            self.admin.clone(),
            vec![format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )],
        );
    }
}

/// A Postgres server of its own (`hack/postgres.sh` with a private state
/// directory), committing durably (`synchronous_commit=on`), that a test may
/// crash and restart; stopped and deleted on drop.
pub struct ThrowawayPostgres {
    state: std::path::PathBuf,
    admin: String,
}

impl ThrowawayPostgres {
    fn script(state: &std::path::Path, command: &str) -> std::process::Output {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/postgres.sh");
        std::process::Command::new("bash")
            .arg(&script)
            .arg(command)
            .env("SWITCHBOARD_STATE", state)
            .env("SWITCHBOARD_PG_SYNCHRONOUS_COMMIT", "on")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()))
    }

    fn run(&self, command: &str) -> String {
        let out = Self::script(&self.state, command);
        assert!(
            out.status.success(),
            "hack/postgres.sh {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Initialises and starts a server on a free port (blocking; ~2 s).
    pub fn start() -> Self {
        let state =
            std::env::temp_dir().join(format!("sbtest-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&state).expect("state dir");
        let mut server = Self {
            state,
            admin: String::new(),
        };
        server.run("up");
        server.admin = server.run("url");
        server
    }

    /// The superuser URL.
    pub fn admin_url(&self) -> &str {
        &self.admin
    }

    /// Crashes the server (immediate shutdown) and starts it again on the same
    /// data and port, after staying down for `down` (blocking).
    pub fn crash_and_restart(&self, down: std::time::Duration) {
        let out = std::process::Command::new("bash")
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/postgres.sh"))
            .arg("restart")
            .env("SWITCHBOARD_STATE", &self.state)
            .env(
                "SWITCHBOARD_PG_DOWN_SECONDS",
                format!("{:.1}", down.as_secs_f64()),
            )
            .output()
            .expect("hack/postgres.sh restart");
        assert!(
            out.status.success(),
            "hack/postgres.sh restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = Self::script(&self.state, "down");
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// A login role that is not a superuser but holds CREATEROLE and CREATEDB, as managed
/// Postgres services hand out to their admin user; dropped (best effort) on drop.
pub struct LimitedAdmin {
    role: String,
    url: String,
    admin: String,
}

impl LimitedAdmin {
    /// Creates `sbtest_admin_<random>` on the harness server.
    pub async fn create() -> LimitedAdmin {
        let admin = admin_url();
        let role = format!("sbtest_admin_{}", uuid::Uuid::new_v4().simple());
        let password = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("connecting to the harness Postgres: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' NOSUPERUSER CREATEROLE CREATEDB"
        )))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating role {role}: {e}"));
        let (scheme, rest) = admin.split_once("://").expect("a URL with a scheme");
        let host_part = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let url = with_database(
            &format!("{scheme}://{role}:{password}@{host_part}"),
            "postgres",
        );
        LimitedAdmin { role, url, admin }
    }

    /// Its connection URL (database `postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its role name.
    pub fn role(&self) -> &str {
        &self.role
    }
}

impl Drop for LimitedAdmin {
    fn drop(&mut self) {
        run_admin_sql(
            self.admin.clone(),
            vec![
                format!("DROP OWNED BY \"{}\"", self.role),
                format!("DROP ROLE IF EXISTS \"{}\"", self.role),
            ],
        );
    }
}

/// Runs `statements`, in order, on the harness Postgres as its superuser, from a `Drop`: on a thread of
/// its own with a runtime of its own (a drop may run inside or outside a Tokio
/// runtime), best effort (a failed cleanup must not turn a passing test into a panic).
fn run_admin_sql(admin: String, statements: Vec<String>) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut conn = PgConnection::connect(&admin).await?;
            // One statement per query: a prepared statement holds only one command.
            for sql in statements {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        })
        .map_err(|e| std::io::Error::other(e.to_string()))
    })
    .join();
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "x"),
            "postgres://u:p@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database(
                "postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable",
                "x"
            ),
            "postgres://u:p@127.0.0.1:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
