use sea_orm_migration::prelude::*;

/// Churn-warning monitors: one row per alert episode (a subscriber's alert from the
/// evaluation that opened it to the one that closed it), and one per evaluated slot, so a
/// slot is evaluated once however many replicas see it (`store::alerts`).
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum AlertEpisode {
    Table,
    Id,
    Monitor,
    SubscriberId,
    /// The subscriber id while the episode is open, NULL once closed: unique per monitor,
    /// so a subscriber has at most one open episode per monitor (NULLs never collide).
    OpenKey,
    Level,
    /// The level's position in the monitor's list, 0 = lowest.
    LevelRank,
    Score,
    /// The signals raised at the last change, comma-separated.
    Signals,
    /// The staff id the alert is assigned to.
    Owner,
    State,
    OpenedAt,
    UpdatedAt,
    ClosedAt,
    CloseReason,
    /// The level rank the owner was last told about; -1 before the first digest.
    NotifiedRank,
    Outcome,
    OutcomeBy,
    OutcomeAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum MonitorEval {
    Table,
    Monitor,
    SlotAt,
    EvaluatedAt,
    Watched,
    Opened,
    Escalated,
    Closed,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(AlertEpisode::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(AlertEpisode::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(ColumnDef::new(AlertEpisode::Monitor).string().not_null())
                .col(
                    ColumnDef::new(AlertEpisode::SubscriberId)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(AlertEpisode::OpenKey).big_integer().null())
                .col(ColumnDef::new(AlertEpisode::Level).string().not_null())
                .col(ColumnDef::new(AlertEpisode::LevelRank).integer().not_null())
                .col(ColumnDef::new(AlertEpisode::Score).integer().not_null())
                .col(ColumnDef::new(AlertEpisode::Signals).text().not_null())
                .col(ColumnDef::new(AlertEpisode::Owner).string().not_null())
                .col(ColumnDef::new(AlertEpisode::State).string().not_null())
                .col(
                    ColumnDef::new(AlertEpisode::OpenedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(AlertEpisode::UpdatedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(AlertEpisode::ClosedAt).big_integer().null())
                .col(ColumnDef::new(AlertEpisode::CloseReason).string().null())
                .col(
                    ColumnDef::new(AlertEpisode::NotifiedRank)
                        .integer()
                        .not_null(),
                )
                .col(ColumnDef::new(AlertEpisode::Outcome).string().null())
                .col(ColumnDef::new(AlertEpisode::OutcomeBy).string().null())
                .col(ColumnDef::new(AlertEpisode::OutcomeAt).big_integer().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_alert_episode_open")
                .table(AlertEpisode::Table)
                .col(AlertEpisode::Monitor)
                .col(AlertEpisode::OpenKey)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_alert_episode_owner")
                .table(AlertEpisode::Table)
                .col(AlertEpisode::Owner)
                .col(AlertEpisode::State)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_alert_episode_subscriber")
                .table(AlertEpisode::Table)
                .col(AlertEpisode::SubscriberId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(MonitorEval::Table)
                .if_not_exists()
                .col(ColumnDef::new(MonitorEval::Monitor).string().not_null())
                .col(ColumnDef::new(MonitorEval::SlotAt).big_integer().not_null())
                .col(
                    ColumnDef::new(MonitorEval::EvaluatedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(MonitorEval::Watched)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(MonitorEval::Opened).big_integer().not_null())
                .col(
                    ColumnDef::new(MonitorEval::Escalated)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(MonitorEval::Closed).big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(MonitorEval::Monitor)
                        .col(MonitorEval::SlotAt),
                )
                .to_owned(),
        )
        .await
    }
}
