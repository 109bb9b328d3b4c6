//! Test support (feature `test-util`): a fresh, migrated store per test on the backend named
//! by `CAMPAIGND_TEST_BACKEND` (`sqlite`, the default, or `postgres`), so a crate's whole test
//! suite can run on both backends unchanged.

use std::path::Path;

use sea_orm::ConnectionTrait;

use crate::{Result, Store};

/// The PostgreSQL server tests use: `CAMPAIGND_TEST_PG_URL`, by default the local one.
pub fn pg_url() -> String {
    std::env::var("CAMPAIGND_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A migrated, empty store: a SQLite file in `dir`, or a new PostgreSQL schema of its own.
pub async fn fresh_store(dir: &Path) -> Result<Store> {
    let store = match std::env::var("CAMPAIGND_TEST_BACKEND").as_deref() {
        Ok("postgres") => {
            let url = pg_url();
            let admin = Store::connect(&url, None).await?;
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            admin
                .db()
                .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
                .await?;
            admin.close().await?;
            Store::connect(&url, Some(&schema)).await?
        }
        Ok("sqlite") | Err(_) => {
            Store::connect(&format!("sqlite://{}", dir.join("test.db").display()), None).await?
        }
        Ok(other) => {
            return Err(crate::StoreError::Invalid(format!(
                "CAMPAIGND_TEST_BACKEND={other}: expected sqlite or postgres"
            )));
        }
    };
    store.migrate().await?;
    Ok(store)
}
