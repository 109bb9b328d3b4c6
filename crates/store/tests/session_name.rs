//! PostgreSQL sessions carry the worker's name (`application_name`), so `pg_stat_activity`
//! says which replica holds a session, and the e2e tests can wait until a killed replica's
//! last statements have ended. Runs against the test PostgreSQL on either backend setting.

use sea_orm::{ConnectionTrait, Statement};
use store::testing::RawDb as _;

type Res = Result<(), Box<dyn std::error::Error>>;

async fn session_name(url: &str, worker: &str) -> Result<String, Box<dyn std::error::Error>> {
    let schema = store::testing::fresh_pg_schema().await?;
    let store = store::Store::connect_as(url, Some(&schema), worker).await?;
    let db = store.db();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT current_setting('application_name') AS n",
        ))
        .await?;
    Ok(rows[0].try_get::<String>("", "n")?)
}

#[tokio::test]
async fn sessions_are_named_after_the_worker_unless_the_url_names_them() -> Res {
    let url = store::testing::pg_url();
    assert_eq!(
        session_name(&url, "replica-1").await?,
        "campaignd/replica-1"
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    let named = format!("{url}{sep}application_name=etl");
    assert_eq!(session_name(&named, "replica-1").await?, "etl");
    Ok(())
}

#[test]
fn a_long_worker_name_is_cut_to_what_postgres_keeps_at_a_character_boundary() {
    let name = store::application_name(&"é".repeat(40));
    assert!(name.len() <= 63, "{}", name.len());
    assert!(name.starts_with("campaignd/é"));
    assert_eq!(name.len(), "campaignd/".len() + 26 * 2);
}
