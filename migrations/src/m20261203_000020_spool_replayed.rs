use sea_orm_migration::prelude::*;

/// The callback spool files already replayed into `inbound`. A file's rows and its name are
/// written in one transaction, so a daemon that dies between that commit and deleting the
/// file skips it on the next replay instead of storing its callbacks twice.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum SpoolReplayed {
    Table,
    Batch,
    ReplayedAt,
    Rows,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SpoolReplayed::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SpoolReplayed::Batch)
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(SpoolReplayed::ReplayedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(SpoolReplayed::Rows).big_integer().not_null())
                .to_owned(),
        )
        .await
    }
}
