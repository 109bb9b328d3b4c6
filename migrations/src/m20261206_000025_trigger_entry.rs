use sea_orm_migration::prelude::*;

/// Triggered entry (`trigger:` in a workflow): one row per subscriber a slot's gather let
/// into a run, on an event of theirs or on a condition that became true (`store::triggers`).
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum TriggerEntry {
    Table,
    Id,
    Campaign,
    RunId,
    SubscriberId,
    /// The `subscriber_event` that let them in (event triggers); unique per campaign, so an
    /// event enters its subscriber once however many gathers see it.
    EventId,
    /// The subscriber id while a condition episode is open, NULL once it closed: unique per
    /// campaign, so a subscriber has at most one open episode (NULLs never collide).
    OpenKey,
    EnteredAt,
    ClosedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(TriggerEntry::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(TriggerEntry::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(ColumnDef::new(TriggerEntry::Campaign).string().not_null())
                .col(ColumnDef::new(TriggerEntry::RunId).big_integer().not_null())
                .col(
                    ColumnDef::new(TriggerEntry::SubscriberId)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(TriggerEntry::EventId).big_integer().null())
                .col(ColumnDef::new(TriggerEntry::OpenKey).big_integer().null())
                .col(
                    ColumnDef::new(TriggerEntry::EnteredAt)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(TriggerEntry::ClosedAt).big_integer().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_trigger_entry_event")
                .table(TriggerEntry::Table)
                .col(TriggerEntry::Campaign)
                .col(TriggerEntry::EventId)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_trigger_entry_open")
                .table(TriggerEntry::Table)
                .col(TriggerEntry::Campaign)
                .col(TriggerEntry::OpenKey)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        // A run's entrants: what its first wave plans over.
        m.create_index(
            Index::create()
                .name("ix_trigger_entry_run")
                .table(TriggerEntry::Table)
                .col(TriggerEntry::RunId)
                .col(TriggerEntry::SubscriberId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
