use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Consent as its own record: every opt-out, opt-in, do-not-disturb on or off, with its source
/// (import, sms_reply, api, cli), time, principal and reason. Append-only: the current state
/// of (subscriber, kind) is its newest row. `subscriber.opt_out` and
/// `subscriber.do_not_disturb` stay as caches of that state for the planner's SQL and the
/// send-time check; the store writes a change and its cache in one transaction.
///
/// Subscribers already opted out (or on do-not-disturb) get a `backfill` row, so the cache
/// and the record agree from the first run of this migration on.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum ConsentChange {
    Table,
    Id,
    SubscriberId,
    Kind,
    State,
    Source,
    At,
    Principal,
    Reason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ConsentChange::Table)
                .if_not_exists()
                .col(big_pk_auto(ConsentChange::Id))
                .col(big_integer(ConsentChange::SubscriberId))
                .col(string(ConsentChange::Kind))
                .col(boolean(ConsentChange::State))
                .col(string(ConsentChange::Source))
                .col(big_integer(ConsentChange::At))
                .col(string(ConsentChange::Principal))
                .col(string_null(ConsentChange::Reason))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_consent_change_subscriber")
                .table(ConsentChange::Table)
                .col(ConsentChange::SubscriberId)
                .col(ConsentChange::Kind)
                .col(ConsentChange::Id)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        let c = m.get_connection();
        for (kind, column) in [("opt_out", "opt_out"), ("dnd", "do_not_disturb")] {
            c.execute_unprepared(&format!(
                "INSERT INTO consent_change (subscriber_id, kind, state, source, at, principal, reason) \
                 SELECT id, '{kind}', {column}, 'backfill', updated_at, 'migration', 'state before consent records' \
                 FROM subscriber WHERE {column}"
            ))
            .await?;
        }
        Ok(())
    }
}
