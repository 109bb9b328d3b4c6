use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// The per-subscriber event log: orders, top-ups, complaints, brand changes, port-out, churn,
/// activations, first calls, campus-cell sightings, fed by `POST /events` and by import. Kept
/// whether or not the subscriber is in a campaign: the rows are data for targeting and
/// monitors, not only responses (those stay `inbound` rows, attributed by tracking).
///
/// `at` is when the event happened, `received_at` when campaignd stored it (both Unix ms);
/// `value` is a number when the event has one (a top-up amount), `detail` the event's text
/// (an offer or product id, bounded by the store). `source` is `api` or `import`.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum SubscriberEvent {
    Table,
    Id,
    SubscriberId,
    Type,
    At,
    Value,
    Detail,
    Source,
    ReceivedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SubscriberEvent::Table)
                .if_not_exists()
                .col(big_pk_auto(SubscriberEvent::Id))
                .col(big_integer(SubscriberEvent::SubscriberId))
                .col(string(SubscriberEvent::Type))
                .col(big_integer(SubscriberEvent::At))
                .col(double_null(SubscriberEvent::Value))
                .col(string_null(SubscriberEvent::Detail))
                .col(string(SubscriberEvent::Source))
                .col(big_integer(SubscriberEvent::ReceivedAt))
                .to_owned(),
        )
        .await?;
        // A subscriber's events of a type since a time: derived attributes
        // (`bill_queries_30d`), a subscriber's history.
        m.create_index(
            Index::create()
                .name("ix_subscriber_event_subscriber")
                .table(SubscriberEvent::Table)
                .col(SubscriberEvent::SubscriberId)
                .col(SubscriberEvent::Type)
                .col(SubscriberEvent::At)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        // Everyone with an event of a type since a time: targeting and monitors.
        m.create_index(
            Index::create()
                .name("ix_subscriber_event_type")
                .table(SubscriberEvent::Table)
                .col(SubscriberEvent::Type)
                .col(SubscriberEvent::At)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
