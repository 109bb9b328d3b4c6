use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Staff e-mail (run reports, digests) as queued rows, sent by a leased, settled loop like
/// the `dispatch` queue: the row is written in the transaction that decides the mail is due
/// (a run's finish), so a crash neither loses it nor, through the unique `dedup_key`, queues
/// it twice. `recipients` holds one address per line.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum MailOutbox {
    Table,
    Id,
    Kind,
    DedupKey,
    Recipients,
    Subject,
    Text,
    Html,
    State,
    CreatedAt,
    DueAt,
    Attempt,
    LeaseUntil,
    LeaseToken,
    SentAt,
    LastError,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(MailOutbox::Table)
                .if_not_exists()
                .col(big_pk_auto(MailOutbox::Id))
                .col(string(MailOutbox::Kind))
                .col(string(MailOutbox::DedupKey))
                .col(text(MailOutbox::Recipients))
                .col(text(MailOutbox::Subject))
                .col(text(MailOutbox::Text))
                .col(text_null(MailOutbox::Html))
                .col(string(MailOutbox::State))
                .col(big_integer(MailOutbox::CreatedAt))
                .col(big_integer(MailOutbox::DueAt))
                .col(integer(MailOutbox::Attempt).default(0))
                .col(big_integer_null(MailOutbox::LeaseUntil))
                .col(string_null(MailOutbox::LeaseToken))
                .col(big_integer_null(MailOutbox::SentAt))
                .col(text_null(MailOutbox::LastError))
                .to_owned(),
        )
        .await?;
        // Queueing the same mail twice (a repeated finish, two replicas) adds nothing.
        m.create_index(
            Index::create()
                .name("ux_mail_outbox_dedup")
                .table(MailOutbox::Table)
                .col(MailOutbox::DedupKey)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        // The claim walks queued rows in due order.
        m.create_index(
            Index::create()
                .name("ix_mail_outbox_claim")
                .table(MailOutbox::Table)
                .col(MailOutbox::State)
                .col(MailOutbox::DueAt)
                .col(MailOutbox::Id)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(MailOutbox::Table).to_owned())
            .await
    }
}
