//! Properties of the migrated schema that the rest of the code relies on. Runs on SQLite, or
//! on PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use sea_orm::ConnectionTrait;
use store::subscribers::{NewSubscriber, OnDuplicate};
use store::testing::RawDb as _;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Filters compare text in byte order everywhere (`spec::expr::eval` does): `'B' < 'a'`, and
/// on PostgreSQL that must not depend on the server's default collation.
#[tokio::test]
async fn subscriber_text_compares_in_byte_order() -> Res {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let rows: Vec<NewSubscriber> = ["a", "B", "é", "Z"]
        .iter()
        .enumerate()
        .map(|(i, name)| store::testing::subscriber(&format!("1370000{i:04}")).with("name", *name))
        .collect();
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, 0)
        .await?;
    let sorted = store
        .db()
        .query_all_raw(store::stmt(
            store.db(),
            "SELECT name FROM subscriber WHERE name < ? ORDER BY name",
            ["b".into()],
        ))
        .await?
        .iter()
        .map(|r| r.try_get::<String>("", "name"))
        .collect::<Result<Vec<_>, _>>()?;
    assert_eq!(sorted, ["B", "Z", "a"]);
    if store.is_postgres() {
        // The server here may well default to C; the column collation is what makes the
        // order hold on one that does not.
        let not_c = store
            .db()
            .query_all_raw(store::stmt(
                store.db(),
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name = 'subscriber' AND data_type = 'character varying' \
                 AND COALESCE(collation_name, '') <> 'C' ORDER BY column_name",
                [],
            ))
            .await?
            .iter()
            .map(|r| r.try_get::<String>("", "column_name"))
            .collect::<Result<Vec<_>, _>>()?;
        assert!(
            not_c.is_empty(),
            "text columns not in byte order: {not_c:?}"
        );
    }
    Ok(())
}
