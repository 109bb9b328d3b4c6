use sea_orm_migration::prelude::*;

/// The claim orders due contacts by (due_at, id); an index ending in `id` lets PostgreSQL
/// read the first batch in order instead of sorting every pending row each round (measured by
/// crates/bench: 62 ms → ~1 ms per 1000-row claim at 100k pending). It replaces the
/// narrower claim index.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Contact {
    Table,
    State,
    Channel,
    DueAt,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ix_contact_claim_order")
                .table(Contact::Table)
                .col(Contact::State)
                .col(Contact::Channel)
                .col(Contact::DueAt)
                .col(Contact::Id)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("ix_contact_claim")
                .table(Contact::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}
