use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// `call back later` as a promise: who promised the call, and how often a task went back.
///
/// - `callback_for`: the agent that agreed the time with the subscriber. From `callback_at`
///   the queue offers the task to that agent only, for a grace (`store::calls::
///   CALLBACK_GRACE_MS`); after it, to any agent of the team. NULL: anyone.
/// - `callbacks`: how many times the task was put back for a call back, so a report can
///   tell a re-queued task (still open, not a completed contact) from a worked one.
///
/// Additive: tasks opened before keep NULL and 0.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum AgentTask {
    Table,
    CallbackFor,
    Callbacks,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for col in [
            string_null(AgentTask::CallbackFor),
            integer(AgentTask::Callbacks).default(0).to_owned(),
        ] {
            m.alter_table(
                Table::alter()
                    .table(AgentTask::Table)
                    .add_column_if_not_exists(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
