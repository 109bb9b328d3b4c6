//! Pieces the benchmarks share: readings from /proc and fresh databases on either backend.

pub mod proc;

use std::path::Path;

use anyhow::Context as _;
use store::Store;
use store::testing::RawDb as _;

/// The database a benchmark runs on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A fresh database: a SQLite file in `dir`, or a new schema in the PostgreSQL database.
pub async fn fresh_store(
    backend: Backend,
    dir: &Path,
    pg_url: &str,
) -> anyhow::Result<(Store, Option<String>)> {
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.join("campaignd.db").display());
            let store = Store::connect(&url, None).await?;
            store.migrate().await?;
            Ok((store, None))
        }
        Backend::Postgres => {
            let admin = Store::connect(pg_url, None)
                .await
                .with_context(|| format!("connecting to PostgreSQL at {pg_url}"))?;
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            sea_orm::ConnectionTrait::execute_unprepared(
                admin.db(),
                &format!("CREATE SCHEMA {schema}"),
            )
            .await?;
            admin.close().await?;
            let store = Store::connect(pg_url, Some(&schema)).await?;
            store.migrate().await?;
            Ok((store, Some(schema)))
        }
    }
}

pub async fn drop_schema(pg_url: &str, schema: &str) -> anyhow::Result<()> {
    let admin = Store::connect(pg_url, None).await?;
    sea_orm::ConnectionTrait::execute_unprepared(
        admin.db(),
        &format!("DROP SCHEMA {schema} CASCADE"),
    )
    .await?;
    admin.close().await?;
    Ok(())
}
