use sea_orm_migration::prelude::*;

/// Delivery reports by the contact's key: before sending a contact again (after a crash left
/// it in doubt, or after a timeout), the dispatcher asks whether the gateway already reported
/// on it, which proves the gateway took it. Without the index that question reads the whole
/// inbound log.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Inbound {
    Table,
    IdemKey,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ix_inbound_idem_key")
                .table(Inbound::Table)
                .col(Inbound::IdemKey)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }
}
