use sea_orm_migration::prelude::*;

/// Each contact records its campaign's purpose (`marketing`, `care`, `alert`; see
/// `domain::Purpose`): the frequency cap counts marketing contacts only. Contacts planned
/// before this migration were all marketing.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Contact {
    Table,
    Purpose,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Contact::Table)
                .add_column(
                    ColumnDef::new(Contact::Purpose)
                        .string()
                        .not_null()
                        .default("marketing"),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Contact::Table)
                .drop_column(Contact::Purpose)
                .to_owned(),
        )
        .await
    }
}
