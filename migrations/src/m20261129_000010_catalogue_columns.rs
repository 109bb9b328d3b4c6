use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// The subscriber's attributes belong to the operator's catalogue (`workflows/attributes.yaml`),
/// not to this schema: the columns the first migration created for the shipped attributes
/// become ordinary catalogue columns. They may now be empty (an operator's catalogue may
/// leave any of them out, or declare them optional), and whole numbers are 64-bit on both
/// backends, as every catalogue `integer` is. Core columns (msisdn, consent, bookkeeping)
/// keep their constraints.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// Columns of the shipped attributes, with their SQLite type.
const ATTRIBUTE_COLUMNS: [(&str, &str); 17] = [
    ("name", "varchar"),
    ("gender", "varchar"),
    ("age", "bigint"),
    ("region", "varchar"),
    ("brand", "varchar"),
    ("value_tier", "varchar"),
    ("arpu_3m", "double"),
    ("balance", "double"),
    ("tenure_months", "bigint"),
    ("student_stage", "varchar"),
    ("campus", "varchar"),
    ("first_channel", "varchar"),
    ("first_channel_slot", "varchar"),
    ("second_channel", "varchar"),
    ("second_channel_slot", "varchar"),
    ("complaints_30d", "bigint"),
    ("churn_risk", "double"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction on every backend: the SQLite rebuild must run on one connection (the
    /// default there is none, and a pooled connection with an older schema saw the old
    /// table still in place), and a crash halfway must leave the old table, not none.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let c = m.get_connection();
        if m.get_database_backend() == DbBackend::Postgres {
            let mut alters: Vec<String> = ATTRIBUTE_COLUMNS
                .iter()
                .map(|(col, _)| format!("ALTER COLUMN {col} DROP NOT NULL"))
                .collect();
            for col in ["age", "tenure_months", "complaints_30d"] {
                alters.push(format!("ALTER COLUMN {col} TYPE BIGINT"));
            }
            c.execute_unprepared(&format!("ALTER TABLE subscriber {}", alters.join(", ")))
                .await?;
            return Ok(());
        }
        // SQLite cannot drop a NOT NULL: the table is rebuilt with the same rows and ids.
        // Nothing references `subscriber` by foreign key, and its only index is msisdn's
        // uniqueness, declared inline.
        let attrs: Vec<String> = ATTRIBUTE_COLUMNS
            .iter()
            .map(|(col, ty)| format!("{col} {ty} NULL"))
            .collect();
        let names: Vec<&str> = ["id", "msisdn", "external_id"]
            .into_iter()
            .chain(ATTRIBUTE_COLUMNS.iter().map(|(col, _)| *col))
            .chain(["do_not_disturb", "timezone", "opt_out", "updated_at"])
            .collect();
        let names = names.join(", ");
        c.execute_unprepared(&format!(
            "CREATE TABLE subscriber_next (\
             id integer NOT NULL PRIMARY KEY AUTOINCREMENT, \
             msisdn varchar NOT NULL UNIQUE, \
             external_id varchar NULL, \
             {}, \
             do_not_disturb boolean NOT NULL, \
             timezone varchar NULL, \
             opt_out boolean NOT NULL, \
             updated_at bigint NOT NULL)",
            attrs.join(", ")
        ))
        .await?;
        c.execute_unprepared(&format!(
            "INSERT INTO subscriber_next ({names}) SELECT {names} FROM subscriber"
        ))
        .await?;
        c.execute_unprepared("DROP TABLE subscriber").await?;
        c.execute_unprepared("ALTER TABLE subscriber_next RENAME TO subscriber")
            .await?;
        Ok(())
    }
}
