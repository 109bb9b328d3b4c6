use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// The shipped catalogue's `email` attribute (`format: email`, optional): the address a
/// `channel: email` wave sends to. A catalogue column like the others of migration 10, so a
/// fresh database has every shipped attribute without `campaignd migrate`; text in byte
/// order on PostgreSQL, as every text column of `subscriber` (migration 6). Additive:
/// `ADD COLUMN IF NOT EXISTS`, so a database where `campaignd migrate` already added it
/// from the catalogue is left as it is.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let c = m.get_connection();
        if m.get_database_backend() == DbBackend::Postgres {
            c.execute_unprepared(
                "ALTER TABLE subscriber ADD COLUMN IF NOT EXISTS email varchar COLLATE \"C\" NULL",
            )
            .await?;
            return Ok(());
        }
        // SQLite has no `IF NOT EXISTS` for columns.
        if !m.has_column("subscriber", "email").await? {
            c.execute_unprepared("ALTER TABLE subscriber ADD COLUMN email TEXT NULL")
                .await?;
        }
        Ok(())
    }
}
