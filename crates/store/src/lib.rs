//! Storage for campaignd: every durable fact lives here, on SQLite (embedded default, one
//! daemon per file) or PostgreSQL (production; several replicas share work through it).
//!
//! Architecture invariants:
//! - Only this crate writes SQL for campaign state. Callers get typed rows and typed
//!   transitions; every transition names the state it expects, so a stale worker (lost lease,
//!   second replica) changes nothing.
//! - Instants are `i64` Unix milliseconds, UTC ([`Millis`]).
//! - No network I/O happens while a transaction of this crate is open.
//! - This crate knows nothing of channels, HTTP or workflow files.

use std::path::PathBuf;
use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, Value,
};
use sea_orm_migration::MigratorTrait;

pub mod alerts;
pub mod attributes;
pub mod audit;
pub mod auth;
pub mod batches;
pub mod calls;
pub mod contacts;
pub mod derived;
pub mod events;
pub mod history;
pub mod holdout;
pub mod inbound;
pub mod mail;
mod nodelay;
pub mod planning;
pub mod rate;
pub mod runs;
pub mod sent_keys;
#[cfg(feature = "test-util")]
pub mod snapshot;
pub mod story;
pub mod subscribers;
pub mod survey;
pub mod tasks;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod triggers;

pub use sea_orm::{DatabaseTransaction, TransactionTrait};

/// Unix milliseconds, UTC.
pub type Millis = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error(
        "another campaignd daemon is already using {path}: SQLite allows one daemon per database file (stop the other one, or use PostgreSQL to run several replicas)"
    )]
    Locked { path: String },
    #[error("cannot open lock file {path}: {source}")]
    LockFile {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "unsupported database URL `{0}`: expected sqlite://PATH, sqlite::memory: or postgres://..."
    )]
    BadUrl(String),
    #[error("{0}")]
    Invalid(String),
    /// The attribute catalogue and the database's columns disagree.
    #[error("{0}")]
    Catalogue(String),
    /// A fenced write found its singleton lease held by another worker (or gone): this
    /// worker stalled past its lease and was replaced, so it wrote nothing.
    #[error("lease `{name}` is no longer held by `{holder}`; nothing was written")]
    LeaseLost { name: String, holder: String },
}

impl StoreError {
    /// The database cannot be reached now (down, restarting, its pool exhausted): nothing
    /// about the request was wrong, and a caller outside may retry it later.
    pub fn is_unavailable(&self) -> bool {
        use sea_orm::RuntimeErr;
        use sea_orm::error::SqlxError;
        match self {
            StoreError::Db(DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) => true,
            StoreError::Db(
                DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)),
            ) => matches!(
                e.as_ref(),
                SqlxError::Io(_)
                    | SqlxError::PoolTimedOut
                    | SqlxError::PoolClosed
                    | SqlxError::WorkerCrashed
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The database campaignd runs on.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Shared: the API clones the store with its per-request state.
    sqlite_path: Option<std::sync::Arc<PathBuf>>,
    /// The attribute catalogue subscriber rows are read with (see [`attributes`]).
    catalogue: std::sync::Arc<std::sync::RwLock<std::sync::Arc<catalogue::Catalogue>>>,
    /// Set on a handle from [`Store::fenced`]: its fenced writes renew this lease first.
    fence: Option<std::sync::Arc<Fence>>,
    /// Contacts this process saw settled `sent` (see [`sent_keys`]): shared by every clone,
    /// so the API's callbacks see what the dispatcher settled.
    sent_keys: std::sync::Arc<sent_keys::SentKeys>,
}

/// A singleton lease (`singleton_lease` row) that guards writes: every fenced write's
/// transaction first renews the lease for its holder and aborts with
/// [`StoreError::LeaseLost`] when the holder no longer has it. A worker that stalled past
/// its lease while another took over therefore writes nothing: the takeover and the renewal
/// update the same row, so they serialize, and whichever comes second sees the other.
pub struct Fence {
    /// The lease's name, e.g. `attribution`.
    pub name: String,
    /// Who must hold it (the worker id).
    pub holder: String,
    /// How far past `now()` each renewal extends the lease, in the caller's clock.
    pub lease_for: Millis,
    /// The caller's clock (the engine's clock may be scaled or manual in tests and the demo;
    /// the lease is kept in that clock, as `try_singleton_lease` is called with it).
    pub now: std::sync::Arc<dyn Fn() -> Millis + Send + Sync>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("lease_for", &self.lease_for)
            .finish_non_exhaustive()
    }
}

/// Holds the exclusive daemon lock on a SQLite file until dropped.
#[derive(Debug)]
pub struct DaemonLock {
    _file: Option<std::fs::File>,
}

/// Prepared statements kept per SQLite connection (sqlx's default is 100).
pub const SQLITE_STATEMENT_CACHE: usize = 512;

/// How long opening one database connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a pooled connection before its call fails (and is retried
/// by its loop, or answered 5xx).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);
/// PostgreSQL's `statement_timeout` for every session: longer than any statement campaignd
/// runs on a large base (a million-row import's chunks, the planner's set statements), short
/// enough that a statement stuck behind a lock frees its connection.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// The `application_name` of the PostgreSQL sessions of worker `worker`: `campaignd/worker`,
/// cut to the 63 bytes PostgreSQL keeps (at a character boundary).
pub fn application_name(worker: &str) -> String {
    let mut name = format!("campaignd/{worker}");
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

impl Store {
    /// Connects to `url`. SQLite files are created when missing and put in WAL mode.
    /// For PostgreSQL, `schema` (when given) becomes the search path, which lets tests and
    /// tenants share one database without seeing each other.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Store> {
        Store::connect_named(url, schema, "campaignd".into()).await
    }

    /// [`Store::connect`], naming PostgreSQL sessions [`application_name`]`(worker)` unless
    /// the URL names them: `pg_stat_activity` then says which replica holds a session (a
    /// lock, a long statement), and a test can wait until a killed replica's sessions end.
    pub async fn connect_as(url: &str, schema: Option<&str>, worker: &str) -> Result<Store> {
        Store::connect_named(url, schema, application_name(worker)).await
    }

    async fn connect_named(url: &str, schema: Option<&str>, app_name: String) -> Result<Store> {
        let mut opts = ConnectOptions::new(url.to_owned());
        // Bounded waits: a request or loop that cannot get a connection, or whose statement
        // hangs (a lock held by a stuck session), fails and is retried instead of piling up.
        opts.sqlx_logging(false)
            .connect_timeout(CONNECT_TIMEOUT)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        let sqlite_path = if url.starts_with("sqlite:") {
            let path = sqlite_file(url);
            // Several connections in WAL mode let readers (API, reports) run beside the one
            // writer; busy_timeout makes writers queue instead of failing.
            opts.max_connections(4)
                .min_connections(1)
                .map_sqlx_sqlite_opts(|o| {
                    o.create_if_missing(true)
                        .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(30))
                        // The hot statements carry lists as long as their group (callbacks,
                        // answers, reports): one text per length, so sqlx's default of 100
                        // prepared statements per connection was re-preparing them all the
                        // time (6% of campaignd's CPU in `sqlite3Prepare`, bench-dispatch
                        // --gateway kannel, session 17).
                        .statement_cache_capacity(SQLITE_STATEMENT_CACHE)
                });
            path
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // The search path is set here rather than by `set_schema_search_path`: sea-orm
            // sets it in sqlx's `after_connect`, which this hook would replace.
            let search_path =
                schema.map(|s| format!("SET search_path = \"{}\"", s.replace('"', "")));
            opts.max_connections(16)
                .min_connections(1)
                .map_sqlx_postgres_opts(move |o| {
                    let o = if o.get_application_name().is_none() {
                        o.application_name(&app_name)
                    } else {
                        o
                    };
                    o.options([(
                        "statement_timeout",
                        format!("{}", STATEMENT_TIMEOUT.as_millis()),
                    )])
                })
                .map_sqlx_postgres_pool_opts(move |p| {
                    let search_path = search_path.clone();
                    p.after_connect(move |conn, _| {
                        let search_path = search_path.clone();
                        Box::pin(async move {
                            if let Some(sql) = search_path {
                                sea_orm::sqlx::Executor::execute(
                                    &mut *conn,
                                    sea_orm::sqlx::AssertSqlSafe(sql),
                                )
                                .await?;
                            }
                            nodelay::set(conn).await?;
                            Ok(())
                        })
                    })
                });
            None
        } else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        let db = Database::connect(opts).await?;
        Ok(Store {
            db,
            sqlite_path: sqlite_path.map(std::sync::Arc::new),
            catalogue: std::sync::Arc::new(std::sync::RwLock::new(catalogue::shipped())),
            fence: None,
            sent_keys: std::sync::Arc::default(),
        })
    }

    /// A handle on the same database whose fenced writes (the ones attribution makes:
    /// `record_delivery`, `record_submission`, `record_response`, `set_opt_out`, `mark_inbound_processed`,
    /// `mark_inbound_deferred`, `refresh_report`) first renew `fence` in their own
    /// transaction, and write nothing but fail with [`StoreError::LeaseLost`] once another
    /// worker holds it. Other writes are unchanged.
    pub fn fenced(&self, fence: Fence) -> Store {
        Store {
            fence: Some(std::sync::Arc::new(fence)),
            ..self.clone()
        }
    }

    /// Renews this handle's fence inside `c` (the write's transaction), if it has one.
    pub(crate) async fn check_fence<C: ConnectionTrait>(&self, c: &C) -> Result<()> {
        let Some(f) = &self.fence else {
            return Ok(());
        };
        let until = (f.now)() + f.lease_for;
        let n = exec(
            c,
            "UPDATE singleton_lease SET until = ? WHERE name = ? AND holder = ?",
            [
                until.into(),
                f.name.as_str().into(),
                f.holder.as_str().into(),
            ],
        )
        .await?
        .rows_affected();
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost {
                name: f.name.clone(),
                holder: f.holder.clone(),
            })
        }
    }

    /// Applies all pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        migrations::Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// Migrations of this build not recorded as applied. Migrations the database has and this
    /// build does not know are fine: they are additive, and during a rolling update the old
    /// replicas keep serving on the new schema. Reads only (no `CREATE TABLE`, unlike
    /// sea-orm-migration's status functions).
    pub async fn pending_migrations(&self) -> Result<Vec<String>> {
        let rows = self
            .db
            .query_all_raw(stmt(&self.db, "SELECT version FROM seaql_migrations", []))
            .await?;
        let applied: std::collections::HashSet<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<String>("", "version").ok())
            .collect();
        Ok(migrations::Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .filter(|n| !applied.contains(n))
            .collect())
    }

    /// Takes the one-daemon-per-file lock for SQLite; a no-op on PostgreSQL, where replicas
    /// coordinate through row locks and leases instead.
    pub fn lock_daemon(&self) -> Result<DaemonLock> {
        let Some(path) = &self.sqlite_path else {
            return Ok(DaemonLock { _file: None });
        };
        let lock_path = format!("{}.lock", path.display());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::LockFile {
                path: lock_path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DaemonLock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
                path: path.display().to_string(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(StoreError::LockFile {
                path: lock_path,
                source,
            }),
        }
    }

    /// The raw connection: for this crate only. Other crates reach the database through the
    /// store's typed functions; their tests through `testing::RawDb` (feature `test-util`).
    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The keys of contacts this process saw settled `sent` ([`sent_keys`]).
    pub fn sent_keys(&self) -> &sent_keys::SentKeys {
        &self.sent_keys
    }

    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    /// The database's clock, so that replicas on different hosts agree on what is due.
    pub async fn db_now(&self) -> Result<Millis> {
        let sql = match self.db.get_database_backend() {
            DbBackend::Postgres => {
                "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT AS now"
            }
            _ => "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) AS now",
        };
        let row = self
            .db
            .query_one_raw(Statement::from_string(self.db.get_database_backend(), sql))
            .await?
            .ok_or_else(|| StoreError::Invalid("clock query returned no row".into()))?;
        Ok(row.try_get::<i64>("", "now")?)
    }

    /// [`Store::db_now`] for the engine's clock, which reads it at every claim and every
    /// group of answers the dispatcher settles. On SQLite it is this host's clock, the one
    /// `julianday('now')` reads in this process, without taking a connection and a hop to its
    /// thread. (Health probes keep asking the database: for them the answer is the point.)
    pub async fn clock_now(&self) -> Result<Millis> {
        if self.is_postgres() {
            self.db_now().await
        } else {
            Ok(wall_now())
        }
    }

    pub async fn close(self) -> Result<()> {
        self.db.close().await?;
        Ok(())
    }
}

fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.starts_with(":memory:") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// Builds a statement from SQL written with `?` placeholders, numbering them `$1, $2, …` for
/// PostgreSQL. Values are always bound; the SQL must be a constant (tests and reports use
/// this for read queries the store has no function for).
pub fn stmt<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: impl IntoIterator<Item = Value>,
) -> Statement {
    let backend = c.get_database_backend();
    let sql = if backend == DbBackend::Postgres {
        number_placeholders(sql)
    } else {
        sql.to_owned()
    };
    Statement::from_sql_and_values(backend, sql, values)
}

fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut in_str = false;
    for ch in sql.chars() {
        match ch {
            '\'' => {
                in_str = !in_str;
                out.push(ch);
            }
            '?' if !in_str => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(ch),
        }
    }
    out
}

pub(crate) async fn exec<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: impl IntoIterator<Item = Value>,
) -> Result<ExecResult> {
    Ok(c.execute_raw(stmt(c, sql, values)).await?)
}

pub(crate) async fn query<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: impl IntoIterator<Item = Value>,
) -> Result<Vec<QueryResult>> {
    Ok(c.query_all_raw(stmt(c, sql, values)).await?)
}

/// `?, ?, ?` for an IN list of `n` values.
pub(crate) fn marks(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

/// The current wall-clock time in Unix milliseconds.
pub fn wall_now() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_strings() {
        assert_eq!(
            number_placeholders("a = ? AND b = '?' AND c IN (?, ?)"),
            "a = $1 AND b = '?' AND c IN ($2, $3)"
        );
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_file("sqlite://a/b.db?mode=rwc"),
            Some(PathBuf::from("a/b.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
    }
}
