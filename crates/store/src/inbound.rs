//! What comes back: delivery reports, replies, agent outcomes and business events are
//! stored first as `inbound` rows, then attributed to contacts. Storing first means an event
//! that arrives before its contact is visible (a DLR racing the dispatcher's own commit) is
//! kept and matched on a later pass instead of being lost.

use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait, Value};

use std::collections::{HashMap, HashSet};

use crate::contacts::HAS_FALLBACK;

/// `wave_run.channel` of a `channel: preferred` wave (spec's `WaveChannel::Preferred`).
const PREFERRED_WAVE: &str = "preferred";
use crate::{Millis, Result, Store, exec, marks, query};
use domain::Choice;

/// Inbound sources.
pub mod source {
    pub const DLR: &str = "dlr";
    pub const MO: &str = "mo";
    pub const TASK: &str = "task";
    pub const EVENT: &str = "event";
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewInbound {
    pub source: &'static str,
    /// The contact's idempotency key, when the event carries it (DLRs, task outcomes).
    pub idem_key: Option<String>,
    pub msisdn: Option<String>,
    /// e.g. `delivered`, `undelivered`, `reply`, `outcome`, `order`, `topup`.
    pub kind: String,
    pub value: Option<String>,
    /// The raw event as received, JSON.
    pub payload: String,
    pub received_at: Millis,
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct InboundRow {
    pub id: i64,
    pub source: String,
    pub idem_key: Option<String>,
    pub msisdn: Option<String>,
    pub kind: String,
    pub value: Option<String>,
    pub received_at: i64,
}

/// A contact as attribution sees it.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct ContactRef {
    pub id: i64,
    pub run_id: i64,
    pub wave_run_id: i64,
    pub subscriber_id: i64,
    pub arm: String,
    pub state: String,
    pub channel: String,
    pub wave: String,
    pub wave_state: String,
    pub planned_at: Option<i64>,
    pub closes_at: Option<i64>,
    pub responded_at: Option<i64>,
}

/// `state` here reads `sending` for a queued contact that has been claimed at least once: it
/// may be out, so a report about it is believed (see [`Store::record_delivery`]).
const CONTACT_REF: &str = "SELECT c.id, c.run_id, c.wave_run_id, c.subscriber_id, c.arm, \
     CASE WHEN c.state = 'pending' AND d.attempt > 0 THEN 'sending' ELSE c.state END AS state, \
     c.channel, w.wave, w.state AS wave_state, w.planned_at, w.closes_at, c.responded_at \
     FROM contact c LEFT JOIN dispatch d ON d.contact_id = c.id JOIN wave_run w ON w.id = c.wave_run_id";

/// An inbound row's columns in `INSERT` order: source, idem_key, msisdn, kind, value,
/// payload, received_at.
fn inbound_values(r: &NewInbound) -> [Value; 7] {
    [
        r.source.into(),
        r.idem_key.clone().into(),
        r.msisdn.clone().into(),
        r.kind.clone().into(),
        r.value.clone().into(),
        r.payload.clone().into(),
        r.received_at.into(),
    ]
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct TaskRow {
    pub id: i64,
    pub contact_id: i64,
    pub team: String,
    pub kind: String,
    pub subscriber_id: i64,
    pub script: String,
    pub state: String,
    pub outcome: Option<String>,
    pub created_at: i64,
    /// When the task is due (opened + the wave's `sla`); `None` without an SLA.
    pub due_at: Option<i64>,
    /// The staff id an overdue task is escalated to.
    pub escalate_to: Option<String>,
    /// When it was escalated (once), if it was.
    pub escalated_at: Option<i64>,
    /// Worked through its team's queue (`POST /tasks/next`): the team is a paced
    /// call-centre team, and an agent records an outcome only while holding the task.
    pub queued: bool,
    /// When it reached the queue; `None` while it waits for its team's pacing.
    pub released_at: Option<i64>,
    /// The subscriber's value at release (the teams file's `value` attribute).
    pub value: Option<f64>,
    /// The agent or dialer holding it, and until when (a hold that ran out is free).
    pub held_by: Option<String>,
    pub held_until: Option<i64>,
    /// A `call back later` time: not served before it.
    pub callback_at: Option<i64>,
    /// When it expires unworked (its wave's window close), for outbound calls.
    pub deadline: Option<i64>,
    /// The agent that agreed the call back: offered the task first, for
    /// [`crate::calls::CALLBACK_GRACE_MS`] from `callback_at`.
    pub callback_for: Option<String>,
    /// How many times the task went back to the queue for a call back.
    pub callbacks: i32,
}

impl TaskRow {
    /// Held by someone at `now` (a hold that ran out holds nothing).
    pub fn holder_at(&self, now: Millis) -> Option<&str> {
        match (&self.held_by, self.held_until) {
            (Some(by), Some(until)) if until > now => Some(by.as_str()),
            _ => None,
        }
    }

    /// Open past its due time at `now`.
    pub fn is_overdue(&self, now: Millis) -> bool {
        self.state == TaskState::Open.as_str() && self.due_at.is_some_and(|d| d <= now)
    }
}

/// An agent task to open for a contact.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask<'a> {
    pub contact_id: i64,
    /// The team (or staff id) that works it.
    pub team: &'a str,
    /// `outbound_call` or `service`.
    pub kind: &'a str,
    pub subscriber_id: i64,
    pub script: &'a str,
    /// When it is due; `None` without an SLA.
    pub due_at: Option<Millis>,
    /// Who gets it when it is overdue.
    pub escalate_to: Option<&'a str>,
    /// What an agent may record on it (its workflow's `outcomes`); empty: the shipped set.
    pub outcomes: &'a [String],
    /// Its team is a paced call-centre team (`workflows/teams.yaml`): the task waits for
    /// the engine to release it, and is worked only by whoever holds it. Otherwise it is in
    /// the queue at once and any agent of the team may record its outcome.
    pub queued: bool,
}

/// What `POST /tasks/{id}/outcome` checks a task against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTerms {
    pub state: String,
    pub team: String,
    pub outcomes: Option<Vec<String>>,
    /// Worked through the queue: only its holder records its outcome.
    pub queued: bool,
    /// Who holds it now, if anyone (a hold that ran out is not read back).
    pub held_by: Option<String>,
}

/// What a delivery report changes about its contact (see [`Store::record_reports`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ReportChange {
    /// DLR type 1.
    Delivered,
    /// DLR type 2 or 16, with the reason to record.
    Undelivered(String),
    /// DLR type 8, the SMSC's acknowledgement: proof that the message was submitted.
    Submitted,
}

/// One delivery report to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub contact_id: i64,
    pub change: ReportChange,
    /// When the report was received.
    pub at: Millis,
}

pub(crate) const TASK_COLS: &str = "id, contact_id, team, kind, subscriber_id, script, state, outcome, \
                         created_at, due_at, escalate_to, escalated_at, queued, released_at, value, \
                         held_by, held_until, callback_at, deadline, callback_for, callbacks";

impl Store {
    /// Stores inbound events; nothing else happens until attribution runs.
    pub async fn insert_inbound(&self, rows: &[NewInbound]) -> Result<u64> {
        let tx = self.db().begin().await?;
        let n = insert_inbound_in(&tx, rows).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Stores, in one statement, the rows of `rows` that belong to us: every row without a
    /// key (a reply), and every keyed row (a delivery report) whose key is a contact's.
    /// Says for each row whether it was stored. Unknown keys are left out so that nothing
    /// piles up under a key that never matches (a validly signed unknown key means a
    /// restored or foreign database).
    ///
    /// One statement (its own transaction), not a lookup and then a transaction: the API's
    /// inbox calls this for every group of callbacks, thousands a second at Kannel's pace,
    /// and each statement is a round trip (PostgreSQL) or a hop to the connection's thread
    /// (SQLite). On SQLite the statement writes from its start, so it waits its turn for the
    /// write lock instead of failing the way a transaction that reads first and writes later
    /// does (`SQLITE_BUSY_SNAPSHOT`) when another writer commits in between.
    pub async fn insert_inbound_known(&self, rows: &[NewInbound]) -> Result<Vec<bool>> {
        let mut stored = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(500) {
            if self.is_postgres() {
                stored.extend(insert_known_pg(self.db(), chunk).await?);
            } else {
                stored.extend(insert_known_sqlite(self.db(), chunk).await?);
            }
        }
        Ok(stored)
    }

    /// Stores the callbacks of one spool file (`batch`, a name unique to that file) once:
    /// the rows and the file's name are written in one transaction, and a file already
    /// recorded is skipped (returns `false`). So a daemon that dies after the commit but
    /// before deleting the file does not store its callbacks twice on the next replay.
    pub async fn replay_spooled(
        &self,
        batch: &str,
        rows: &[NewInbound],
        now: Millis,
    ) -> Result<bool> {
        let tx = self.db().begin().await?;
        let done = query(
            &tx,
            "SELECT batch FROM spool_replayed WHERE batch = ?",
            [batch.into()],
        )
        .await?;
        if !done.is_empty() {
            return Ok(false);
        }
        let n = insert_inbound_in(&tx, rows).await?;
        exec(
            &tx,
            "INSERT INTO spool_replayed (batch, replayed_at, rows) VALUES (?, ?, ?)",
            [batch.into(), now.into(), (n as i64).into()],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Unprocessed inbound events, those deferred least often first, then oldest first. A
    /// row that keeps being deferred (a report for a contact that is never sent, a forged
    /// key) sinks behind fresh rows, so a batch full of such rows cannot stall the rest.
    pub async fn unprocessed_inbound(&self, limit: u64) -> Result<Vec<InboundRow>> {
        let rows = query(
            self.db(),
            "SELECT id, source, idem_key, msisdn, kind, value, received_at FROM inbound WHERE processed = ? ORDER BY tries, id LIMIT ?",
            [false.into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(InboundRow::from_query_result(r, "")?))
            .collect()
    }

    /// Marks inbound rows attributed (fenced on a [`Store::fenced`] handle).
    pub async fn mark_inbound_processed(&self, ids: &[i64]) -> Result<()> {
        let tx = self.db().begin().await?;
        self.check_fence(&tx).await?;
        if self.is_postgres() {
            // One statement text for any number of rows (an `IN` list of 1,000 marks was a
            // statement to parse and plan per length), and one index probe per id: with
            // the array given directly the planner scanned a small table, comparing every
            // row with every id (169 ms for 886 rows, session 19).
            let mut arr = crate::contacts::PgArray::default();
            for id in ids {
                arr.int(Some(*id));
            }
            exec(
                &tx,
                "UPDATE inbound SET processed = ? \
                 WHERE id = ANY(ARRAY(SELECT unnest(?::text::bigint[])))",
                [true.into(), arr.finish().into()],
            )
            .await?;
            tx.commit().await?;
            return Ok(());
        }
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "UPDATE inbound SET processed = ? WHERE id IN ({})",
                marks(chunk.len())
            );
            let mut values: Vec<Value> = vec![true.into()];
            values.extend(chunk.iter().map(|id| Value::from(*id)));
            exec(&tx, &sql, values).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that attribution looked at rows and left them for a later pass. A tried row
    /// no longer holds its wave's window open (see [`Store::due_timers`]).
    pub async fn mark_inbound_deferred(&self, ids: &[i64]) -> Result<()> {
        let tx = self.db().begin().await?;
        self.check_fence(&tx).await?;
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "UPDATE inbound SET tries = tries + 1 WHERE processed = ? AND id IN ({})",
                marks(chunk.len())
            );
            let mut values: Vec<Value> = vec![false.into()];
            values.extend(chunk.iter().map(|id| Value::from(*id)));
            exec(&tx, &sql, values).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn contact_by_key(&self, key: &str) -> Result<Option<ContactRef>> {
        let sql = format!("{CONTACT_REF} WHERE c.idem_key = ?");
        let rows = query(self.db(), &sql, [key.into()]).await?;
        rows.first()
            .map(|r| Ok(ContactRef::from_query_result(r, "")?))
            .transpose()
    }

    /// A subscriber's contacts in runs that were active when an event was received at `at`
    /// (still active, or finished at or after `at`), newest wave first: the candidates a
    /// reply or a business event may be attributed to. Judged by `at`, not by the run's
    /// state now, so an event attributed after its run finished is matched exactly as it
    /// would have been on arrival.
    pub async fn contacts_of_at(&self, subscriber_id: i64, at: Millis) -> Result<Vec<ContactRef>> {
        let sql = format!(
            "{CONTACT_REF} JOIN run r ON r.id = c.run_id WHERE c.subscriber_id = ? \
             AND (r.state = 'active' OR r.finished_at >= ?) ORDER BY w.ordinal DESC, c.id DESC"
        );
        let rows = query(self.db(), &sql, [subscriber_id.into(), at.into()]).await?;
        rows.iter()
            .map(|r| Ok(ContactRef::from_query_result(r, "")?))
            .collect()
    }

    /// Records a delivery report. Accepts a report racing the dispatcher's own settle (the
    /// contact is still queued, under a lease or already claimed once): delivered implies
    /// sent, so the queue row goes and the dispatcher's settle leaves the contact alone.
    pub async fn record_delivery(
        &self,
        contact_id: i64,
        delivered: bool,
        at: Millis,
        reason: Option<&str>,
    ) -> Result<bool> {
        let change = if delivered {
            ReportChange::Delivered
        } else {
            ReportChange::Undelivered(reason.unwrap_or("undelivered").to_owned())
        };
        self.record_one(contact_id, change, at).await
    }

    async fn record_one(&self, contact_id: i64, change: ReportChange, at: Millis) -> Result<bool> {
        let report = Report {
            contact_id,
            change,
            at,
        };
        Ok(self.record_reports(std::slice::from_ref(&report)).await?[0])
    }

    /// The contacts with these keys, by key: on PostgreSQL one query (the keys as one array
    /// joined through the key's index), on SQLite one per 500 keys.
    pub async fn contacts_by_keys(
        &self,
        keys: &[&str],
    ) -> Result<std::collections::HashMap<String, ContactRef>> {
        let mut out = std::collections::HashMap::new();
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let cols = CONTACT_REF
            .strip_prefix("SELECT ")
            .and_then(|r| r.split_once(" FROM contact c "))
            .expect("CONTACT_REF is SELECT ... FROM contact c ...");
        let mut rows = Vec::new();
        if self.is_postgres() {
            // As an array, not an IN list: with `IN (500 keys)` PostgreSQL scanned the
            // whole contact table per chunk, comparing each row with every key (attribution
            // runs this for every batch of reports). One index probe per key (`LATERAL ..
            // LIMIT 1`, which the planner cannot turn into a join): as a plain join, a
            // group of a few hundred keys made it hash the whole contact table (9.5 ms
            // against 1.8 ms for 300 keys in 20,000 contacts; `bench-dispatch --gateway
            // kannel`, session 19).
            for chunk in keys.chunks(5000) {
                let mut arr = crate::contacts::PgArray::default();
                for k in chunk {
                    arr.text(k);
                }
                let sql = format!(
                    "SELECT x.* FROM unnest(?::text::text[]) AS k(key) CROSS JOIN LATERAL \
                     (SELECT c.idem_key AS key_of, {} FROM contact c {} WHERE c.idem_key = k.key \
                     LIMIT 1) x",
                    cols.0, cols.1
                );
                rows.extend(query(self.db(), &sql, [arr.finish().into()]).await?);
            }
        } else {
            for chunk in keys.chunks(500) {
                let sql = format!(
                    "SELECT c.idem_key AS key_of, {} FROM contact c {} WHERE c.idem_key IN ({})",
                    cols.0,
                    cols.1,
                    crate::marks(chunk.len())
                );
                rows.extend(query(self.db(), &sql, chunk.iter().map(|k| Value::from(*k))).await?);
            }
        }
        for r in rows {
            out.insert(
                r.try_get::<String>("", "key_of")?,
                ContactRef::from_query_result(&r, "")?,
            );
        }
        Ok(out)
    }

    /// Records many delivery reports' changes in one fenced transaction, in order, each as
    /// [`Store::record_delivery`] or [`Store::record_submission`] would; says for each
    /// whether it changed its contact. One transaction for a batch, not one per report:
    /// at full sending pace there are two reports per message.
    ///
    /// Set-based: the reports go in rounds, each holding at most one report per contact
    /// (a contact's second report goes in the next round, so it sees the first one's
    /// change), and each round is one `UPDATE ... FROM` the round's rows (plus, on SQLite,
    /// one `DELETE` of the changed contacts' queue rows; on PostgreSQL the delete rides in
    /// the same statement). A report per statement cost two round trips per message
    /// (`bench-dispatch --gateway kannel`).
    pub async fn record_reports(&self, reports: &[Report]) -> Result<Vec<bool>> {
        let mut out = vec![false; reports.len()];
        if reports.is_empty() {
            return Ok(out);
        }
        // Round of each report: how many reports of its contact came before it.
        let mut seen: HashMap<i64, usize> = HashMap::with_capacity(reports.len());
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        for (i, r) in reports.iter().enumerate() {
            let n = seen.entry(r.contact_id).or_insert(0);
            if rounds.len() <= *n {
                rounds.push(Vec::new());
            }
            rounds[*n].push(i);
            *n += 1;
        }
        let tx = self.db().begin().await?;
        self.check_fence(&tx).await?;
        for round in rounds {
            let rows: Vec<&Report> = round.iter().map(|i| &reports[*i]).collect();
            let changed = if self.is_postgres() {
                record_round_pg(&tx, &rows).await?
            } else {
                record_round_sqlite(&tx, &rows).await?
            };
            for i in round {
                let r = &reports[i];
                out[i] = changed.contains(&r.contact_id);
                // Not arrived: the second choice, written with the report that says so.
                if out[i] && matches!(r.change, ReportChange::Undelivered(_)) {
                    crate::contacts::write_fallbacks(&tx, &[r.contact_id], r.at).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The keys among `keys` the gateway has sent a delivery report about (of any type,
    /// processed by attribution or not): proof that it took the message. The dispatcher asks
    /// before sending a contact again, so a report stored but not yet attributed still
    /// prevents the repeat.
    pub async fn reported_keys(&self, keys: &[&str]) -> Result<HashSet<String>> {
        reported_keys_in(self.db(), keys).await
    }

    /// Records Kannel's SMSC acknowledgement (DLR type 8) of a contact still in the queue:
    /// proof that the gateway took it, so it is sent and must not go again. This is how a
    /// contact whose worker died with the answer unrecorded is reconciled (the claim holds
    /// it back for the channel's proof grace meanwhile), and how a send that timed out but
    /// reached the SMSC is not repeated. A contact already past `pending` is left alone;
    /// one never claimed is not believed: nothing was sent.
    pub async fn record_submission(&self, contact_id: i64, at: Millis) -> Result<bool> {
        self.record_one(contact_id, ReportChange::Submitted, at)
            .await
    }

    /// Stores a response and, when it counts for the wave, marks the contact responded
    /// (first response wins). Bumps the run's response sequence in the same transaction, so
    /// a report built before this response is known to be stale (see
    /// [`Store::stale_reports`]), however the response and the run's finish interleave.
    pub async fn record_response(
        &self,
        contact: &ContactRef,
        kind: &str,
        value: Option<&str>,
        at: Millis,
        counts: bool,
    ) -> Result<()> {
        let tx = self.db().begin().await?;
        self.check_fence(&tx).await?;
        exec(
            &tx,
            "INSERT INTO response (contact_id, run_id, wave_run_id, subscriber_id, arm, kind, value, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                contact.id.into(),
                contact.run_id.into(),
                contact.wave_run_id.into(),
                contact.subscriber_id.into(),
                contact.arm.as_str().into(),
                kind.into(),
                value.map(str::to_owned).into(),
                at.into(),
            ],
        )
        .await?;
        exec(
            &tx,
            "UPDATE run SET response_seq = response_seq + 1 WHERE id = ?",
            [contact.run_id.into()],
        )
        .await?;
        if counts {
            exec(
                &tx,
                "UPDATE contact SET responded_at = ?, response = ? WHERE id = ? AND responded_at IS NULL",
                [at.into(), format!("{kind}:{}", value.unwrap_or("")).into(), contact.id.into()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Subscribers of a run (by arm) with a response of `kind` (and `value`, when given)
    /// recorded at or before `until`: the goal conversions for evaluation.
    pub async fn converted(
        &self,
        run_id: i64,
        kind: &str,
        value: Option<&str>,
    ) -> Result<Vec<(i64, String)>> {
        let rows = match value {
            Some(v) => {
                query(
                    self.db(),
                    "SELECT DISTINCT subscriber_id, arm FROM response WHERE run_id = ? AND kind = ? AND value = ?",
                    [run_id.into(), kind.into(), v.into()],
                )
                .await?
            }
            None => {
                query(
                    self.db(),
                    "SELECT DISTINCT subscriber_id, arm FROM response WHERE run_id = ? AND kind = ?",
                    [run_id.into(), kind.into()],
                )
                .await?
            }
        };
        rows.iter()
            .map(|r| Ok((r.try_get("", "subscriber_id")?, r.try_get("", "arm")?)))
            .collect()
    }

    /// Per subscriber of a run's first wave: arm and stratum, for evaluation by cell.
    pub async fn run_population(
        &self,
        first_wave_run_id: i64,
    ) -> Result<Vec<(i64, String, String)>> {
        self.per_subscriber(first_wave_run_id, "stratum").await
    }

    /// Opens agent tasks (outbound calls, service visits) for contacts; one per contact.
    pub async fn open_tasks(&self, rows: &[NewTask<'_>], now: Millis) -> Result<u64> {
        // An outbound call expires unworked at its wave's window close (`respond_within`):
        // after it the next wave has picked its non-responders, and a late call would answer
        // a question nobody asks any more; so does a preferred wave's service task (a plain
        // service wave's stays until staff work it). A preferred wave's first-choice task
        // with a second choice to fall back to expires at its send-by (`send_within`)
        // instead, and is due (its SLA) by then at the latest, so a task nobody got to leaves
        // the window's rest to the fallback.
        //
        // Both times are computed inside the INSERT: on SQLite a transaction that reads
        // before it writes fails at once (SQLITE_BUSY_SNAPSHOT, no busy wait) when another
        // writer commits in between, which the other channels' dispatchers do all the time.
        // `terms` binds: the first choice, whether the task is a call, the preferred wave's
        // channel, the contact.
        let terms = format!(
            "(SELECT w.closes_at AS close, CASE WHEN {HAS_FALLBACK} THEN c.send_by END AS early, \
               CASE WHEN ? OR w.channel = ? THEN 1 ELSE 0 END AS expires \
               FROM contact c JOIN wave_run w ON w.id = c.wave_run_id WHERE c.id = ?) AS d"
        );
        let insert = format!(
            "INSERT INTO agent_task (contact_id, team, kind, subscriber_id, script, state, created_at, updated_at, due_at, escalate_to, outcomes, queued, released_at, deadline) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, \
               COALESCE((SELECT CASE WHEN d.expires = 1 AND d.early < ? THEN d.early END FROM {terms}), ?), \
               ?, ?, ?, ?, \
               (SELECT CASE WHEN d.expires = 1 THEN \
                  CASE WHEN d.early IS NULL THEN d.close WHEN d.close IS NULL OR d.early < d.close THEN d.early ELSE d.close END \
                END FROM {terms})) \
             ON CONFLICT (contact_id) DO NOTHING"
        );
        let tx = self.db().begin().await?;
        let mut n = 0;
        for t in rows {
            let is_call = t.kind == domain::ChannelKind::OutboundCall.as_str();
            let terms = |v: &mut Vec<Value>| {
                v.extend([
                    Choice::First.as_str().into(),
                    is_call.into(),
                    PREFERRED_WAVE.into(),
                    t.contact_id.into(),
                ])
            };
            let mut values: Vec<Value> = vec![
                t.contact_id.into(),
                t.team.into(),
                t.kind.into(),
                t.subscriber_id.into(),
                t.script.into(),
                TaskState::Open.as_str().into(),
                now.into(),
                now.into(),
                t.due_at.into(),
            ];
            terms(&mut values);
            values.extend([
                t.due_at.into(),
                t.escalate_to.map(str::to_owned).into(),
                (!t.outcomes.is_empty())
                    .then(|| t.outcomes.join("\n"))
                    .into(),
                t.queued.into(),
                // A task of an unpaced team is in its queue at once.
                (!t.queued).then_some(now).into(),
            ]);
            terms(&mut values);
            n += exec(&tx, &insert, values).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Tasks in `state` (of `team` when given), at most `limit`: the soonest due first, then
    /// those without a due time, each in the order they were opened.
    pub async fn tasks(
        &self,
        team: Option<&str>,
        state: TaskState,
        limit: u64,
    ) -> Result<Vec<TaskRow>> {
        let mut sql = format!("SELECT {TASK_COLS} FROM agent_task WHERE state = ?");
        let mut values: Vec<Value> = vec![state.as_str().into()];
        if let Some(t) = team {
            sql.push_str(" AND team = ?");
            values.push(t.into());
        }
        sql.push_str(" ORDER BY CASE WHEN due_at IS NULL THEN 1 ELSE 0 END, due_at, id LIMIT ?");
        values.push((limit.min(i64::MAX as u64) as i64).into());
        query(self.db(), &sql, values)
            .await?
            .iter()
            .map(|r| Ok(TaskRow::from_query_result(r, "")?))
            .collect()
    }

    /// A task's state and team, or `None` when there is no such task (tells "no such task"
    /// from "already done" after [`Store::complete_task`] refused).
    pub async fn task_state(&self, task_id: i64) -> Result<Option<(String, String)>> {
        Ok(self.task_terms(task_id).await?.map(|t| (t.state, t.team)))
    }

    /// A task's state, team and the outcomes an agent may record on it (`None` for a task
    /// opened before tasks carried them: the shipped set applies).
    pub async fn task_terms(&self, task_id: i64) -> Result<Option<TaskTerms>> {
        self.task_terms_at(task_id, i64::MAX).await
    }

    /// [`Store::task_terms`], with the holder as of `now` (a hold that ran out is none).
    pub async fn task_terms_at(&self, task_id: i64, now: Millis) -> Result<Option<TaskTerms>> {
        let rows = query(
            self.db(),
            "SELECT state, team, outcomes, queued, held_by, held_until FROM agent_task WHERE id = ?",
            [task_id.into()],
        )
        .await?;
        rows.first()
            .map(|r| {
                let held_until: Option<i64> = r.try_get("", "held_until")?;
                Ok(TaskTerms {
                    state: r.try_get("", "state")?,
                    team: r.try_get("", "team")?,
                    outcomes: r
                        .try_get::<Option<String>>("", "outcomes")?
                        .map(|o| o.lines().map(str::to_owned).collect()),
                    queued: r.try_get("", "queued")?,
                    held_by: r
                        .try_get::<Option<String>>("", "held_by")?
                        .filter(|_| held_until.is_some_and(|u| u > now)),
                })
            })
            .transpose()
    }

    /// Closes an open task with the agent's outcome and queues the outcome for attribution,
    /// in one transaction. False when the task was not open.
    pub async fn complete_task(
        &self,
        task_id: i64,
        outcome: &str,
        agent: &str,
        now: Millis,
    ) -> Result<bool> {
        self.complete_task_as(task_id, outcome, agent, None, now)
            .await
    }

    /// [`Store::complete_task`] for `holder` only: false unless `holder` holds the task at
    /// `now`. The check is the update's own condition, so a hold that runs out (and the
    /// task another agent took meanwhile) cannot be closed by its former holder.
    pub async fn complete_held_task(
        &self,
        task_id: i64,
        outcome: &str,
        agent: &str,
        holder: &str,
        now: Millis,
    ) -> Result<bool> {
        self.complete_task_as(task_id, outcome, agent, Some(holder), now)
            .await
    }

    async fn complete_task_as(
        &self,
        task_id: i64,
        outcome: &str,
        agent: &str,
        holder: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        let tx = self.db().begin().await?;
        let mut sql = "UPDATE agent_task SET state = ?, outcome = ?, agent = ?, updated_at = ?, \
             held_by = NULL, held_until = NULL WHERE id = ? AND state = ?"
            .to_owned();
        let mut values: Vec<Value> = vec![
            TaskState::Done.as_str().into(),
            outcome.into(),
            agent.into(),
            now.into(),
            task_id.into(),
            TaskState::Open.as_str().into(),
        ];
        if let Some(h) = holder {
            sql.push_str(" AND held_by = ? AND held_until > ?");
            values.push(h.into());
            values.push(now.into());
        }
        let res = exec(&tx, &sql, values).await?;
        if res.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let key = query(
            &tx,
            "SELECT c.idem_key FROM agent_task t JOIN contact c ON c.id = t.contact_id WHERE t.id = ?",
            [task_id.into()],
        )
        .await?;
        let key: String = key[0].try_get("", "idem_key")?;
        exec(
            &tx,
            "INSERT INTO inbound (source, idem_key, msisdn, kind, value, payload, received_at, processed) VALUES ('task', ?, NULL, 'outcome', ?, ?, ?, ?)",
            [key.into(), outcome.into(), format!("{{\"task\":{task_id},\"agent\":\"{}\"}}", agent.replace('"', "")).into(), now.into(), false.into()],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Inserts inbound rows on `c` (a transaction of the caller's).
pub(crate) async fn insert_inbound_in<C: ConnectionTrait>(
    c: &C,
    rows: &[NewInbound],
) -> Result<u64> {
    let mut n = 0;
    for chunk in rows.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO inbound (source, idem_key, msisdn, kind, value, payload, received_at, processed) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 8);
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
            values.extend(inbound_values(r));
            values.push(false.into());
        }
        // The only conflict is with `ux_inbound_event_key` (business events, keyed by
        // `events::event_key`): an event already stored adds nothing. Other sources have no
        // unique key and are all inserted.
        sql.push_str(" ON CONFLICT DO NOTHING");
        n += exec(c, &sql, values).await?.rows_affected();
    }
    Ok(n)
}

/// [`Store::insert_inbound_known`] on PostgreSQL: the rows as arrays (one statement text
/// for any batch), the known ones inserted, and which were kept read back by position.
/// A key is known by one index probe (`LATERAL .. LIMIT 1`): as `EXISTS`, a group of a
/// hundred callbacks made the planner hash the whole contact table instead (a group's
/// insert went from ~6 ms to ~47 ms in `bench-dispatch --gateway kannel`, session 19).
async fn insert_known_pg<C: ConnectionTrait>(c: &C, rows: &[NewInbound]) -> Result<Vec<bool>> {
    use crate::contacts::PgArray;
    let (mut src, mut key, mut msisdn, mut kind, mut value, mut payload, mut at) = (
        PgArray::default(),
        PgArray::default(),
        PgArray::default(),
        PgArray::default(),
        PgArray::default(),
        PgArray::default(),
        PgArray::default(),
    );
    for r in rows {
        src.text(r.source);
        key.opt_text(r.idem_key.as_deref());
        msisdn.opt_text(r.msisdn.as_deref());
        kind.text(&r.kind);
        value.opt_text(r.value.as_deref());
        payload.text(&r.payload);
        at.int(Some(r.received_at));
    }
    const SQL: &str = "WITH u AS (SELECT * FROM unnest(?::text::text[], ?::text::text[], ?::text::text[], \
           ?::text::text[], ?::text::text[], ?::text::text[], ?::text::bigint[]) WITH ORDINALITY \
           AS u(source, idem_key, msisdn, kind, value, payload, received_at, n)), \
         known AS (SELECT u.* FROM u LEFT JOIN LATERAL \
           (SELECT 1 AS hit FROM contact c WHERE c.idem_key = u.idem_key LIMIT 1) k ON true \
           WHERE u.idem_key IS NULL OR k.hit IS NOT NULL), \
         ins AS (INSERT INTO inbound (source, idem_key, msisdn, kind, value, payload, received_at, processed) \
           SELECT source, idem_key, msisdn, kind, value, payload, received_at, false FROM known ORDER BY n \
           ON CONFLICT DO NOTHING) \
         SELECT n FROM known";
    let values: Vec<Value> = vec![
        src.finish().into(),
        key.finish().into(),
        msisdn.finish().into(),
        kind.finish().into(),
        value.finish().into(),
        payload.finish().into(),
        at.finish().into(),
    ];
    let mut stored = vec![false; rows.len()];
    for r in query(c, SQL, values).await? {
        let n = r.try_get::<i64>("", "n")?;
        if let Some(s) = usize::try_from(n - 1).ok().and_then(|i| stored.get_mut(i)) {
            *s = true;
        }
    }
    Ok(stored)
}

/// [`Store::insert_inbound_known`] on SQLite: one `INSERT ... SELECT` of the known rows,
/// which returns the keys it stored.
async fn insert_known_sqlite<C: ConnectionTrait>(c: &C, rows: &[NewInbound]) -> Result<Vec<bool>> {
    let sql = format!(
        "WITH u(source, idem_key, msisdn, kind, value, payload, received_at) AS (VALUES {}) \
         INSERT INTO inbound (source, idem_key, msisdn, kind, value, payload, received_at, processed) \
         SELECT source, idem_key, msisdn, kind, value, payload, received_at, ? FROM u \
         WHERE u.idem_key IS NULL OR EXISTS (SELECT 1 FROM contact c WHERE c.idem_key = u.idem_key) \
         ON CONFLICT DO NOTHING RETURNING idem_key",
        vec!["(?, ?, ?, ?, ?, ?, ?)"; rows.len()].join(", ")
    );
    let mut values: Vec<Value> = Vec::with_capacity(rows.len() * 7 + 1);
    for r in rows {
        values.extend(inbound_values(r));
    }
    values.push(false.into());
    let mut known = HashSet::new();
    for r in query(c, &sql, values).await? {
        if let Some(k) = r.try_get::<Option<String>>("", "idem_key")? {
            known.insert(k);
        }
    }
    Ok(rows
        .iter()
        .map(|r| r.idem_key.as_ref().is_none_or(|k| known.contains(k)))
        .collect())
}

/// What a report sets, by column: the state it moves its contact to, and the reason of a
/// failure. A contact moves only forward: an acknowledgement (`sent`) settles a claimed
/// contact still queued; a final report (`delivered`, `undelivered`) a contact sent or
/// claimed (`pending` with a queue row claimed at least once). A contact never claimed is
/// not believed: nothing was sent.
fn report_columns(r: &Report) -> (&'static str, Option<&str>) {
    match &r.change {
        ReportChange::Delivered => ("delivered", None),
        ReportChange::Undelivered(reason) => ("undelivered", Some(reason.as_str())),
        ReportChange::Submitted => ("sent", None),
    }
}

/// The `SET` and condition of a round's update, over the round's rows `v(id, state, at,
/// reason)`.
const REPORT_SET: &str = "SET state = v.state, \
     delivered_at = CASE WHEN v.state = 'delivered' THEN v.at ELSE contact.delivered_at END, \
     last_error = CASE WHEN v.state = 'undelivered' THEN v.reason ELSE contact.last_error END, \
     sent_at = COALESCE(contact.sent_at, v.at)";
const REPORT_WHERE: &str = "contact.id = v.id AND ((contact.state = 'pending' AND EXISTS \
     (SELECT 1 FROM dispatch d WHERE d.contact_id = contact.id AND d.attempt > 0)) \
     OR (v.state <> 'sent' AND contact.state = 'sent'))";

/// One round of [`Store::record_reports`] on PostgreSQL: one statement (the same text for
/// any round, so prepared once per connection); the changed contacts' queue rows go in it.
async fn record_round_pg<C: ConnectionTrait>(c: &C, rows: &[&Report]) -> Result<HashSet<i64>> {
    let (mut ids, mut states, mut ats, mut reasons) = (
        crate::contacts::PgArray::default(),
        crate::contacts::PgArray::default(),
        crate::contacts::PgArray::default(),
        crate::contacts::PgArray::default(),
    );
    for r in rows {
        let (state, reason) = report_columns(r);
        ids.int(Some(r.contact_id));
        states.text(state);
        ats.int(Some(r.at));
        reasons.opt_text(reason);
    }
    let sql = format!(
        "WITH v AS (SELECT * FROM unnest(?::text::bigint[], ?::text::text[], ?::text::bigint[], ?::text::text[]) \
           AS u(id, state, at, reason)), \
         changed AS (UPDATE contact {REPORT_SET} FROM v WHERE {REPORT_WHERE} RETURNING contact.id), \
         dequeued AS (DELETE FROM dispatch WHERE contact_id = ANY(ARRAY(SELECT id FROM changed))) \
         SELECT id FROM changed"
    );
    let values: Vec<Value> = vec![
        ids.finish().into(),
        states.finish().into(),
        ats.finish().into(),
        reasons.finish().into(),
    ];
    query(c, &sql, values)
        .await?
        .iter()
        .map(|r| Ok(r.try_get::<i64>("", "id")?))
        .collect()
}

/// One round of [`Store::record_reports`] on SQLite: an update per 500 reports, then the
/// changed contacts' queue rows deleted.
async fn record_round_sqlite<C: ConnectionTrait>(c: &C, rows: &[&Report]) -> Result<HashSet<i64>> {
    let mut changed = HashSet::with_capacity(rows.len());
    for chunk in rows.chunks(500) {
        let sql = format!(
            "WITH v(id, state, at, reason) AS (VALUES {}) \
             UPDATE contact {REPORT_SET} FROM v WHERE {REPORT_WHERE} RETURNING contact.id",
            vec!["(?, ?, ?, ?)"; chunk.len()].join(", ")
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
        for r in chunk {
            let (state, reason) = report_columns(r);
            values.extend([
                r.contact_id.into(),
                state.into(),
                r.at.into(),
                reason.map(str::to_owned).into(),
            ]);
        }
        let ids: Vec<i64> = query(c, &sql, values)
            .await?
            .iter()
            .map(|r| r.try_get::<i64>("", "id"))
            .collect::<std::result::Result<_, _>>()?;
        for part in ids.chunks(1000) {
            let sql = format!(
                "DELETE FROM dispatch WHERE contact_id IN ({})",
                marks(part.len())
            );
            exec(c, &sql, part.iter().map(|id| Value::from(*id))).await?;
        }
        changed.extend(ids);
    }
    Ok(changed)
}

/// Unprocessed inbound events, for progress displays and tests.
pub async fn count_unprocessed<C: ConnectionTrait>(c: &C) -> Result<u64> {
    let rows = query(
        c,
        "SELECT COUNT(*) AS n FROM inbound WHERE processed = ?",
        [false.into()],
    )
    .await?;
    Ok(rows[0].try_get::<i64>("", "n")? as u64)
}

/// The state of an agent task: open until an agent reports its outcome, then done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Open,
    Done,
    /// Not worked by its deadline (an outbound call past its wave's window): its contact
    /// counts as unreached.
    Expired,
}

impl TaskState {
    /// Every state, for "expected one of" messages.
    pub const ALL: [TaskState; 3] = [TaskState::Open, TaskState::Done, TaskState::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Open => "open",
            TaskState::Done => "done",
            TaskState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`Store::reported_keys`] on a connection or transaction of the caller.
pub(crate) async fn reported_keys_in<C: ConnectionTrait>(
    c: &C,
    keys: &[&str],
) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for chunk in keys.chunks(1000) {
        let sql = format!(
            "SELECT DISTINCT idem_key FROM inbound WHERE source = ? AND idem_key IN ({})",
            marks(chunk.len())
        );
        let values =
            std::iter::once(Value::from(source::DLR)).chain(chunk.iter().map(|k| Value::from(*k)));
        for r in query(c, &sql, values).await? {
            out.insert(r.try_get::<String>("", "idem_key")?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::TaskState;

    #[test]
    fn every_task_state_parses_back() {
        for t in TaskState::ALL {
            assert_eq!(TaskState::parse(t.as_str()), Some(t));
        }
        assert_eq!(TaskState::parse("closed"), None);
    }
}
