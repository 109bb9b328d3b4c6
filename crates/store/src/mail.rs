//! The staff mail queue (`mail_outbox`, migration 16): run reports and digests are rows,
//! written in the transaction that makes them due, then claimed (one statement, leased),
//! sent with no transaction open and settled with the lease token, as the `dispatch` queue
//! is. A crash before the send leaves the row queued; a crash between the SMTP server's
//! accept and the settle sends that one mail again once the lease runs out (the
//! `Message-ID` the engine derives from the dedup key lets a receiver see the repeat).

use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait};

use crate::{Millis, Result, Store, exec, query};

/// What a mail is; stored in `mail_outbox.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// A finished run's evaluation report.
    Report,
    /// A periodic summary.
    Digest,
    /// An operational alert to the platform team (a gateway that refused campaignd).
    Alert,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Report => "report",
            MailKind::Digest => "digest",
            MailKind::Alert => "alert",
        }
    }
}

/// Where a queued mail is; stored in `mail_outbox.state`. A row being sent is `queued` with
/// a live lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailState {
    Queued,
    Sent,
    /// Refused for good (bad address, SMTP 5xx) or out of retries.
    Failed,
}

impl MailState {
    pub fn as_str(self) -> &'static str {
        match self {
            MailState::Queued => "queued",
            MailState::Sent => "sent",
            MailState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<MailState> {
        [MailState::Queued, MailState::Sent, MailState::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The dedup key of a run's report mail: queueing it again (a repeated finish) adds nothing.
pub fn report_dedup_key(run_id: i64) -> String {
    format!("report:run:{run_id}")
}

/// The dedup key of a staff digest: one per `person` per interval of `every_ms` (counted
/// from the Unix epoch) for one `source` of news (`monitor:<id>`, `tasks`). Whatever
/// queues a digest (a monitor's evaluation, the task step) builds its key here, so a
/// repeated or concurrent pass in the same interval queues nothing more.
pub fn digest_dedup_key(source: &str, person: &str, now: Millis, every_ms: Millis) -> String {
    format!(
        "digest:{source}:{person}:{}",
        now.div_euclid(every_ms.max(1))
    )
}

/// A mail to queue.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub kind: MailKind,
    /// Unique: a second mail with the same key is not queued.
    pub dedup_key: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub due_at: Millis,
}

/// A stored mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailRow {
    pub id: i64,
    pub kind: String,
    pub dedup_key: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub state: MailState,
    pub created_at: Millis,
    pub due_at: Millis,
    /// Claims so far (the one in hand included).
    pub attempt: i32,
    pub sent_at: Option<Millis>,
    pub last_error: Option<String>,
}

#[derive(FromQueryResult)]
struct RawMail {
    id: i64,
    kind: String,
    dedup_key: String,
    recipients: String,
    subject: String,
    text: String,
    html: Option<String>,
    state: String,
    created_at: i64,
    due_at: i64,
    attempt: i32,
    sent_at: Option<i64>,
    last_error: Option<String>,
}

const COLS: &str = "id, kind, dedup_key, recipients, subject, text, html, state, created_at, \
                    due_at, attempt, sent_at, last_error";

impl TryFrom<RawMail> for MailRow {
    type Error = crate::StoreError;

    fn try_from(r: RawMail) -> Result<MailRow> {
        let state = MailState::parse(&r.state).ok_or_else(|| {
            crate::StoreError::Invalid(format!("mail {}: unknown state `{}`", r.id, r.state))
        })?;
        Ok(MailRow {
            id: r.id,
            kind: r.kind,
            dedup_key: r.dedup_key,
            // One address per line: an address cannot hold a line break.
            recipients: r.recipients.lines().map(str::to_owned).collect(),
            subject: r.subject,
            text: r.text,
            html: r.html,
            state,
            created_at: r.created_at,
            due_at: r.due_at,
            attempt: r.attempt,
            sent_at: r.sent_at,
            last_error: r.last_error,
        })
    }
}

fn rows(found: Vec<sea_orm::QueryResult>) -> Result<Vec<MailRow>> {
    found
        .iter()
        .map(|r| MailRow::try_from(RawMail::from_query_result(r, "")?))
        .collect()
}

/// What became of a claimed mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOutcome {
    /// The server accepted it.
    Sent { at: Millis },
    /// Try again at `due_at` (a transient error).
    Retry { due_at: Millis, error: String },
    /// Never try again.
    Failed { error: String },
}

/// Queues `mail` inside the caller's transaction; false when a mail with its dedup key is
/// already queued (or was sent).
pub async fn enqueue_mail_in<C: ConnectionTrait>(
    c: &C,
    mail: &NewMail,
    now: Millis,
) -> Result<bool> {
    if mail.recipients.iter().any(|a| a.contains(['\n', '\r'])) {
        return Err(crate::StoreError::Invalid(
            "an e-mail address cannot contain a line break".into(),
        ));
    }
    let res = exec(
        c,
        "INSERT INTO mail_outbox (kind, dedup_key, recipients, subject, text, html, state, created_at, due_at, attempt) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (dedup_key) DO NOTHING",
        [
            mail.kind.as_str().into(),
            mail.dedup_key.as_str().into(),
            mail.recipients.join("\n").into(),
            mail.subject.as_str().into(),
            mail.text.as_str().into(),
            mail.html.clone().into(),
            MailState::Queued.as_str().into(),
            now.into(),
            mail.due_at.into(),
        ],
    )
    .await?;
    Ok(res.rows_affected() == 1)
}

impl Store {
    /// Queues a mail on its own; false when its dedup key is already there.
    pub async fn enqueue_mail(&self, mail: &NewMail, now: Millis) -> Result<bool> {
        enqueue_mail_in(self.db(), mail, now).await
    }

    /// [`Store::finish_run_as_of`] that also queues `mail` (the run's report mail) in the
    /// same transaction: the mail exists exactly when the run is finished, so a crash after
    /// the finish cannot lose it. Nothing is queued when the run was not active.
    /// `report_due_at`: when a provisional report is to be built again (see
    /// [`Store::due_reports`]); `None` when the report is final.
    pub async fn finish_run_with_mail(
        &self,
        run_id: i64,
        report_json: &str,
        response_seq: i64,
        now: Millis,
        mail: Option<&NewMail>,
        report_due_at: Option<Millis>,
    ) -> Result<bool> {
        let tx = self.db().begin().await?;
        let finished =
            crate::runs::finish_run_in(&tx, run_id, report_json, response_seq, now, report_due_at)
                .await?;
        if finished && let Some(mail) = mail {
            enqueue_mail_in(&tx, mail, now).await?;
        }
        tx.commit().await?;
        Ok(finished)
    }

    /// Claims up to `limit` due mails in ONE statement with `token` until `lease_until`
    /// (PostgreSQL skips rows another replica holds; SQLite has one writer). A row whose
    /// lease ran out is due again: its worker died or stalled, and its token settles nothing.
    pub async fn claim_mail(
        &self,
        token: &str,
        now: Millis,
        lease_until: Millis,
        limit: u64,
    ) -> Result<Vec<MailRow>> {
        let lock = if self.is_postgres() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE mail_outbox SET attempt = attempt + 1, lease_until = ?, lease_token = ? \
             WHERE id IN (SELECT id FROM mail_outbox WHERE state = ? AND due_at <= ? \
             AND (lease_until IS NULL OR lease_until < ?) ORDER BY due_at, id LIMIT ?{lock}) \
             RETURNING {COLS}"
        );
        let found = query(
            self.db(),
            &sql,
            [
                lease_until.into(),
                token.into(),
                MailState::Queued.as_str().into(),
                now.into(),
                now.into(),
                (limit as i64).into(),
            ],
        )
        .await?;
        let mut claimed = rows(found)?;
        claimed.sort_by_key(|m| (m.due_at, m.id));
        Ok(claimed)
    }

    /// Records what became of a claimed mail; false (and nothing changes) when `token` no
    /// longer holds it (its lease ran out and another worker claimed it, or it was settled).
    pub async fn settle_mail(&self, id: i64, token: &str, outcome: &MailOutcome) -> Result<bool> {
        const HELD: &str = "id = ? AND lease_token = ? AND state = 'queued'";
        let res = match outcome {
            MailOutcome::Sent { at } => {
                exec(
                    self.db(),
                    &format!("UPDATE mail_outbox SET state = ?, sent_at = ?, lease_until = NULL, lease_token = NULL WHERE {HELD}"),
                    [MailState::Sent.as_str().into(), (*at).into(), id.into(), token.into()],
                )
                .await?
            }
            MailOutcome::Retry { due_at, error } => {
                exec(
                    self.db(),
                    &format!("UPDATE mail_outbox SET due_at = ?, last_error = ?, lease_until = NULL, lease_token = NULL WHERE {HELD}"),
                    [(*due_at).into(), error.as_str().into(), id.into(), token.into()],
                )
                .await?
            }
            MailOutcome::Failed { error } => {
                exec(
                    self.db(),
                    &format!("UPDATE mail_outbox SET state = ?, last_error = ?, lease_until = NULL, lease_token = NULL WHERE {HELD}"),
                    [MailState::Failed.as_str().into(), error.as_str().into(), id.into(), token.into()],
                )
                .await?
            }
        };
        Ok(res.rows_affected() == 1)
    }

    /// The mail queued under `dedup_key`, if any.
    pub async fn mail_by_key(&self, dedup_key: &str) -> Result<Option<MailRow>> {
        let found = query(
            self.db(),
            &format!("SELECT {COLS} FROM mail_outbox WHERE dedup_key = ?"),
            [dedup_key.into()],
        )
        .await?;
        Ok(rows(found)?.into_iter().next())
    }

    /// Every stored mail, oldest first (for tests and inspection; the queue stays small:
    /// one row per finished run and digest).
    pub async fn mails(&self) -> Result<Vec<MailRow>> {
        let found = query(
            self.db(),
            &format!("SELECT {COLS} FROM mail_outbox ORDER BY id"),
            [],
        )
        .await?;
        rows(found)
    }
}
