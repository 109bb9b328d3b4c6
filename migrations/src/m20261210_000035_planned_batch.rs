use sea_orm_migration::prelude::*;

/// A planned wave's contacts that are decided but not written yet (`store::batches`).
///
/// Planning commits its decision (who gets a contact, in which arm, when) as a few rows of
/// this table instead of writing a contact and a queue row per target inside the planning
/// transaction; each row is then written as contacts (with their `dispatch` rows) and
/// deleted in one transaction of its own. A row is either all still here or all written.
///
/// - `wave_run_id`, `seq`: the batch, numbered from 0 within its wave run.
/// - `run_id`, `wave`, `channel`, `purpose`, `at_most_once`: what `contacts::WaveContacts`
///   needs, so a batch is written alone (after a restart, by any replica).
/// - `n`, `treatment`: contacts in the batch, and of those the treatment arm (still to
///   send: `pending_in_wave` counts them).
/// - `payload`: the contacts, JSON (`store::batches::encode`).
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum PlannedBatch {
    Table,
    WaveRunId,
    Seq,
    RunId,
    Wave,
    Channel,
    Purpose,
    AtMostOnce,
    N,
    Treatment,
    Payload,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(PlannedBatch::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(PlannedBatch::WaveRunId)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(PlannedBatch::Seq).integer().not_null())
                .col(ColumnDef::new(PlannedBatch::RunId).big_integer().not_null())
                .col(ColumnDef::new(PlannedBatch::Wave).string().not_null())
                .col(ColumnDef::new(PlannedBatch::Channel).string().not_null())
                .col(ColumnDef::new(PlannedBatch::Purpose).string().not_null())
                .col(
                    ColumnDef::new(PlannedBatch::AtMostOnce)
                        .boolean()
                        .not_null(),
                )
                .col(ColumnDef::new(PlannedBatch::N).big_integer().not_null())
                .col(
                    ColumnDef::new(PlannedBatch::Treatment)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(PlannedBatch::Payload).text().not_null())
                .primary_key(
                    Index::create()
                        .col(PlannedBatch::WaveRunId)
                        .col(PlannedBatch::Seq),
                )
                .to_owned(),
        )
        .await
    }
}
