//! Test support (feature `test-util`): a fresh, migrated store per test on the backend named
//! by `CAMPAIGND_TEST_BACKEND` (`sqlite`, the default, or `postgres`), so the whole test
//! suite can run on both backends unchanged.
//!
//! A PostgreSQL that cannot be reached is an error here, never a reason to skip: under CI a
//! test that silently ran nothing would prove nothing.

use std::path::Path;

use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::subscribers::NewSubscriber;
use crate::{Result, Store, StoreError};

/// The test-only door to the raw connection (`use store::testing::RawDb as _;`), for tests
/// that set up or inspect rows the store's API has no function for. Product crates never
/// enable `test-util` (`tests/architecture.rs`), so for them `Store::db` does not exist.
pub trait RawDb {
    fn db(&self) -> &DatabaseConnection;
}

impl RawDb for Store {
    fn db(&self) -> &DatabaseConnection {
        Store::db(self)
    }
}

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend named by `CAMPAIGND_TEST_BACKEND`: `sqlite` (the default) or `postgres`.
pub fn backend() -> Result<Backend> {
    match std::env::var("CAMPAIGND_TEST_BACKEND").as_deref() {
        Ok("postgres") => Ok(Backend::Postgres),
        Ok("sqlite") | Err(_) => Ok(Backend::Sqlite),
        Ok(other) => Err(StoreError::Invalid(format!(
            "CAMPAIGND_TEST_BACKEND={other}: expected sqlite or postgres"
        ))),
    }
}

/// The PostgreSQL server tests use: `CAMPAIGND_TEST_PG_URL`, by default the local one.
pub fn pg_url() -> String {
    std::env::var("CAMPAIGND_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Where a test's database lives, for tests that hand it to the `campaignd` binary
/// (`database_url`, `database_schema` in its config) as well as for [`fresh_store`].
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub url: String,
    /// The PostgreSQL schema of this test alone (`None` on SQLite).
    pub schema: Option<String>,
}

impl TestDatabase {
    /// Connects without migrating (a test may want the binary to migrate it).
    pub async fn connect(&self) -> Result<Store> {
        Store::connect(&self.url, self.schema.as_deref()).await
    }
}

/// An empty database of the test's own: a SQLite file in `dir` (not created yet), or a new,
/// empty PostgreSQL schema, so tests running in parallel never see each other's rows.
pub async fn fresh_database(backend: Backend, dir: &Path) -> Result<TestDatabase> {
    match backend {
        Backend::Sqlite => Ok(TestDatabase {
            url: format!("sqlite://{}", dir.join("test.db").display()),
            schema: None,
        }),
        Backend::Postgres => Ok(TestDatabase {
            url: pg_url(),
            schema: Some(fresh_pg_schema().await?),
        }),
    }
}

/// The id of this test run, the prefix of every PostgreSQL schema it creates
/// (`t_<run>_<uuid>`): `CAMPAIGND_TEST_RUN`, which scripts/test.sh sets so that it can drop
/// exactly its own schemas afterwards and never those of a run beside it; else one id per
/// test process. Either way `<unix seconds>_<lowercase letters or digits>`: the seconds let a
/// later run drop the schemas of a run that crashed, by age (scripts/test.sh).
pub fn run_id() -> Result<&'static str> {
    static RUN: std::sync::OnceLock<std::result::Result<String, String>> =
        std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| match std::env::var("CAMPAIGND_TEST_RUN") {
        Ok(run) if valid_run_id(&run) => Ok(run),
        Ok(run) => Err(format!(
            "CAMPAIGND_TEST_RUN={run:?}: expected <unix seconds>_<lowercase letters or digits>, \
             e.g. 1796000000_a1b2c3d4"
        )),
        Err(_) => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let random = uuid::Uuid::new_v4().simple().to_string();
            Ok(format!("{secs}_{}", &random[..8]))
        }
    });
    run.as_deref().map_err(|e| StoreError::Invalid(e.clone()))
}

/// Ten digits of seconds (until 2286), then a short lowercase tag: it goes into schema names
/// unquoted, and PostgreSQL names end at 63 bytes.
fn valid_run_id(run: &str) -> bool {
    let Some((secs, tag)) = run.split_once('_') else {
        return false;
    };
    secs.len() == 10
        && secs.bytes().all(|b| b.is_ascii_digit())
        && (1..=16).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Creates a new, empty schema `t_<run>_<uuid>` (see [`run_id`]) on the server at [`pg_url`]
/// and returns its name. Schemas are kept after the test, for inspection; scripts/test.sh
/// drops its run's schemas when the run passes, and any run's after a few days.
pub async fn fresh_pg_schema() -> Result<String> {
    let run = run_id()?;
    let admin = Store::connect(&pg_url(), None).await?;
    let schema = format!("t_{run}_{}", uuid::Uuid::new_v4().simple());
    admin
        .db()
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await?;
    admin.close().await?;
    Ok(schema)
}

/// A migrated, empty store on the backend named by `CAMPAIGND_TEST_BACKEND`.
pub async fn fresh_store(dir: &Path) -> Result<Store> {
    let store = fresh_database(backend()?, dir).await?.connect().await?;
    store.migrate().await?;
    Ok(store)
}

/// A plain subscriber of the shipped catalogue for tests: a freshman on SMS in the
/// evening, no complaints, not opted out. Tests change what they are about with
/// [`NewSubscriber::with`] or by setting the core fields.
pub fn subscriber(msisdn: &str) -> NewSubscriber {
    NewSubscriber::new(msisdn, catalogue::shipped())
        .with("name", "Test")
        .with("gender", "female")
        .with("age", 19)
        .with("region", "beijing")
        .with("brand", "mzone")
        .with("arpu_3m", 50.0)
        .with("balance", 10.0)
        .with("tenure_months", 2)
        .with("student_stage", "freshman")
        .with("first_channel", "sms")
        .with("first_channel_slot", "evening")
        .with("second_channel", "outbound_call")
        .with("second_channel_slot", "evening")
        .with("complaints_30d", 0)
        .with("churn_risk", 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_fit_unquoted_schema_names() {
        assert!(valid_run_id("1796000000_a1b2c3d4"));
        assert!(valid_run_id("1796000000_ci"));
        for bad in [
            "",
            "dev",
            "1796000000",
            "1796000000_",
            "179600000_ab",
            "1796000000_AB",
            "1796000000_a-b",
            "1796000000_a;drop",
            "1796000000_0123456789abcdefg",
        ] {
            assert!(!valid_run_id(bad), "{bad:?}");
        }
        // The longest name still fits PostgreSQL's 63 bytes.
        let longest = format!(
            "t_{}_{}",
            "1796000000_0123456789abcdef",
            uuid::Uuid::nil().simple()
        );
        assert!(longest.len() <= 63, "{longest}");
        let run = run_id().unwrap();
        assert!(valid_run_id(run), "{run}");
    }
}
