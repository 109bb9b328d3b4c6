use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Late attribution and the window barrier.
///
/// - `inbound.tries`: how often attribution looked at a row and deferred it. A wave window
///   does not close while a row received inside it has not been tried (the barrier in
///   `Store::due_timers`); a deferred row has been tried, so a flood of rows that can never
///   be matched (forged reports for a queued key) cannot hold windows shut. Attribution
///   reads untried rows first, so such a flood cannot starve later rows either.
/// - `run.response_seq` / `run.report_seq`: every recorded response bumps the first; a
///   stored report carries the value it was built at. A finished run whose numbers differ
///   got a response (received in time, attributed late) after its report was built, and the
///   engine rebuilds that report.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Inbound {
    Table,
    Processed,
    Tries,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum Run {
    Table,
    ResponseSeq,
    ReportSeq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Inbound::Table)
                .add_column_if_not_exists(integer(Inbound::Tries).default(0))
                .to_owned(),
        )
        .await?;
        // SQLite alters one column per statement.
        m.alter_table(
            Table::alter()
                .table(Run::Table)
                .add_column_if_not_exists(big_integer(Run::ResponseSeq).default(0))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Run::Table)
                .add_column_if_not_exists(big_integer(Run::ReportSeq).default(0))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_inbound_untried")
                .table(Inbound::Table)
                .col(Inbound::Processed)
                .col(Inbound::Tries)
                .col(Inbound::Id)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("ix_inbound_processed")
                .table(Inbound::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}
