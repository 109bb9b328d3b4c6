use sea_orm_migration::prelude::*;

/// One event is stored once: the same subscriber, type, time, value and detail is the same
/// event, whether it came from an import (a file imported twice) or `POST /events` (a
/// retried request). A unique index says so; the store inserts with `ON CONFLICT DO NOTHING`
/// and counts what was already there.
///
/// `value` and `detail` may be NULL, and a unique index lets NULLs repeat, so the index holds
/// whether each is NULL and its value with NULL replaced (a NULL value and a 0 differ by the
/// first). Copies stored before this migration are deleted first, keeping the lowest id (the
/// first recorded). The index starts with (subscriber_id, type, at), so it also serves what
/// `ix_subscriber_event_subscriber` served, which is dropped to keep one index to write.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let c = m.get_connection();
        // Null-safe comparison written the same on both backends (SQLite's `IS`,
        // PostgreSQL's `IS NOT DISTINCT FROM`).
        let same = |col: &str| {
            format!(
                "(o.{col} = subscriber_event.{col} OR (o.{col} IS NULL AND subscriber_event.{col} IS NULL))"
            )
        };
        c.execute_unprepared(&format!(
            "DELETE FROM subscriber_event WHERE EXISTS (SELECT 1 FROM subscriber_event o \
             WHERE o.subscriber_id = subscriber_event.subscriber_id AND o.type = subscriber_event.type \
             AND o.at = subscriber_event.at AND {} AND {} AND o.id < subscriber_event.id)",
            same("value"),
            same("detail")
        ))
        .await?;
        c.execute_unprepared(
            "CREATE UNIQUE INDEX IF NOT EXISTS ux_subscriber_event_same ON subscriber_event \
             (subscriber_id, type, at, (value IS NULL), COALESCE(value, 0), (detail IS NULL), COALESCE(detail, ''))",
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("ix_subscriber_event_subscriber")
                .table(Alias::new("subscriber_event"))
                .if_exists()
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
