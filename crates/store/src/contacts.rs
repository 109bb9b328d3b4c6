//! The contact outbox: one row per (wave run, subscriber), planned in one transaction,
//! claimed by dispatchers with a lease, moved through its states with checks.
//!
//! States: `held` (control arm, never sent), `pending` → `sending` (claimed, leased) →
//! `sent` → `delivered` or `undelivered` (per the delivery report), or `failed` (the gateway
//! refused it, or attempts ran out) / `expired` (not sent by its deadline). A `sending` row whose lease ran out goes
//! back to `pending` ([`Store::reclaim_expired_leases`]); the worker that lost it can no
//! longer change it, because every transition out of `sending` names the lease token.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, FromQueryResult, Value};

use crate::subscribers::NewSubscriber;
use crate::{Millis, Result, Store, exec, marks, query};

/// Contact arms.
pub const TREATMENT: &str = "treatment";
pub const CONTROL: &str = "control";

/// A contact the planner decided on.
#[derive(Debug, Clone, PartialEq)]
pub struct NewContact {
    pub subscriber_id: i64,
    /// `treatment` or `control`.
    pub arm: &'static str,
    /// Earliest send time (quiet hours already applied).
    pub due_at: Millis,
    /// Latest send time; past it the contact expires unsent.
    pub send_by: Option<Millis>,
    /// The control-group stratum (e.g. the value tier), kept for evaluation by cell.
    pub stratum: String,
}

/// The idempotency key of a contact: the same for every attempt, unique per wave and subscriber.
pub fn idem_key(run_id: i64, wave: &str, subscriber_id: i64) -> String {
    format!("r{run_id}-{wave}-s{subscriber_id}")
}

/// Writes planned contacts; rows already present (a re-plan after a crash) are left alone.
pub async fn insert_contacts<C: ConnectionTrait>(
    c: &C,
    run_id: i64,
    wave_run_id: i64,
    wave: &str,
    channel: &str,
    rows: &[NewContact],
) -> Result<u64> {
    const COLS: usize = 11;
    let mut n = 0;
    for chunk in rows.chunks(1000) {
        let row = format!("({})", marks(COLS));
        let mut sql = String::from(
            "INSERT INTO contact (run_id, wave_run_id, subscriber_id, arm, channel, state, attempt, due_at, send_by, idem_key, stratum) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * COLS);
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&row);
            let state = if r.arm == CONTROL { "held" } else { "pending" };
            values.extend([
                run_id.into(),
                wave_run_id.into(),
                r.subscriber_id.into(),
                r.arm.into(),
                channel.into(),
                state.into(),
                0i32.into(),
                r.due_at.into(),
                r.send_by.into(),
                idem_key(run_id, wave, r.subscriber_id).into(),
                r.stratum.clone().into(),
            ]);
        }
        sql.push_str(" ON CONFLICT (wave_run_id, subscriber_id) DO NOTHING");
        n += exec(c, &sql, values).await?.rows_affected();
    }
    Ok(n)
}

/// Records the planner's funnel: how many subscribers each reason left out (or kept).
pub async fn insert_funnel<C: ConnectionTrait>(
    c: &C,
    wave_run_id: i64,
    counts: &[(String, u64)],
) -> Result<()> {
    for (reason, count) in counts {
        exec(
            c,
            "INSERT INTO funnel (wave_run_id, reason, count) VALUES (?, ?, ?) ON CONFLICT (wave_run_id, reason) DO NOTHING",
            [wave_run_id.into(), reason.as_str().into(), (*count as i64).into()],
        )
        .await?;
    }
    Ok(())
}

/// Records, per left-out subscriber, why the planner left them out.
pub async fn insert_decisions<C: ConnectionTrait>(
    c: &C,
    wave_run_id: i64,
    rows: &[(i64, &str)],
) -> Result<()> {
    for chunk in rows.chunks(1000) {
        let mut sql =
            String::from("INSERT INTO decision (wave_run_id, subscriber_id, reason) VALUES ");
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 3);
        for (i, (sub, reason)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?)");
            values.extend([wave_run_id.into(), (*sub).into(), (*reason).into()]);
        }
        sql.push_str(" ON CONFLICT (wave_run_id, subscriber_id) DO NOTHING");
        exec(c, &sql, values).await?;
    }
    Ok(())
}

/// Treatment contacts per subscriber planned or sent since `since` (any campaign): the
/// frequency cap counts what is already promised, not only what went out.
pub async fn recent_contact_counts<C: ConnectionTrait>(
    c: &C,
    since: Millis,
) -> Result<HashMap<i64, u32>> {
    let rows = query(
        c,
        "SELECT subscriber_id, COUNT(*) AS n FROM contact WHERE arm = 'treatment' AND state IN ('pending', 'sending', 'sent', 'delivered', 'undelivered') AND due_at >= ? GROUP BY subscriber_id",
        [since.into()],
    )
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        out.insert(
            r.try_get::<i64>("", "subscriber_id")?,
            r.try_get::<i64>("", "n")? as u32,
        );
    }
    Ok(out)
}

/// Treatment subscribers of a wave run who did not respond within its window.
pub async fn non_responders<C: ConnectionTrait>(c: &C, wave_run_id: i64) -> Result<Vec<i64>> {
    let rows = query(
        c,
        "SELECT subscriber_id FROM contact WHERE wave_run_id = ? AND arm = 'treatment' AND responded_at IS NULL ORDER BY subscriber_id",
        [wave_run_id.into()],
    )
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<i64>("", "subscriber_id")?))
        .collect()
}

/// The control arm chosen in a run's first wave, carried through every wave.
pub async fn control_members<C: ConnectionTrait>(c: &C, run_id: i64) -> Result<Vec<i64>> {
    let rows = query(
        c,
        "SELECT DISTINCT subscriber_id FROM contact WHERE run_id = ? AND arm = 'control' ORDER BY subscriber_id",
        [run_id.into()],
    )
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<i64>("", "subscriber_id")?))
        .collect()
}

/// A claimed contact with what the channel needs to render and send it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub id: i64,
    pub run_id: i64,
    pub wave_run_id: i64,
    pub wave: String,
    pub campaign: String,
    pub version_id: i64,
    pub subscriber_id: i64,
    pub idem_key: String,
    pub attempt: i32,
    pub send_by: Option<Millis>,
    pub subscriber: NewSubscriber,
}

#[derive(FromQueryResult)]
struct ClaimedHead {
    id: i64,
    run_id: i64,
    wave_run_id: i64,
    wave: String,
    campaign: String,
    version_id: i64,
    subscriber_id: i64,
    idem_key: String,
    attempt: i32,
    send_by: Option<i64>,
}

/// How the dispatcher asks for work.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub channel: &'a str,
    pub limit: u64,
    /// Lease end; a worker that has not finished by then loses the rows.
    pub lease_until: Millis,
    /// Unique per claim: every later transition of these rows must present it.
    pub token: &'a str,
    pub now: Millis,
}

/// Why a contact did not go out; also stored as its last error.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent {
        at: Millis,
    },
    /// Try again at `due_at` (transient failure or quiet hours reached while leased).
    Retry {
        due_at: Millis,
        error: String,
    },
    Failed {
        error: String,
    },
    Expired,
}

impl Store {
    /// Claims due contacts of one channel in ONE statement, so two workers (or replicas)
    /// never get the same row: PostgreSQL skips rows another transaction has locked; SQLite
    /// has one writer at a time.
    pub async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>> {
        // PostgreSQL: `id = ANY(ARRAY(...))` drives the update through the primary key (an IN
        // subquery became a hash join over the whole table), and SKIP LOCKED passes over rows
        // another replica holds. SQLite has one writer at a time.
        let sql = if self.is_postgres() {
            "UPDATE contact SET state = 'sending', attempt = attempt + 1, lease_until = ?, lease_token = ? \
             WHERE id = ANY(ARRAY(SELECT id FROM contact WHERE state = 'pending' AND channel = ? AND due_at <= ? \
             AND (send_by IS NULL OR send_by >= ?) ORDER BY due_at, id LIMIT ? FOR UPDATE SKIP LOCKED)) RETURNING id"
        } else {
            "UPDATE contact SET state = 'sending', attempt = attempt + 1, lease_until = ?, lease_token = ? \
             WHERE id IN (SELECT id FROM contact WHERE state = 'pending' AND channel = ? AND due_at <= ? \
             AND (send_by IS NULL OR send_by >= ?) ORDER BY due_at, id LIMIT ?) RETURNING id"
        };
        let claimed = query(
            self.db(),
            sql,
            [
                req.lease_until.into(),
                req.token.into(),
                req.channel.into(),
                req.now.into(),
                req.now.into(),
                (req.limit as i64).into(),
            ],
        )
        .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // Read the claimed rows back by primary key (the token stays as a check), so the
        // lease token needs no index: every index on `contact` is written on each claim and
        // settle, because those updates change indexed columns.
        let ids: Vec<i64> = claimed
            .iter()
            .map(|r| r.try_get::<i64>("", "id"))
            .collect::<Result<_, _>>()?;
        let sql = format!(
            "SELECT c.id, c.run_id, c.wave_run_id, w.wave, r.campaign, r.version_id, c.subscriber_id, c.idem_key, c.attempt, c.send_by, \
             s.msisdn, s.external_id, s.name, s.gender, s.age, s.region, s.brand, s.value_tier, s.arpu_3m, s.balance, s.tenure_months, \
             s.student_stage, s.campus, s.first_channel, s.first_channel_slot, s.second_channel, s.second_channel_slot, s.complaints_30d, \
             s.do_not_disturb, s.churn_risk, s.timezone, s.opt_out \
             FROM contact c JOIN wave_run w ON w.id = c.wave_run_id JOIN run r ON r.id = c.run_id JOIN subscriber s ON s.id = c.subscriber_id \
             WHERE c.id IN ({}) AND c.lease_token = ? AND c.state = 'sending' ORDER BY c.due_at, c.id",
            marks(ids.len())
        );
        let mut values: Vec<Value> = ids.iter().map(|id| Value::from(*id)).collect();
        values.push(req.token.into());
        let rows = query(self.db(), &sql, values).await?;
        rows.iter()
            .map(|r| {
                let h = ClaimedHead::from_query_result(r, "")?;
                Ok(Claimed {
                    id: h.id,
                    run_id: h.run_id,
                    wave_run_id: h.wave_run_id,
                    wave: h.wave,
                    campaign: h.campaign,
                    version_id: h.version_id,
                    subscriber_id: h.subscriber_id,
                    idem_key: h.idem_key,
                    attempt: h.attempt,
                    send_by: h.send_by,
                    subscriber: NewSubscriber::from_query_result(r, "")?,
                })
            })
            .collect()
    }

    /// Records what happened to claimed contacts. Rows whose lease was lost (token changed or
    /// state moved on) are not touched; returns how many rows changed.
    pub async fn settle(&self, token: &str, outcomes: &[(i64, Outcome)]) -> Result<u64> {
        let mut sent_by_at: HashMap<Millis, Vec<i64>> = HashMap::new();
        let mut changed = 0;
        let tx = crate::TransactionTrait::begin(self.db()).await?;
        for (id, outcome) in outcomes {
            match outcome {
                Outcome::Sent { at } => sent_by_at.entry(*at).or_default().push(*id),
                Outcome::Retry { due_at, error } => {
                    changed += exec(
                        &tx,
                        "UPDATE contact SET state = 'pending', due_at = ?, last_error = ?, lease_until = NULL WHERE id = ? AND lease_token = ? AND state = 'sending'",
                        [(*due_at).into(), error.as_str().into(), (*id).into(), token.into()],
                    )
                    .await?
                    .rows_affected();
                }
                Outcome::Failed { error } => {
                    changed += exec(
                        &tx,
                        "UPDATE contact SET state = 'failed', last_error = ?, lease_until = NULL WHERE id = ? AND lease_token = ? AND state = 'sending'",
                        [error.as_str().into(), (*id).into(), token.into()],
                    )
                    .await?
                    .rows_affected();
                }
                Outcome::Expired => {
                    changed += exec(
                        &tx,
                        "UPDATE contact SET state = 'expired', last_error = 'send-by deadline passed', lease_until = NULL WHERE id = ? AND lease_token = ? AND state = 'sending'",
                        [(*id).into(), token.into()],
                    )
                    .await?
                    .rows_affected();
                }
            }
        }
        for (at, ids) in sent_by_at {
            for chunk in ids.chunks(1000) {
                let sql = format!(
                    "UPDATE contact SET state = 'sent', sent_at = ?, lease_until = NULL WHERE lease_token = ? AND state = 'sending' AND id IN ({})",
                    marks(chunk.len())
                );
                let mut values: Vec<Value> = vec![at.into(), token.into()];
                values.extend(chunk.iter().map(|id| Value::from(*id)));
                changed += exec(&tx, &sql, values).await?.rows_affected();
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Puts contacts whose lease ran out back in the queue (their worker died or stalled).
    pub async fn reclaim_expired_leases(&self, now: Millis) -> Result<u64> {
        Ok(exec(
            self.db(),
            "UPDATE contact SET state = 'pending', lease_until = NULL WHERE state = 'sending' AND lease_until < ?",
            [now.into()],
        )
        .await?
        .rows_affected())
    }

    /// Expires pending contacts past their send-by deadline: an SMS hours late is harm.
    pub async fn expire_overdue(&self, now: Millis) -> Result<u64> {
        Ok(exec(
            self.db(),
            "UPDATE contact SET state = 'expired', last_error = 'send-by deadline passed' WHERE state = 'pending' AND send_by IS NOT NULL AND send_by < ?",
            [now.into()],
        )
        .await?
        .rows_affected())
    }

    /// Pending contacts of a wave run (to know when dispatch is finished).
    pub async fn pending_in_wave(&self, wave_run_id: i64) -> Result<u64> {
        let rows = query(
            self.db(),
            "SELECT COUNT(*) AS n FROM contact WHERE wave_run_id = ? AND state IN ('pending', 'sending')",
            [wave_run_id.into()],
        )
        .await?;
        Ok(rows[0].try_get::<i64>("", "n")? as u64)
    }

    /// The earliest due time of pending contacts on a channel, for the dispatcher to sleep.
    pub async fn next_due(&self, channel: &str) -> Result<Option<Millis>> {
        let rows = query(
            self.db(),
            "SELECT MIN(due_at) AS m FROM contact WHERE state = 'pending' AND channel = ?",
            [channel.into()],
        )
        .await?;
        Ok(rows[0].try_get::<Option<i64>>("", "m")?)
    }

    /// Counts of a wave run's contacts by arm and state, plus responders per arm.
    pub async fn wave_counts(&self, wave_run_id: i64) -> Result<WaveStateCounts> {
        let rows = query(
            self.db(),
            "SELECT arm, state, COUNT(*) AS n, SUM(CASE WHEN responded_at IS NULL THEN 0 ELSE 1 END) AS responded FROM contact WHERE wave_run_id = ? GROUP BY arm, state",
            [wave_run_id.into()],
        )
        .await?;
        let mut out = WaveStateCounts::default();
        for r in rows {
            let arm: String = r.try_get("", "arm")?;
            let state: String = r.try_get("", "state")?;
            let n = r.try_get::<i64>("", "n")? as u64;
            let responded = r.try_get::<Option<i64>>("", "responded")?.unwrap_or(0) as u64;
            out.by_state.insert((arm, state), (n, responded));
        }
        let funnel = query(
            self.db(),
            "SELECT reason, count FROM funnel WHERE wave_run_id = ? ORDER BY id",
            [wave_run_id.into()],
        )
        .await?;
        for r in funnel {
            out.funnel.push((
                r.try_get("", "reason")?,
                r.try_get::<i64>("", "count")? as u64,
            ));
        }
        Ok(out)
    }

    /// Every contact row's (subscriber, arm, state) of a wave run: for checks and reports.
    pub async fn contact_states(&self, wave_run_id: i64) -> Result<Vec<(i64, String, String)>> {
        self.per_subscriber(wave_run_id, "state").await
    }

    /// (subscriber, arm, `column`) for every contact of a wave run, by subscriber.
    /// `column` is a constant of this crate, never input.
    pub(crate) async fn per_subscriber(
        &self,
        wave_run_id: i64,
        column: &'static str,
    ) -> Result<Vec<(i64, String, String)>> {
        let sql = format!(
            "SELECT subscriber_id, arm, {column} AS v FROM contact WHERE wave_run_id = ? ORDER BY subscriber_id"
        );
        let rows = query(self.db(), &sql, [wave_run_id.into()]).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "subscriber_id")?,
                    r.try_get("", "arm")?,
                    r.try_get("", "v")?,
                ))
            })
            .collect()
    }
}

/// Counts for one wave run, keyed by (arm, state) → (contacts, responded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaveStateCounts {
    pub by_state: HashMap<(String, String), (u64, u64)>,
    /// The planner's funnel, in the order it was recorded.
    pub funnel: Vec<(String, u64)>,
}

impl WaveStateCounts {
    /// Contacts of `arm` in any of `states`.
    pub fn count(&self, arm: &str, states: &[&str]) -> u64 {
        self.by_state
            .iter()
            .filter(|((a, s), _)| a == arm && states.contains(&s.as_str()))
            .map(|(_, (n, _))| n)
            .sum()
    }

    pub fn responded(&self, arm: &str) -> u64 {
        self.by_state
            .iter()
            .filter(|((a, _), _)| a == arm)
            .map(|(_, (_, r))| r)
            .sum()
    }
}
