use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Subscriber {
    Table,
    Id,
    Msisdn,
    ExternalId,
    Name,
    Gender,
    Age,
    Region,
    Brand,
    ValueTier,
    #[sea_orm(iden = "arpu_3m")]
    Arpu3m,
    Balance,
    TenureMonths,
    StudentStage,
    Campus,
    FirstChannel,
    FirstChannelSlot,
    SecondChannel,
    SecondChannelSlot,
    #[sea_orm(iden = "complaints_30d")]
    Complaints30d,
    DoNotDisturb,
    ChurnRisk,
    Timezone,
    OptOut,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum WorkflowVersion {
    Table,
    Id,
    Campaign,
    Hash,
    Source,
    LoadedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ScheduleSlot {
    Table,
    Id,
    Campaign,
    VersionId,
    SlotAt,
    State,
    Reason,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Run {
    Table,
    Id,
    Campaign,
    VersionId,
    SlotId,
    Trigger,
    State,
    StartedAt,
    FinishedAt,
    Report,
}

#[derive(DeriveIden, Clone, Copy)]
enum WaveRun {
    Table,
    Id,
    RunId,
    Wave,
    Ordinal,
    Channel,
    State,
    PlannedAt,
    ClosesAt,
    SendBy,
}

#[derive(DeriveIden, Clone, Copy)]
enum Contact {
    Table,
    Id,
    RunId,
    WaveRunId,
    SubscriberId,
    Arm,
    Channel,
    State,
    Attempt,
    DueAt,
    SendBy,
    LeaseUntil,
    LeaseToken,
    SentAt,
    DeliveredAt,
    RespondedAt,
    Response,
    LastError,
    IdemKey,
    Stratum,
}

#[derive(DeriveIden, Clone, Copy)]
enum Funnel {
    Table,
    Id,
    WaveRunId,
    Reason,
    Count,
}

#[derive(DeriveIden, Clone, Copy)]
enum Decision {
    Table,
    Id,
    WaveRunId,
    SubscriberId,
    Reason,
}

#[derive(DeriveIden, Clone, Copy)]
enum Timer {
    Table,
    Id,
    Kind,
    WaveRunId,
    FireAt,
    State,
}

#[derive(DeriveIden, Clone, Copy)]
enum Inbound {
    Table,
    Id,
    Source,
    IdemKey,
    Msisdn,
    Kind,
    Value,
    Payload,
    ReceivedAt,
    Processed,
}

#[derive(DeriveIden, Clone, Copy)]
enum Response {
    Table,
    Id,
    ContactId,
    RunId,
    WaveRunId,
    SubscriberId,
    Arm,
    Kind,
    Value,
    At,
}

#[derive(DeriveIden, Clone, Copy)]
enum AgentTask {
    Table,
    Id,
    ContactId,
    Team,
    Kind,
    SubscriberId,
    Script,
    State,
    Outcome,
    Agent,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Subscriber::Table)
                .if_not_exists()
                .col(big_pk_auto(Subscriber::Id))
                .col(string_uniq(Subscriber::Msisdn))
                .col(string_null(Subscriber::ExternalId))
                .col(string(Subscriber::Name))
                .col(string(Subscriber::Gender))
                .col(integer(Subscriber::Age))
                .col(string(Subscriber::Region))
                .col(string(Subscriber::Brand))
                .col(string(Subscriber::ValueTier))
                .col(double(Subscriber::Arpu3m))
                .col(double(Subscriber::Balance))
                .col(integer(Subscriber::TenureMonths))
                .col(string(Subscriber::StudentStage))
                .col(string_null(Subscriber::Campus))
                .col(string(Subscriber::FirstChannel))
                .col(string(Subscriber::FirstChannelSlot))
                .col(string(Subscriber::SecondChannel))
                .col(string(Subscriber::SecondChannelSlot))
                .col(integer(Subscriber::Complaints30d))
                .col(boolean(Subscriber::DoNotDisturb))
                .col(double(Subscriber::ChurnRisk))
                .col(string_null(Subscriber::Timezone))
                .col(boolean(Subscriber::OptOut))
                .col(big_integer(Subscriber::UpdatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(WorkflowVersion::Table)
                .if_not_exists()
                .col(big_pk_auto(WorkflowVersion::Id))
                .col(string(WorkflowVersion::Campaign))
                .col(string(WorkflowVersion::Hash))
                .col(text(WorkflowVersion::Source))
                .col(big_integer(WorkflowVersion::LoadedAt))
                .to_owned(),
        )
        .await?;
        unique(
            m,
            "ux_workflow_version",
            WorkflowVersion::Table,
            &[WorkflowVersion::Campaign, WorkflowVersion::Hash],
        )
        .await?;

        // One row per (campaign, slot) whatever the version: two replicas running different
        // versions of a file during a rolling deploy must still not both run the slot.
        m.create_table(
            Table::create()
                .table(ScheduleSlot::Table)
                .if_not_exists()
                .col(big_pk_auto(ScheduleSlot::Id))
                .col(string(ScheduleSlot::Campaign))
                .col(big_integer(ScheduleSlot::VersionId))
                .col(big_integer(ScheduleSlot::SlotAt))
                .col(string(ScheduleSlot::State))
                .col(string_null(ScheduleSlot::Reason))
                .col(big_integer(ScheduleSlot::CreatedAt))
                .to_owned(),
        )
        .await?;
        unique(
            m,
            "ux_schedule_slot",
            ScheduleSlot::Table,
            &[ScheduleSlot::Campaign, ScheduleSlot::SlotAt],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Run::Table)
                .if_not_exists()
                .col(big_pk_auto(Run::Id))
                .col(string(Run::Campaign))
                .col(big_integer(Run::VersionId))
                .col(big_integer_null(Run::SlotId))
                .col(string(Run::Trigger))
                .col(string(Run::State))
                .col(big_integer(Run::StartedAt))
                .col(big_integer_null(Run::FinishedAt))
                .col(text_null(Run::Report))
                .to_owned(),
        )
        .await?;
        unique(m, "ux_run_slot", Run::Table, &[Run::SlotId]).await?;
        index(m, "ix_run_state", Run::Table, &[Run::State]).await?;

        m.create_table(
            Table::create()
                .table(WaveRun::Table)
                .if_not_exists()
                .col(big_pk_auto(WaveRun::Id))
                .col(big_integer(WaveRun::RunId))
                .col(string(WaveRun::Wave))
                .col(integer(WaveRun::Ordinal))
                .col(string(WaveRun::Channel))
                .col(string(WaveRun::State))
                .col(big_integer_null(WaveRun::PlannedAt))
                .col(big_integer_null(WaveRun::ClosesAt))
                .col(big_integer_null(WaveRun::SendBy))
                .to_owned(),
        )
        .await?;
        unique(
            m,
            "ux_wave_run",
            WaveRun::Table,
            &[WaveRun::RunId, WaveRun::Wave],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Contact::Table)
                .if_not_exists()
                .col(big_pk_auto(Contact::Id))
                .col(big_integer(Contact::RunId))
                .col(big_integer(Contact::WaveRunId))
                .col(big_integer(Contact::SubscriberId))
                .col(string(Contact::Arm))
                .col(string(Contact::Channel))
                .col(string(Contact::State))
                .col(integer(Contact::Attempt))
                .col(big_integer(Contact::DueAt))
                .col(big_integer_null(Contact::SendBy))
                .col(big_integer_null(Contact::LeaseUntil))
                .col(string_null(Contact::LeaseToken))
                .col(big_integer_null(Contact::SentAt))
                .col(big_integer_null(Contact::DeliveredAt))
                .col(big_integer_null(Contact::RespondedAt))
                .col(string_null(Contact::Response))
                .col(string_null(Contact::LastError))
                .col(string(Contact::IdemKey))
                .col(string(Contact::Stratum))
                .to_owned(),
        )
        .await?;
        // The invariant "never contacted twice for the same wave" is this index.
        unique(
            m,
            "ux_contact_wave_subscriber",
            Contact::Table,
            &[Contact::WaveRunId, Contact::SubscriberId],
        )
        .await?;
        unique(m, "ux_contact_key", Contact::Table, &[Contact::IdemKey]).await?;
        index(
            m,
            "ix_contact_claim",
            Contact::Table,
            &[Contact::State, Contact::Channel, Contact::DueAt],
        )
        .await?;
        index(
            m,
            "ix_contact_subscriber",
            Contact::Table,
            &[Contact::SubscriberId, Contact::SentAt],
        )
        .await?;
        index(
            m,
            "ix_contact_lease",
            Contact::Table,
            &[Contact::LeaseToken],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Funnel::Table)
                .if_not_exists()
                .col(big_pk_auto(Funnel::Id))
                .col(big_integer(Funnel::WaveRunId))
                .col(string(Funnel::Reason))
                .col(big_integer(Funnel::Count))
                .to_owned(),
        )
        .await?;
        unique(
            m,
            "ux_funnel",
            Funnel::Table,
            &[Funnel::WaveRunId, Funnel::Reason],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Decision::Table)
                .if_not_exists()
                .col(big_pk_auto(Decision::Id))
                .col(big_integer(Decision::WaveRunId))
                .col(big_integer(Decision::SubscriberId))
                .col(string(Decision::Reason))
                .to_owned(),
        )
        .await?;
        unique(
            m,
            "ux_decision",
            Decision::Table,
            &[Decision::WaveRunId, Decision::SubscriberId],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Timer::Table)
                .if_not_exists()
                .col(big_pk_auto(Timer::Id))
                .col(string(Timer::Kind))
                .col(big_integer(Timer::WaveRunId))
                .col(big_integer(Timer::FireAt))
                .col(string(Timer::State))
                .to_owned(),
        )
        .await?;
        unique(
            m,
            "ux_timer",
            Timer::Table,
            &[Timer::Kind, Timer::WaveRunId],
        )
        .await?;
        index(
            m,
            "ix_timer_due",
            Timer::Table,
            &[Timer::State, Timer::FireAt],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Inbound::Table)
                .if_not_exists()
                .col(big_pk_auto(Inbound::Id))
                .col(string(Inbound::Source))
                .col(string_null(Inbound::IdemKey))
                .col(string_null(Inbound::Msisdn))
                .col(string(Inbound::Kind))
                .col(string_null(Inbound::Value))
                .col(text(Inbound::Payload))
                .col(big_integer(Inbound::ReceivedAt))
                .col(boolean(Inbound::Processed))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_inbound_processed",
            Inbound::Table,
            &[Inbound::Processed, Inbound::Id],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Response::Table)
                .if_not_exists()
                .col(big_pk_auto(Response::Id))
                .col(big_integer(Response::ContactId))
                .col(big_integer(Response::RunId))
                .col(big_integer(Response::WaveRunId))
                .col(big_integer(Response::SubscriberId))
                .col(string(Response::Arm))
                .col(string(Response::Kind))
                .col(string_null(Response::Value))
                .col(big_integer(Response::At))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_response_run",
            Response::Table,
            &[Response::RunId, Response::Kind],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(AgentTask::Table)
                .if_not_exists()
                .col(big_pk_auto(AgentTask::Id))
                .col(big_integer(AgentTask::ContactId))
                .col(string(AgentTask::Team))
                .col(string(AgentTask::Kind))
                .col(big_integer(AgentTask::SubscriberId))
                .col(text(AgentTask::Script))
                .col(string(AgentTask::State))
                .col(string_null(AgentTask::Outcome))
                .col(string_null(AgentTask::Agent))
                .col(big_integer(AgentTask::CreatedAt))
                .col(big_integer(AgentTask::UpdatedAt))
                .to_owned(),
        )
        .await?;
        unique(
            m,
            "ux_agent_task_contact",
            AgentTask::Table,
            &[AgentTask::ContactId],
        )
        .await?;
        index(
            m,
            "ix_agent_task_team",
            AgentTask::Table,
            &[AgentTask::Team, AgentTask::State],
        )
        .await?;
        Ok(())
    }
}

async fn unique<T: IntoIden + Copy + 'static, C: IntoIden + Copy + 'static>(
    m: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: &[C],
) -> Result<(), DbErr> {
    create_index(m, name, table, cols, true).await
}

async fn index<T: IntoIden + Copy + 'static, C: IntoIden + Copy + 'static>(
    m: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: &[C],
) -> Result<(), DbErr> {
    create_index(m, name, table, cols, false).await
}

async fn create_index<T: IntoIden + Copy + 'static, C: IntoIden + Copy + 'static>(
    m: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: &[C],
    is_unique: bool,
) -> Result<(), DbErr> {
    let mut idx = Index::create();
    idx.name(name).table(table).if_not_exists();
    if is_unique {
        idx.unique();
    }
    for c in cols {
        idx.col(*c);
    }
    m.create_index(idx.to_owned()).await
}
