use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Leases for work that one replica at a time must do (attribution of inbound events).
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum SingletonLease {
    Table,
    Name,
    Holder,
    Until,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SingletonLease::Table)
                .if_not_exists()
                .col(string(SingletonLease::Name).primary_key())
                .col(string(SingletonLease::Holder))
                .col(big_integer(SingletonLease::Until))
                .to_owned(),
        )
        .await
    }
}
