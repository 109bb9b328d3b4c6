use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// `channel: preferred` waves: a subscriber may get two contacts in one wave, the first on
/// their first-choice channel and, when that one ends unreached, a fallback on the second.
///
/// - `choice`: `first` or `second` (`domain::Choice`). Every earlier contact is a first.
/// - `slot`: the subscriber's usual slot (`HH:MM-HH:MM`, their time zone) on the contact's
///   channel; the dispatcher sends inside it. NULL: any time quiet hours allow.
/// - `fallback_channel`, `fallback_slot`: on a first contact, the second choice the planner
///   decided, so the transaction that settles the first as unreached writes the second
///   from stored data only (no workflow, no clock of the planner's). NULL: no fallback.
/// - `at_most_once`: the wave's delivery, which the fallback's queue row inherits (the
///   queue row of the first is gone by then).
///
/// "Never contacted twice for the same wave" becomes "at most once per choice": the unique
/// index over (wave run, subscriber) is replaced by one over (wave run, subscriber, choice).
/// The new index is created before the old one is dropped, so the rule holds throughout.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Contact {
    Table,
    WaveRunId,
    SubscriberId,
    Choice,
    Slot,
    FallbackChannel,
    FallbackSlot,
    AtMostOnce,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for col in [
            string(Contact::Choice).default("first").to_owned(),
            text_null(Contact::Slot),
            string_null(Contact::FallbackChannel),
            text_null(Contact::FallbackSlot),
            boolean(Contact::AtMostOnce).default(false).to_owned(),
        ] {
            m.alter_table(
                Table::alter()
                    .table(Contact::Table)
                    .add_column_if_not_exists(col)
                    .to_owned(),
            )
            .await?;
        }
        m.create_index(
            Index::create()
                .name("ux_contact_wave_subscriber_choice")
                .table(Contact::Table)
                .col(Contact::WaveRunId)
                .col(Contact::SubscriberId)
                .col(Contact::Choice)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("ux_contact_wave_subscriber")
                .table(Contact::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}
