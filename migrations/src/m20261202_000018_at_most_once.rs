use sea_orm_migration::prelude::*;

/// A queue row of an at-most-once wave: after a crash left it in doubt (handed to the gateway
/// perhaps, its answer unrecorded) it is never sent again but recorded `unknown`. On the
/// queue row, so the claim can pass over such rows without a join.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Dispatch {
    Table,
    AtMostOnce,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Dispatch::Table)
                .add_column_if_not_exists(
                    ColumnDef::new(Dispatch::AtMostOnce)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .to_owned(),
        )
        .await
    }
}
