use sea_orm_migration::prelude::*;

/// A business event is stored for attribution once. `POST /events` gives each event's
/// `inbound` row a key made of what makes it the same event (number, type, time, value:
/// `store::events::event_key`, `event:` and a SHA-256), in the `idem_key` column other
/// callbacks key by (migration 17), and this unique index, over event rows only, holds it:
/// a retried request adds no second row, and the store says how many were already there.
/// DLRs keep sharing their contact's key (one contact, several reports), so the index is
/// partial. Event rows stored before this migration have no key (NULL, which a unique index
/// lets repeat) and stay as they are.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // A partial index, written the same on both backends.
        m.get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS ux_inbound_event_key ON inbound (idem_key) \
                 WHERE source = 'event'",
            )
            .await?;
        Ok(())
    }
}
