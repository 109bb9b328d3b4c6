//! The audit log: who imported, triggered, approved, changed consent, recorded an outcome or
//! read subscriber details. Append-only: this module offers an insert and reads, nothing that
//! updates or deletes a row.

use sea_orm::{ConnectionTrait, FromQueryResult};

use crate::{Millis, Result, Store, exec, query};

/// Actions recorded.
pub mod action {
    pub const IMPORT: &str = "import";
    pub const LOAD: &str = "load";
    pub const TRIGGER: &str = "trigger";
    pub const APPROVE: &str = "approve";
    pub const CONSENT: &str = "consent";
    pub const OUTCOME: &str = "outcome";
    /// Tasks taken from a call-centre queue (`POST /tasks/next`, dialer batches).
    pub const TAKE_TASKS: &str = "take_tasks";
    /// A task put back for a `call back later` time.
    pub const CALLBACK: &str = "callback";
    pub const READ_TASKS: &str = "read_tasks";
    pub const READ_ALERTS: &str = "read_alerts";
    pub const READ_REPORT: &str = "read_report";
    pub const TOKEN_CREATE: &str = "token_create";
    pub const TOKEN_REVOKE: &str = "token_revoke";
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub principal: String,
    pub action: String,
    pub subject: String,
    pub detail: Option<String>,
}

/// Appends one entry inside the caller's transaction (so the entry and the change it records
/// commit together).
pub async fn record<C: ConnectionTrait>(
    c: &C,
    at: Millis,
    principal: &str,
    action: &str,
    subject: &str,
    detail: Option<&str>,
) -> Result<()> {
    exec(
        c,
        "INSERT INTO audit_log (at, principal, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        [
            at.into(),
            principal.into(),
            action.into(),
            subject.into(),
            detail.map(str::to_owned).into(),
        ],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Appends one entry.
    pub async fn audit(
        &self,
        at: Millis,
        principal: &str,
        action: &str,
        subject: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        record(self.db(), at, principal, action, subject, detail).await
    }

    /// Entries at or after `since`, oldest first.
    pub async fn audit_since(&self, since: Millis) -> Result<Vec<AuditRow>> {
        let rows = query(
            self.db(),
            "SELECT id, at, principal, action, subject, detail FROM audit_log WHERE at >= ? ORDER BY id",
            [since.into()],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(AuditRow::from_query_result(r, "")?))
            .collect()
    }
}
