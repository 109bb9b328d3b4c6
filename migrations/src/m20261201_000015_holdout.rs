use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Control members that hold across runs (`control.hold` of a workflow): one row per campaign
/// (`scope`), holdout period label (`2026`, `season-2026`, `90d-2026-01-05`, `run-42`) and
/// subscriber, with the run that drew them. No foreign key to `subscriber`: the row is the
/// record of who was held out, and outlives a subscriber leaving the base.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Holdout {
    Table,
    Scope,
    Period,
    SubscriberId,
    RunId,
    DrawnAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Holdout::Table)
                .if_not_exists()
                .col(string(Holdout::Scope))
                .col(string(Holdout::Period))
                .col(big_integer(Holdout::SubscriberId))
                .col(big_integer(Holdout::RunId))
                .col(big_integer(Holdout::DrawnAt))
                .primary_key(
                    Index::create()
                        .name("pk_holdout")
                        .col(Holdout::Scope)
                        .col(Holdout::Period)
                        .col(Holdout::SubscriberId),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Holdout::Table).to_owned())
            .await
    }
}
