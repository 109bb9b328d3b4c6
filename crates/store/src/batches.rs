//! A planned wave's contacts between the decision and their rows (`planned_batch`).
//!
//! Planning a wave decides, in ONE transaction, who gets a contact (arm, due time, route)
//! and commits that decision as a few batch rows of up to [`BATCH_CONTACTS`] contacts each,
//! instead of a contact row and a queue row per target: on PostgreSQL those writes cost more
//! than selecting the audience (crates/bench/README.md, "bench-plan"). Each batch is then
//! *written*: its contacts and their `dispatch` rows inserted and the batch row deleted, in
//! one transaction per batch, so a batch is either all written and gone or untouched. A
//! crash between batches leaves the rest for the next call, by any replica; the insert is
//! idempotent anyway (`ON CONFLICT (wave_run_id, subscriber_id, choice) DO NOTHING`).
//!
//! Readers that need all of a wave's contacts write the pending batches first:
//! [`crate::Store::begin_planning`] (inside the planning transaction, after the planner
//! lock: caps, arbitration, earlier entrants and responders, the next wave's targets),
//! the engine's housekeeping before attribution and timers, and `due_timers` never closes a
//! wave with batches pending.

use domain::{ChannelKind, Purpose, TimeSlot};
use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait, Value};

use crate::contacts::{self, Arm, NewContact, Route, WaveContacts};
use crate::{Result, Store, StoreError, exec, query};

/// Contacts per batch: small enough that the first batch is written quickly after the
/// decision (the dispatcher starts on it), large enough that a wave is a handful of rows.
pub const BATCH_CONTACTS: usize = 20_000;

/// One contact as stored in a batch: subscriber, arm, due, send-by, stratum, variant, route
/// (channel, slot, fallback channel and slot). A JSON array per contact.
type Row = (
    i64,
    String,
    i64,
    Option<i64>,
    String,
    Option<String>,
    Option<RouteRow>,
);
type RouteRow = (String, Option<String>, Option<(String, Option<String>)>);

/// The payload of a batch.
pub fn encode(rows: &[NewContact]) -> String {
    let rows: Vec<Row> = rows
        .iter()
        .map(|r| {
            (
                r.subscriber_id,
                r.arm.as_str().to_owned(),
                r.due_at,
                r.send_by,
                r.stratum.clone(),
                r.variant.clone(),
                r.route.as_ref().map(|route| {
                    (
                        route.channel.as_str().to_owned(),
                        route.slot.map(|s| s.to_string()),
                        route
                            .fallback
                            .map(|(c, s)| (c.as_str().to_owned(), s.map(|s| s.to_string()))),
                    )
                }),
            )
        })
        .collect();
    serde_json::to_string(&rows).expect("a batch of plain values serializes")
}

/// A batch's contacts back from [`encode`].
pub fn decode(payload: &str) -> Result<Vec<NewContact>> {
    let bad = |what: &str| StoreError::Invalid(format!("planned batch: {what}"));
    let rows: Vec<Row> =
        serde_json::from_str(payload).map_err(|e| bad(&format!("payload: {e}")))?;
    let channel = |s: &str| ChannelKind::parse(s).ok_or_else(|| bad(&format!("channel {s:?}")));
    let slot = |s: Option<String>| -> Result<Option<TimeSlot>> {
        s.map(|s| TimeSlot::parse(&s).ok_or_else(|| bad(&format!("slot {s:?}"))))
            .transpose()
    };
    rows.into_iter()
        .map(
            |(subscriber_id, arm, due_at, send_by, stratum, variant, route)| {
                Ok(NewContact {
                    subscriber_id,
                    arm: Arm::parse(&arm).ok_or_else(|| bad(&format!("arm {arm:?}")))?,
                    due_at,
                    send_by,
                    stratum,
                    variant,
                    route: match route {
                        None => None,
                        Some((c, s, fallback)) => Some(Route {
                            channel: channel(&c)?,
                            slot: slot(s)?,
                            fallback: match fallback {
                                None => None,
                                Some((fc, fs)) => Some((channel(&fc)?, slot(fs)?)),
                            },
                        }),
                    },
                })
            },
        )
        .collect()
}

/// Writes a planned wave's contacts as batches (in the planning transaction `c`); returns
/// how many batches.
pub async fn insert_batches<C: ConnectionTrait>(
    c: &C,
    to: &WaveContacts<'_>,
    rows: &[NewContact],
    per_batch: usize,
) -> Result<u64> {
    let mut seq = 0i64;
    for chunk in rows.chunks(per_batch.max(1)) {
        let treatment = chunk.iter().filter(|r| r.arm == Arm::Treatment).count() as i64;
        exec(
            c,
            "INSERT INTO planned_batch (wave_run_id, seq, run_id, wave, channel, purpose, at_most_once, n, treatment, payload) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (wave_run_id, seq) DO NOTHING",
            [
                to.wave_run_id.into(),
                seq.into(),
                to.run_id.into(),
                to.wave.into(),
                to.channel.into(),
                to.purpose.as_str().into(),
                to.at_most_once.into(),
                (chunk.len() as i64).into(),
                treatment.into(),
                encode(chunk).into(),
            ],
        )
        .await?;
        seq += 1;
    }
    Ok(seq as u64)
}

/// Whether taking a batch waits for one another transaction is writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Skip it (PostgreSQL `SKIP LOCKED`): replicas share the work.
    Skip,
    /// Wait until it is written (then it is gone and the next is taken): for a reader that
    /// needs every batch written.
    Block,
}

/// Takes one pending batch (of `wave_run_id`, or of any wave, oldest first), deletes its row
/// and writes its contacts with their queue rows, on `c`: the caller's transaction, so the
/// delete and the inserts commit together. `None`: no batch to take.
pub(crate) async fn take_one<C: ConnectionTrait>(
    c: &C,
    wave_run_id: Option<i64>,
    wait: Wait,
) -> Result<Option<u64>> {
    let lock = match (c.get_database_backend(), wait) {
        (DbBackend::Postgres, Wait::Skip) => " FOR UPDATE SKIP LOCKED",
        (DbBackend::Postgres, Wait::Block) => " FOR UPDATE",
        _ => "",
    };
    let (filter, values): (&str, Vec<Value>) = match wave_run_id {
        Some(id) => (" WHERE wave_run_id = ?", vec![id.into()]),
        None => ("", Vec::new()),
    };
    // The DELETE comes first: on SQLite it takes the write lock before anything is read,
    // and on PostgreSQL the row lock makes another taker skip or wait for this batch.
    let rows = query(
        c,
        &format!(
            "DELETE FROM planned_batch WHERE (wave_run_id, seq) = \
             (SELECT wave_run_id, seq FROM planned_batch{filter} ORDER BY wave_run_id, seq LIMIT 1{lock}) \
             RETURNING wave_run_id, run_id, wave, channel, purpose, at_most_once, payload"
        ),
        values,
    )
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    // One row (the scalar subquery is evaluated once); every row deleted is written all the
    // same, so no plan the database picks can lose a batch. (With `IN (SELECT ... LIMIT 1
    // FOR UPDATE)` PostgreSQL deleted every batch of a 15-batch wave in one statement at
    // 1M subscribers, and only the first was written.)
    let mut n = 0;
    for r in &rows {
        n += write_row(c, r).await?;
    }
    Ok(Some(n))
}

/// Writes the contacts of one deleted batch row.
async fn write_row<C: ConnectionTrait>(c: &C, r: &sea_orm::QueryResult) -> Result<u64> {
    let wave: String = r.try_get("", "wave")?;
    let channel: String = r.try_get("", "channel")?;
    let purpose: String = r.try_get("", "purpose")?;
    let to = WaveContacts {
        run_id: r.try_get("", "run_id")?,
        wave_run_id: r.try_get("", "wave_run_id")?,
        wave: &wave,
        channel: &channel,
        purpose: Purpose::parse(&purpose)
            .ok_or_else(|| StoreError::Invalid(format!("planned batch: purpose {purpose:?}")))?,
        at_most_once: r.try_get("", "at_most_once")?,
    };
    let payload: String = r.try_get("", "payload")?;
    let contacts = decode(&payload)?;
    contacts::insert_contacts(c, &to, &contacts).await?;
    Ok(contacts.len() as u64)
}

/// Batches still to write and the contacts in them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub batches: u64,
    pub contacts: u64,
    /// Of `contacts`, the treatment arm's.
    pub treatment: u64,
}

impl Store {
    /// Writes one pending batch of `wave_run_id` (or of any wave) in a transaction of its
    /// own; on PostgreSQL a batch another replica is writing is skipped. The number of
    /// contacts written, `None` when there was no batch to take.
    pub async fn write_planned_batch(&self, wave_run_id: Option<i64>) -> Result<Option<u64>> {
        let tx = self.db().begin().await?;
        let n = take_one(&tx, wave_run_id, Wait::Skip).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Writes every pending batch, one transaction each, waiting for those another replica
    /// is writing: when it returns, every wave planned before the call has all its contacts
    /// (the guarantee attribution and the window timers need). Returns the batches this
    /// call wrote.
    pub async fn write_planned_batches(&self) -> Result<u64> {
        // Most passes find nothing: a read, not a write lock (SQLite), for that case.
        if query(self.db(), "SELECT 1 AS x FROM planned_batch LIMIT 1", [])
            .await?
            .is_empty()
        {
            return Ok(0);
        }
        let mut written = 0;
        loop {
            let tx = self.db().begin().await?;
            let n = take_one(&tx, None, Wait::Block).await?;
            tx.commit().await?;
            if n.is_none() {
                return Ok(written);
            }
            written += 1;
        }
    }

    /// What is still to write, for one wave or all.
    pub async fn planned_pending(&self, wave_run_id: Option<i64>) -> Result<Pending> {
        let (filter, values): (&str, Vec<Value>) = match wave_run_id {
            Some(id) => (" WHERE wave_run_id = ?", vec![id.into()]),
            None => ("", Vec::new()),
        };
        let rows = query(
            self.db(),
            &format!(
                "SELECT COUNT(*) AS b, CAST(COALESCE(SUM(n), 0) AS BIGINT) AS n, \
                 CAST(COALESCE(SUM(treatment), 0) AS BIGINT) AS t FROM planned_batch{filter}"
            ),
            values,
        )
        .await?;
        let r = &rows[0];
        Ok(Pending {
            batches: r.try_get::<i64>("", "b")? as u64,
            contacts: r.try_get::<i64>("", "n")? as u64,
            treatment: r.try_get::<i64>("", "t")? as u64,
        })
    }
}
