//! The subscriber base: bulk insert and lookups, and consent (opt-out and do-not-disturb).
//!
//! **Consent is a record, not a column.** Every change of an opt-out or a do-not-disturb is a
//! row of `consent_change` (subscriber, kind, state, source, time, principal, reason); the
//! newest row of a (subscriber, kind) is its state. `subscriber.opt_out` and
//! `subscriber.do_not_disturb` are caches of that state, read by the planner's SQL and the
//! send-time re-check, and written only here, in the transaction that appends the record.
//! An import may turn consent flags on (and records that it did) but never off: only
//! [`Store::set_consent`] with an explicit source, principal and reason clears one.

use std::fmt;

/// A subscriber row to insert. Field meanings are documented in `spec::fields`.
///
/// `Debug` masks the phone number, so a row formatted into a log or an error shows none.
#[derive(Clone, PartialEq, sea_orm::FromQueryResult)]
pub struct NewSubscriber {
    pub msisdn: String,
    pub external_id: Option<String>,
    pub name: String,
    pub gender: String,
    pub age: i32,
    pub region: String,
    pub brand: String,
    pub value_tier: String,
    pub arpu_3m: f64,
    pub balance: f64,
    pub tenure_months: i32,
    pub student_stage: String,
    pub campus: Option<String>,
    pub first_channel: String,
    pub first_channel_slot: String,
    pub second_channel: String,
    pub second_channel_slot: String,
    pub complaints_30d: i32,
    pub do_not_disturb: bool,
    pub churn_risk: f64,
    pub timezone: Option<String>,
    pub opt_out: bool,
}

impl fmt::Debug for NewSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSubscriber")
            .field("msisdn", &domain::mask(&self.msisdn))
            .field("external_id", &self.external_id)
            .field("name", &self.name)
            .field("gender", &self.gender)
            .field("age", &self.age)
            .field("region", &self.region)
            .field("brand", &self.brand)
            .field("value_tier", &self.value_tier)
            .field("arpu_3m", &self.arpu_3m)
            .field("balance", &self.balance)
            .field("tenure_months", &self.tenure_months)
            .field("student_stage", &self.student_stage)
            .field("campus", &self.campus)
            .field("first_channel", &self.first_channel)
            .field("first_channel_slot", &self.first_channel_slot)
            .field("second_channel", &self.second_channel)
            .field("second_channel_slot", &self.second_channel_slot)
            .field("complaints_30d", &self.complaints_30d)
            .field("do_not_disturb", &self.do_not_disturb)
            .field("churn_risk", &self.churn_risk)
            .field("timezone", &self.timezone)
            .field("opt_out", &self.opt_out)
            .finish()
    }
}

/// The value tier for a 3-month ARPU in yuan (DOMAIN.md: >500, 200-500, 120-200, <120).
pub fn value_tier_for_arpu(arpu: f64) -> &'static str {
    if arpu > 500.0 {
        "diamond"
    } else if arpu >= 200.0 {
        "gold"
    } else if arpu >= 120.0 {
        "silver"
    } else {
        "ordinary"
    }
}

use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait, Value};

use crate::{Millis, Result, Store, StoreError, audit, exec, query};

const COLUMNS: &str = "msisdn, external_id, name, gender, age, region, brand, value_tier, arpu_3m, balance, tenure_months, student_stage, campus, first_channel, first_channel_slot, second_channel, second_channel_slot, complaints_30d, do_not_disturb, churn_risk, timezone, opt_out, updated_at";
const N_COLUMNS: usize = 23;
/// Rows per INSERT: keeps bound parameters under SQLite's and PostgreSQL's limits.
const CHUNK: usize = 1000;

/// How an insert treats a subscriber whose msisdn is already in the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    /// Refuse the whole batch.
    Fail,
    /// Replace the stored attributes with the new ones (re-import of a fresher export).
    Update,
}

impl Store {
    /// Inserts all rows in one transaction: either every row is stored or none is.
    /// Consent flags set in the rows are recorded as `import` changes by `system`.
    pub async fn insert_subscribers(
        &self,
        rows: &[NewSubscriber],
        on_dup: OnDuplicate,
        now: Millis,
    ) -> Result<u64> {
        let mut import = self.begin_import(on_dup, now, "system", "insert").await?;
        for chunk in rows.chunks(CHUNK) {
            import.write(chunk).await?;
        }
        Ok(import.commit().await?.rows)
    }

    /// Starts an import: rows go in with [`SubscriberImport::write`] as they are read, and
    /// nothing is visible (or kept) until [`SubscriberImport::commit`]. Dropping the import
    /// without committing rolls everything back, so a failed import leaves the base exactly
    /// as it was. `principal` and `file` are recorded with the consent changes it makes.
    pub async fn begin_import(
        &self,
        on_dup: OnDuplicate,
        now: Millis,
        principal: &str,
        file: &str,
    ) -> Result<SubscriberImport> {
        Ok(SubscriberImport {
            tx: self.db().begin().await?,
            on_dup,
            now,
            principal: principal.to_owned(),
            file: file.to_owned(),
            rows: 0,
        })
    }

    pub async fn count_subscribers(&self) -> Result<u64> {
        let rows = query(self.db(), "SELECT COUNT(*) AS n FROM subscriber", []).await?;
        Ok(rows[0].try_get::<i64>("", "n")? as u64)
    }

    /// Looks a subscriber up by phone number.
    pub async fn subscriber_by_msisdn(&self, msisdn: &str) -> Result<Option<i64>> {
        let rows = query(
            self.db(),
            "SELECT id FROM subscriber WHERE msisdn = ?",
            [msisdn.into()],
        )
        .await?;
        Ok(match rows.first() {
            Some(r) => Some(r.try_get::<i64>("", "id")?),
            None => None,
        })
    }

    /// Records an opt-out the subscriber sent by SMS (a reply such as "TD"); every later plan
    /// and every claim honours it.
    pub async fn set_opt_out(&self, subscriber_id: i64, now: Millis) -> Result<()> {
        self.set_consent(
            subscriber_id,
            ConsentKind::OptOut,
            true,
            ConsentSource::SmsReply,
            "subscriber",
            Some("opt-out keyword in an SMS reply"),
            now,
        )
        .await?;
        Ok(())
    }

    /// Records one consent change with who made it and why, updates the cached flag and
    /// writes the audit entry, all in one transaction. This is the only way to clear an
    /// opt-out or a do-not-disturb. Returns false (and records nothing) when the state is
    /// already `state`, or the subscriber does not exist.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_consent(
        &self,
        subscriber_id: i64,
        kind: ConsentKind,
        state: bool,
        source: ConsentSource,
        principal: &str,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        let tx = self.db().begin().await?;
        let column = kind.column();
        let rows = query(
            &tx,
            &format!("SELECT {column} AS state FROM subscriber WHERE id = ?"),
            [subscriber_id.into()],
        )
        .await?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        if row.try_get::<bool>("", "state")? == state {
            return Ok(false);
        }
        exec(
            &tx,
            "INSERT INTO consent_change (subscriber_id, kind, state, source, at, principal, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                subscriber_id.into(),
                kind.as_str().into(),
                state.into(),
                source.as_str().into(),
                now.into(),
                principal.into(),
                reason.map(str::to_owned).into(),
            ],
        )
        .await?;
        // Conditional on the state read above: a concurrent change in between makes this
        // update miss, and the transaction is abandoned rather than recording a stale flip.
        let changed = exec(
            &tx,
            &format!(
                "UPDATE subscriber SET {column} = ?, updated_at = ? WHERE id = ? AND {column} = ?"
            ),
            [
                state.into(),
                now.into(),
                subscriber_id.into(),
                (!state).into(),
            ],
        )
        .await?
        .rows_affected();
        if changed != 1 {
            return Err(StoreError::Invalid(format!(
                "consent of subscriber {subscriber_id} changed concurrently; nothing recorded, try again"
            )));
        }
        audit::record(
            &tx,
            now,
            principal,
            audit::action::CONSENT,
            &format!("subscriber {subscriber_id}"),
            Some(&format!(
                "{} {} ({}){}",
                kind.as_str(),
                if state { "on" } else { "off" },
                source.as_str(),
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            )),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every consent change of a subscriber, oldest first.
    pub async fn consent_history(&self, subscriber_id: i64) -> Result<Vec<ConsentChange>> {
        let rows = query(
            self.db(),
            "SELECT kind, state, source, at, principal, reason FROM consent_change WHERE subscriber_id = ? ORDER BY id",
            [subscriber_id.into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ConsentChange {
                    kind: r.try_get("", "kind")?,
                    state: r.try_get("", "state")?,
                    source: r.try_get("", "source")?,
                    at: r.try_get("", "at")?,
                    principal: r.try_get("", "principal")?,
                    reason: r.try_get("", "reason")?,
                })
            })
            .collect()
    }

    /// Subscribers whose cached flag disagrees with their consent record (should be none).
    pub async fn consent_disagreements(&self) -> Result<u64> {
        let mut n = 0;
        for kind in [ConsentKind::OptOut, ConsentKind::Dnd] {
            let rows = query(
                self.db(),
                &format!(
                    "SELECT COUNT(*) AS n FROM subscriber s WHERE s.{} <> {}",
                    kind.column(),
                    latest_state(kind)
                ),
                [],
            )
            .await?;
            n += rows[0].try_get::<i64>("", "n")? as u64;
        }
        Ok(n)
    }
}

/// Which consent a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentKind {
    /// The subscriber does not want marketing messages.
    OptOut,
    /// Do not disturb: no calls or messages at all.
    Dnd,
}

impl ConsentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentKind::OptOut => "opt_out",
            ConsentKind::Dnd => "dnd",
        }
    }

    fn column(self) -> &'static str {
        match self {
            ConsentKind::OptOut => "opt_out",
            ConsentKind::Dnd => "do_not_disturb",
        }
    }
}

/// Where a consent change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentSource {
    Import,
    SmsReply,
    Api,
    Cli,
}

impl ConsentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentSource::Import => "import",
            ConsentSource::SmsReply => "sms_reply",
            ConsentSource::Api => "api",
            ConsentSource::Cli => "cli",
        }
    }
}

/// One recorded consent change. `kind` is `opt_out` or `dnd`; `source` is import,
/// sms_reply, api, cli, or backfill (flags set before consent was recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    pub kind: String,
    pub state: bool,
    pub source: String,
    pub at: Millis,
    pub principal: String,
    pub reason: Option<String>,
}

/// The recorded state of `kind` for the subscriber row aliased `s` (false without a record).
fn latest_state(kind: ConsentKind) -> String {
    format!(
        "COALESCE((SELECT c.state FROM consent_change c WHERE c.subscriber_id = s.id AND c.kind = '{}' ORDER BY c.id DESC LIMIT 1), {})",
        kind.as_str(),
        FALSE
    )
}

/// `FALSE` is understood by both backends (SQLite since 3.23) and compares with either's
/// boolean column.
const FALSE: &str = "FALSE";

/// What an import stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportOutcome {
    /// Rows inserted or updated.
    pub rows: u64,
    /// Opt-outs the import added (recorded with source `import`).
    pub opt_outs_added: u64,
    /// Do-not-disturb flags the import added.
    pub dnd_added: u64,
}

/// An import in progress: one open transaction (see [`Store::begin_import`]).
pub struct SubscriberImport {
    tx: DatabaseTransaction,
    on_dup: OnDuplicate,
    now: Millis,
    principal: String,
    file: String,
    rows: u64,
}

impl SubscriberImport {
    /// Writes rows inside the import's transaction, in statements of at most 1000 rows.
    pub async fn write(&mut self, rows: &[NewSubscriber]) -> Result<u64> {
        let mut n = 0;
        for chunk in rows.chunks(CHUNK) {
            n += insert_chunk(&self.tx, chunk, self.on_dup, self.now).await?;
        }
        self.rows += n;
        Ok(n)
    }

    /// Records the consent flags the import turned on, then commits everything at once.
    pub async fn commit(self) -> Result<ImportOutcome> {
        let mut outcome = ImportOutcome {
            rows: self.rows,
            ..ImportOutcome::default()
        };
        for kind in [ConsentKind::OptOut, ConsentKind::Dnd] {
            // The upsert can only have turned flags on (see `insert_chunk`); every flag now on
            // without a record saying so was turned on by this import.
            let added = exec(
                &self.tx,
                &format!(
                    "INSERT INTO consent_change (subscriber_id, kind, state, source, at, principal, reason) \
                     SELECT s.id, ?, ?, ?, ?, ?, ? FROM subscriber s WHERE s.{} AND NOT {}",
                    kind.column(),
                    latest_state(kind)
                ),
                [
                    kind.as_str().into(),
                    true.into(),
                    ConsentSource::Import.as_str().into(),
                    self.now.into(),
                    self.principal.clone().into(),
                    Some(format!("import of {}", self.file)).into(),
                ],
            )
            .await?
            .rows_affected();
            match kind {
                ConsentKind::OptOut => outcome.opt_outs_added = added,
                ConsentKind::Dnd => outcome.dnd_added = added,
            }
        }
        if outcome.opt_outs_added + outcome.dnd_added > 0 {
            audit::record(
                &self.tx,
                self.now,
                &self.principal,
                audit::action::CONSENT,
                &self.file,
                Some(&format!(
                    "import added {} opt-out(s) and {} do-not-disturb flag(s)",
                    outcome.opt_outs_added, outcome.dnd_added
                )),
            )
            .await?;
        }
        self.tx.commit().await?;
        Ok(outcome)
    }
}

async fn insert_chunk<C: ConnectionTrait>(
    c: &C,
    chunk: &[NewSubscriber],
    on_dup: OnDuplicate,
    now: Millis,
) -> Result<u64> {
    let row = format!("({})", crate::marks(N_COLUMNS));
    let mut sql = format!("INSERT INTO subscriber ({COLUMNS}) VALUES ");
    let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * N_COLUMNS);
    for (i, s) in chunk.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&row);
        values.extend([
            s.msisdn.clone().into(),
            s.external_id.clone().into(),
            s.name.clone().into(),
            s.gender.clone().into(),
            s.age.into(),
            s.region.clone().into(),
            s.brand.clone().into(),
            s.value_tier.clone().into(),
            s.arpu_3m.into(),
            s.balance.into(),
            s.tenure_months.into(),
            s.student_stage.clone().into(),
            s.campus.clone().into(),
            s.first_channel.clone().into(),
            s.first_channel_slot.clone().into(),
            s.second_channel.clone().into(),
            s.second_channel_slot.clone().into(),
            s.complaints_30d.into(),
            s.do_not_disturb.into(),
            s.churn_risk.into(),
            s.timezone.clone().into(),
            s.opt_out.into(),
            now.into(),
        ]);
    }
    if on_dup == OnDuplicate::Update {
        sql.push_str(" ON CONFLICT (msisdn) DO UPDATE SET ");
        // Consent flags only ever turn on here: an export that says "not opted out" is an
        // export that does not know, never a subscriber's opt-in (`Store::set_consent` is).
        let sets: Vec<String> = COLUMNS
            .split(", ")
            .filter(|c| *c != "msisdn")
            .map(|c| match c {
                "opt_out" | "do_not_disturb" => format!("{c} = (subscriber.{c} OR excluded.{c})"),
                _ => format!("{c} = excluded.{c}"),
            })
            .collect();
        sql.push_str(&sets.join(", "));
    }
    Ok(exec(c, &sql, values).await?.rows_affected())
}

impl Store {
    /// Phone numbers of the given subscribers.
    pub async fn msisdns_of(&self, ids: &[i64]) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT id, msisdn FROM subscriber WHERE id IN ({})",
                crate::marks(chunk.len())
            );
            let rows = query(self.db(), &sql, chunk.iter().map(|i| Value::from(*i))).await?;
            for r in rows {
                out.push((r.try_get("", "id")?, r.try_get("", "msisdn")?));
            }
        }
        Ok(out)
    }
}
