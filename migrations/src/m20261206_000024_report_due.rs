use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// `run.report_due_at`: when a finished run's stored report is to be built again although
/// no response came. A retention goal's report is provisional until the retention window
/// ends (a churn still to come can lower it), so it is rebuilt daily while provisional and
/// once more when final; NULL when the stored report is final.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Run {
    Table,
    ReportDueAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Run::Table)
                .add_column_if_not_exists(big_integer_null(Run::ReportDueAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_run_report_due")
                .table(Run::Table)
                .col(Run::ReportDueAt)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }
}
