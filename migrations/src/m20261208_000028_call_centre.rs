use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// The call-centre channel: a queued task's way through a paced team's queue.
///
/// - `queued`: the task is worked through the queue (`POST /tasks/next`, dialer batches):
///   its team is declared in `workflows/teams.yaml`. False for tasks of other teams and for
///   tasks opened before, which agents keep working from `GET /tasks`.
/// - `released_at`, `released_day`: when the engine released a queued task to its team's
///   queue and the team's local day it counts against (`capacity_per_day`); NULL while it
///   waits for pacing.
/// - `value`: the subscriber's value (the teams file's `value` attribute) read at release;
///   the queue serves the highest first.
/// - `held_by`, `held_until`: the agent (or dialer) holding the task and until when; a hold
///   that ran out returns the task to the queue.
/// - `callback_at`: a `call back later` time; the task is invisible to the queue before it.
/// - `deadline`: when an unworked task expires (its wave's window close, `respond_within`).
///
/// Additive: tasks opened before keep `queued = false` and NULLs. The first index serves the
/// release step's per-team counts, the second the expiry step.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum AgentTask {
    Table,
    Team,
    State,
    Queued,
    ReleasedAt,
    ReleasedDay,
    Value,
    HeldBy,
    HeldUntil,
    CallbackAt,
    Deadline,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for col in [
            boolean(AgentTask::Queued).default(false).to_owned(),
            big_integer_null(AgentTask::ReleasedAt),
            string_null(AgentTask::ReleasedDay),
            double_null(AgentTask::Value),
            string_null(AgentTask::HeldBy),
            big_integer_null(AgentTask::HeldUntil),
            big_integer_null(AgentTask::CallbackAt),
            big_integer_null(AgentTask::Deadline),
        ] {
            m.alter_table(
                Table::alter()
                    .table(AgentTask::Table)
                    .add_column_if_not_exists(col)
                    .to_owned(),
            )
            .await?;
        }
        m.create_index(
            Index::create()
                .name("ix_agent_task_release")
                .table(AgentTask::Table)
                .col(AgentTask::Team)
                .col(AgentTask::ReleasedDay)
                .col(AgentTask::ReleasedAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_agent_task_deadline")
                .table(AgentTask::Table)
                .col(AgentTask::State)
                .col(AgentTask::Deadline)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }
}
