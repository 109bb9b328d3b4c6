use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Text fields of `subscriber` compare in byte order on PostgreSQL too, as on SQLite and in
/// `spec::expr::eval`. Otherwise a filter such as `campus < 'M'` would follow the server's
/// default collation (en_US and the like order case and accents differently), and one
/// workflow would pick different subscribers on the two backends. Equality is unchanged.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// Every text column of `subscriber` (all filterable fields).
const TEXT_COLUMNS: [&str; 14] = [
    "msisdn",
    "external_id",
    "name",
    "gender",
    "region",
    "brand",
    "value_tier",
    "student_stage",
    "campus",
    "first_channel",
    "first_channel_slot",
    "second_channel",
    "second_channel_slot",
    "timezone",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let alters: Vec<String> = TEXT_COLUMNS
            .iter()
            .map(|c| format!("ALTER COLUMN {c} TYPE varchar COLLATE \"C\""))
            .collect();
        m.get_connection()
            .execute_unprepared(&format!("ALTER TABLE subscriber {}", alters.join(", ")))
            .await?;
        Ok(())
    }
}
