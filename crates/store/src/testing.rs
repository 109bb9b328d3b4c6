//! Test support (feature `test-util`): a fresh, migrated store per test on the backend named
//! by `CAMPAIGND_TEST_BACKEND` (`sqlite`, the default, or `postgres`), so the whole test
//! suite can run on both backends unchanged.
//!
//! A PostgreSQL that cannot be reached is an error here, never a reason to skip: under CI a
//! test that silently ran nothing would prove nothing.

use std::path::Path;

use sea_orm::ConnectionTrait;

use crate::subscribers::NewSubscriber;
use crate::{Result, Store, StoreError};

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

/// Creates a new, empty schema on the server at [`pg_url`] and returns its name.
pub async fn fresh_pg_schema() -> Result<String> {
    let admin = Store::connect(&pg_url(), None).await?;
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
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

/// A plain subscriber for tests: a freshman on SMS in the evening, no complaints, not opted
/// out. Tests change what they are about with struct update syntax.
pub fn subscriber(msisdn: &str) -> NewSubscriber {
    NewSubscriber {
        msisdn: msisdn.to_owned(),
        external_id: None,
        name: "Test".into(),
        gender: "f".into(),
        age: 19,
        region: "beijing".into(),
        brand: "mzone".into(),
        value_tier: "ordinary".into(),
        arpu_3m: 50.0,
        balance: 10.0,
        tenure_months: 2,
        student_stage: "freshman".into(),
        campus: None,
        first_channel: "sms".into(),
        first_channel_slot: "evening".into(),
        second_channel: "outbound_call".into(),
        second_channel_slot: "evening".into(),
        complaints_30d: 0,
        do_not_disturb: false,
        churn_risk: 0.1,
        timezone: None,
        opt_out: false,
    }
}
