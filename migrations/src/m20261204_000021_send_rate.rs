use sea_orm_migration::prelude::*;

/// The next free send slot of each gateway account (`[sms] max_per_second`), shared by the
/// daemon replicas of one database: each reserves a run of slots in one statement, so the
/// account's rate holds across replicas (`Store::reserve_send_slots`).
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum SendRate {
    Table,
    Account,
    /// The first slot nobody holds, in microseconds of the database's clock.
    NextAt,
    /// The database's clock when the last reservation was made (microseconds).
    StampedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SendRate::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SendRate::Account)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(SendRate::NextAt).big_integer().not_null())
                .col(ColumnDef::new(SendRate::StampedAt).big_integer().not_null())
                .to_owned(),
        )
        .await
    }
}
