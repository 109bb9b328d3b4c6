use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// The service-staff channel: an agent task's SLA and escalation.
///
/// - `due_at`: when the task is due (opened + the wave's `sla`); NULL without an SLA.
/// - `escalate_to`: the staff id (`workflows/staff.yaml`) an overdue task goes to.
/// - `escalated_at`: when the task was escalated (once; NULL until then).
/// - `told_at`: when the team's staff member was sent the task in a digest.
/// - `escalation_told_at`: when the supervisor was sent the escalation in a digest.
///
/// Additive: tasks opened before keep NULLs (no SLA, never escalated). The index serves
/// the escalation step's "open, due, not yet escalated" and the worklist's order by due time.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum AgentTask {
    Table,
    State,
    DueAt,
    EscalateTo,
    EscalatedAt,
    ToldAt,
    EscalationToldAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for col in [
            big_integer_null(AgentTask::DueAt),
            string_null(AgentTask::EscalateTo),
            big_integer_null(AgentTask::EscalatedAt),
            big_integer_null(AgentTask::ToldAt),
            big_integer_null(AgentTask::EscalationToldAt),
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
                .name("ix_agent_task_due")
                .table(AgentTask::Table)
                .col(AgentTask::State)
                .col(AgentTask::DueAt)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }
}
