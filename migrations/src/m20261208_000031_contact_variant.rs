use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// The experiment arm (a wave's `variants` entry) a treatment contact was assigned, so the
/// dispatcher renders that variant's template and the report counts each arm against the
/// shared control. Additive: NULL for control contacts, waves without variants and every
/// contact planned before.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Contact {
    Table,
    Variant,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Contact::Table)
                .add_column_if_not_exists(text_null(Contact::Variant))
                .to_owned(),
        )
        .await
    }
}
