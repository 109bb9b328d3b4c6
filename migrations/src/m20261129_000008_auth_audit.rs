use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Principals, approvals and the audit log.
///
/// - `api_token`: one row per principal; only the SHA-256 of its token is kept, so a copy of
///   the database does not hand out working tokens. Revoked rows stay (who had access when).
/// - `workflow_version.loaded_by` / `approved_by` / `approved_at`: four eyes on every new
///   version; the approver must not be the principal who loaded it.
/// - `audit_log`: append-only; the store offers no update or delete on it.
/// - `app_secret`: secrets the embedded demo generates once per database (the DLR signing
///   secret); a production daemon takes its secrets from the environment instead.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum ApiToken {
    Table,
    Id,
    Name,
    Role,
    Team,
    TokenHash,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum WorkflowVersion {
    Table,
    LoadedBy,
    ApprovedBy,
    ApprovedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum AuditLog {
    Table,
    Id,
    At,
    Principal,
    Action,
    Subject,
    Detail,
}

#[derive(DeriveIden, Clone, Copy)]
enum AppSecret {
    Table,
    Name,
    Value,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ApiToken::Table)
                .if_not_exists()
                .col(big_pk_auto(ApiToken::Id))
                .col(string(ApiToken::Name))
                .col(string(ApiToken::Role))
                .col(string_null(ApiToken::Team))
                .col(string(ApiToken::TokenHash))
                .col(big_integer(ApiToken::CreatedAt))
                .col(big_integer_null(ApiToken::RevokedAt))
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("ux_api_token_name", ApiToken::Name),
            ("ux_api_token_hash", ApiToken::TokenHash),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table(ApiToken::Table)
                    .col(col)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        }
        // SQLite alters one column per statement.
        for col in [WorkflowVersion::LoadedBy, WorkflowVersion::ApprovedBy] {
            m.alter_table(
                Table::alter()
                    .table(WorkflowVersion::Table)
                    .add_column_if_not_exists(string_null(col))
                    .to_owned(),
            )
            .await?;
        }
        m.alter_table(
            Table::alter()
                .table(WorkflowVersion::Table)
                .add_column_if_not_exists(big_integer_null(WorkflowVersion::ApprovedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AuditLog::Table)
                .if_not_exists()
                .col(big_pk_auto(AuditLog::Id))
                .col(big_integer(AuditLog::At))
                .col(string(AuditLog::Principal))
                .col(string(AuditLog::Action))
                .col(string(AuditLog::Subject))
                .col(text_null(AuditLog::Detail))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_audit_log_at")
                .table(AuditLog::Table)
                .col(AuditLog::At)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AppSecret::Table)
                .if_not_exists()
                .col(string(AppSecret::Name).primary_key())
                .col(text(AppSecret::Value))
                .to_owned(),
        )
        .await
    }
}
