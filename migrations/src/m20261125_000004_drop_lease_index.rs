use sea_orm_migration::prelude::*;

/// Claimed rows are read back by primary key, so the lease-token index only cost writes:
/// claim and settle change indexed columns, so every index on `contact` is rewritten on
/// both (measured with crates/bench on PostgreSQL).
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Contact {
    Table,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_contact_lease")
                .table(Contact::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}
