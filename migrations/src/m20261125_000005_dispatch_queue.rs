use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Moves the work queue out of `contact` into a narrow `dispatch` table: one row per contact
/// still to be sent, holding the claim's lease and attempt. Measured with crates/bench on
/// PostgreSQL, where claim and settle were the cost: both changed indexed columns of the wide
/// `contact` row (`state` in the claim index, `sent_at` in the subscriber index), so neither
/// could be a HOT update and each rewrote all five of its indexes. Now the claim changes only
/// unindexed lease columns of a narrow row (HOT, with room left on each page), and settling
/// deletes that row and updates `contact` once, on columns no index covers.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Dispatch {
    Table,
    ContactId,
    Channel,
    DueAt,
    SendBy,
    Attempt,
    LeaseUntil,
    LeaseToken,
}

#[derive(DeriveIden, Clone, Copy)]
enum Contact {
    Table,
    Id,
    SubscriberId,
    LeaseUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Dispatch::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Dispatch::ContactId)
                        .big_integer()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Dispatch::Channel).string().not_null())
                .col(ColumnDef::new(Dispatch::DueAt).big_integer().not_null())
                .col(ColumnDef::new(Dispatch::SendBy).big_integer().null())
                .col(
                    ColumnDef::new(Dispatch::Attempt)
                        .integer()
                        .not_null()
                        .default(0),
                )
                .col(ColumnDef::new(Dispatch::LeaseUntil).big_integer().null())
                .col(ColumnDef::new(Dispatch::LeaseToken).string().null())
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_dispatch_contact")
                        .from(Dispatch::Table, Dispatch::ContactId)
                        .to(Contact::Table, Contact::Id),
                )
                .to_owned(),
        )
        .await?;
        // The claim walks this index in due order; the lease columns stay out of it so that
        // taking and releasing a lease never touches an index.
        m.create_index(
            Index::create()
                .name("ix_dispatch_claim")
                .table(Dispatch::Table)
                .col(Dispatch::Channel)
                .col(Dispatch::DueAt)
                .col(Dispatch::ContactId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        // Housekeeping expires overdue rows by this index instead of scanning the queue
        // (24 ms per pass at 200k queued on PostgreSQL). `send_by` never changes once
        // queued, so the index costs the claim nothing.
        m.create_index(
            Index::create()
                .name("ix_dispatch_send_by")
                .table(Dispatch::Table)
                .col(Dispatch::SendBy)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        let db = m.get_connection();
        // Work in flight when the daemon was upgraded keeps its lease and attempt.
        db.execute_unprepared(
            "INSERT INTO dispatch (contact_id, channel, due_at, send_by, attempt, lease_until, lease_token) \
             SELECT id, channel, due_at, send_by, attempt, lease_until, lease_token FROM contact \
             WHERE state IN ('pending', 'sending')",
        )
        .await?;
        db.execute_unprepared("UPDATE contact SET state = 'pending' WHERE state = 'sending'")
            .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            // Room on each page for a new version of EVERY row on it: a claim or a settle
            // updates ~1000 neighbouring rows in one transaction, and versions it created
            // cannot be pruned before it commits. With that room the updates stay on the page
            // (HOT) and skip the indexes. A leased queue row grows by its token, hence 30;
            // measured with crates/bench (200k): dispatch 85% HOT at 40, 100% at 30; contact
            // 32% at 70, 94% at 45. The price is disk: the queue is empty after each wave,
            // and contact takes about twice the pages. Applies to pages written from now on.
            db.execute_unprepared("ALTER TABLE dispatch SET (fillfactor = 30)")
                .await?;
            db.execute_unprepared("ALTER TABLE contact SET (fillfactor = 45)")
                .await?;
        }

        for name in ["ix_contact_claim_order", "ix_contact_subscriber"] {
            m.drop_index(
                Index::drop()
                    .name(name)
                    .table(Contact::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        }
        // Contacts are looked up by subscriber only; `sent_at` in this index made every
        // settle rewrite it.
        m.create_index(
            Index::create()
                .name("ix_contact_subscriber_id")
                .table(Contact::Table)
                .col(Contact::SubscriberId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Contact::Table)
                .drop_column(Contact::LeaseUntil)
                .to_owned(),
        )
        .await
    }
}
