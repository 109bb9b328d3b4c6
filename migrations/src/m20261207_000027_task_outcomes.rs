use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// What an agent may record on a task: its workflow's declared `outcomes`, one per line,
/// copied when the task opens, so `POST /tasks/{id}/outcome` accepts exactly those (and an
/// agents' page can offer them). Additive: tasks opened before keep NULL, which means the
/// shipped four (accepted, refused, call_back_later, unreachable).
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum AgentTask {
    Table,
    Outcomes,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(AgentTask::Table)
                .add_column_if_not_exists(text_null(AgentTask::Outcomes))
                .to_owned(),
        )
        .await
    }
}
