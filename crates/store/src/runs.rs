//! Workflow versions, schedule slots, runs, wave runs and durable timers.

use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait};

use crate::{Millis, Result, Store, exec, query};

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct VersionRow {
    pub id: i64,
    pub campaign: String,
    pub hash: String,
    pub loaded_at: i64,
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct RunRow {
    pub id: i64,
    pub campaign: String,
    pub version_id: i64,
    pub slot_id: Option<i64>,
    pub trigger: String,
    pub state: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct WaveRunRow {
    pub id: i64,
    pub run_id: i64,
    pub wave: String,
    pub ordinal: i32,
    pub channel: String,
    pub state: String,
    pub planned_at: Option<i64>,
    pub closes_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct SlotRow {
    pub id: i64,
    pub campaign: String,
    pub slot_at: i64,
    pub state: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct TimerRow {
    pub id: i64,
    pub kind: String,
    pub wave_run_id: i64,
    pub fire_at: i64,
}

/// Wave run states.
pub mod wave_state {
    /// Waiting for its predecessor's window to close (or the run to start).
    pub const PENDING: &str = "pending";
    /// Contacts written; dispatch and the response window are running.
    pub const OPEN: &str = "open";
    /// The response window closed; successors may be planned.
    pub const CLOSED: &str = "closed";
}

/// What starting a run needs.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub campaign: &'a str,
    pub version_id: i64,
    /// The schedule slot this run belongs to; `None` for manual runs.
    pub slot_at: Option<Millis>,
    pub trigger: &'a str,
    /// (wave id, channel), in workflow order.
    pub waves: &'a [(String, String)],
    pub now: Millis,
}

impl Store {
    /// Records a workflow version by content hash; returns its id (existing or new).
    pub async fn upsert_version(
        &self,
        campaign: &str,
        hash: &str,
        source: &str,
        now: Millis,
    ) -> Result<i64> {
        exec(
            self.db(),
            "INSERT INTO workflow_version (campaign, hash, source, loaded_at) VALUES (?, ?, ?, ?) ON CONFLICT (campaign, hash) DO NOTHING",
            [campaign.into(), hash.into(), source.into(), now.into()],
        )
        .await?;
        let rows = query(
            self.db(),
            "SELECT id FROM workflow_version WHERE campaign = ? AND hash = ?",
            [campaign.into(), hash.into()],
        )
        .await?;
        Ok(rows[0].try_get::<i64>("", "id")?)
    }

    pub async fn versions(&self, campaign: &str) -> Result<Vec<VersionRow>> {
        let rows = query(
            self.db(),
            "SELECT id, campaign, hash, loaded_at FROM workflow_version WHERE campaign = ? ORDER BY id",
            [campaign.into()],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(VersionRow::from_query_result(r, "")?))
            .collect()
    }

    /// The stored source of a version: runs execute the version they started with, even
    /// after the file on disk changed.
    pub async fn version_source(
        &self,
        version_id: i64,
    ) -> Result<Option<(String, String, String)>> {
        let rows = query(
            self.db(),
            "SELECT campaign, hash, source FROM workflow_version WHERE id = ?",
            [version_id.into()],
        )
        .await?;
        Ok(match rows.first() {
            Some(r) => Some((
                r.try_get("", "campaign")?,
                r.try_get("", "hash")?,
                r.try_get("", "source")?,
            )),
            None => None,
        })
    }

    /// Starts a run and its wave runs in one transaction. For a scheduled run the slot row is
    /// inserted in the same transaction with `ON CONFLICT DO NOTHING`: when another replica
    /// (or an earlier life of this daemon) already took the slot, nothing is written and
    /// `None` is returned.
    pub async fn start_run(&self, r: NewRun<'_>) -> Result<Option<i64>> {
        let tx = self.db().begin().await?;
        let slot_id = match r.slot_at {
            Some(slot_at) => {
                let Some(id) =
                    insert_slot(&tx, r.campaign, r.version_id, slot_at, "run", None, r.now).await?
                else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                Some(id)
            }
            None => None,
        };
        let rows = query(
            &tx,
            "INSERT INTO run (campaign, version_id, slot_id, trigger, state, started_at) VALUES (?, ?, ?, ?, 'active', ?) RETURNING id",
            [r.campaign.into(), r.version_id.into(), slot_id.into(), r.trigger.into(), r.now.into()],
        )
        .await?;
        let run_id: i64 = rows[0].try_get("", "id")?;
        for (i, (wave, channel)) in r.waves.iter().enumerate() {
            exec(
                &tx,
                "INSERT INTO wave_run (run_id, wave, ordinal, channel, state) VALUES (?, ?, ?, ?, 'pending')",
                [run_id.into(), wave.as_str().into(), (i as i32).into(), channel.as_str().into()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(run_id))
    }

    /// Records a slot that was deliberately not run (season, holiday, catch-up policy).
    /// Returns false when the slot was already recorded.
    pub async fn skip_slot(
        &self,
        campaign: &str,
        version_id: i64,
        slot_at: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<bool> {
        Ok(insert_slot(
            self.db(),
            campaign,
            version_id,
            slot_at,
            "skipped",
            Some(reason),
            now,
        )
        .await?
        .is_some())
    }

    /// The latest slot recorded for a campaign (run or skipped).
    pub async fn latest_slot(&self, campaign: &str) -> Result<Option<Millis>> {
        let rows = query(
            self.db(),
            "SELECT MAX(slot_at) AS m FROM schedule_slot WHERE campaign = ?",
            [campaign.into()],
        )
        .await?;
        Ok(rows[0].try_get::<Option<i64>>("", "m")?)
    }

    pub async fn slots(&self, campaign: &str) -> Result<Vec<SlotRow>> {
        let rows = query(
            self.db(),
            "SELECT id, campaign, slot_at, state, reason FROM schedule_slot WHERE campaign = ? ORDER BY slot_at",
            [campaign.into()],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(SlotRow::from_query_result(r, "")?))
            .collect()
    }

    pub async fn active_runs(&self) -> Result<Vec<RunRow>> {
        self.runs_where("state = 'active'", []).await
    }

    pub async fn run(&self, id: i64) -> Result<Option<RunRow>> {
        Ok(self
            .runs_where("id = ?", [id.into()])
            .await?
            .into_iter()
            .next())
    }

    pub async fn runs_of(&self, campaign: &str) -> Result<Vec<RunRow>> {
        self.runs_where("campaign = ?", [campaign.into()]).await
    }

    async fn runs_where(
        &self,
        cond: &str,
        values: impl IntoIterator<Item = sea_orm::Value>,
    ) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT id, campaign, version_id, slot_id, trigger, state, started_at, finished_at FROM run WHERE {cond} ORDER BY id"
        );
        let rows = query(self.db(), &sql, values).await?;
        rows.iter()
            .map(|r| Ok(RunRow::from_query_result(r, "")?))
            .collect()
    }

    pub async fn wave_runs(&self, run_id: i64) -> Result<Vec<WaveRunRow>> {
        let rows = query(
            self.db(),
            "SELECT id, run_id, wave, ordinal, channel, state, planned_at, closes_at FROM wave_run WHERE run_id = ? ORDER BY ordinal",
            [run_id.into()],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(WaveRunRow::from_query_result(r, "")?))
            .collect()
    }

    pub async fn wave_run(&self, id: i64) -> Result<Option<WaveRunRow>> {
        let rows = query(
            self.db(),
            "SELECT id, run_id, wave, ordinal, channel, state, planned_at, closes_at FROM wave_run WHERE id = ?",
            [id.into()],
        )
        .await?;
        rows.first()
            .map(|r| Ok(WaveRunRow::from_query_result(r, "")?))
            .transpose()
    }

    /// Moves a wave run from `from` to `to`; false when it was not in `from` (someone else
    /// already moved it).
    pub async fn transition_wave(&self, wave_run_id: i64, from: &str, to: &str) -> Result<bool> {
        transition_wave(self.db(), wave_run_id, from, to).await
    }

    /// Marks a run done with its evaluation report, taken as built from every response
    /// recorded so far; false when it was not active. When responses may be recorded while
    /// the report is built, use [`Store::finish_run_as_of`].
    pub async fn finish_run(&self, run_id: i64, report_json: &str, now: Millis) -> Result<bool> {
        let res = exec(
            self.db(),
            "UPDATE run SET state = 'done', finished_at = ?, report = ?, report_seq = response_seq WHERE id = ? AND state = 'active'",
            [now.into(), report_json.into(), run_id.into()],
        )
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Marks a run done with a report built from the responses up to `response_seq` (read
    /// with [`Store::response_seq`] BEFORE building it). A response recorded meanwhile leaves
    /// the report stale, and [`Store::stale_reports`] names the run until it is rebuilt.
    pub async fn finish_run_as_of(
        &self,
        run_id: i64,
        report_json: &str,
        response_seq: i64,
        now: Millis,
    ) -> Result<bool> {
        finish_run_in(self.db(), run_id, report_json, response_seq, now, None).await
    }

    /// How many responses have been recorded for a run: read before building its report.
    pub async fn response_seq(&self, run_id: i64) -> Result<i64> {
        let rows = query(
            self.db(),
            "SELECT response_seq FROM run WHERE id = ?",
            [run_id.into()],
        )
        .await?;
        Ok(match rows.first() {
            Some(r) => r.try_get::<i64>("", "response_seq")?,
            None => 0,
        })
    }

    /// Finished runs whose stored report misses responses recorded after it was built (a
    /// response received in time but attributed after the run finished).
    pub async fn stale_reports(&self, limit: u64) -> Result<Vec<RunRow>> {
        let rows = query(
            self.db(),
            "SELECT id, campaign, version_id, slot_id, trigger, state, started_at, finished_at FROM run \
             WHERE state = 'done' AND report_seq <> response_seq ORDER BY id LIMIT ?",
            [(limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(RunRow::from_query_result(r, "")?))
            .collect()
    }

    /// Replaces a finished run's report with one built from the responses up to
    /// `response_seq`; false when the run is not finished or a newer report is stored.
    /// `report_due_at` as in [`Store::finish_run_with_mail`].
    pub async fn refresh_report(
        &self,
        run_id: i64,
        report_json: &str,
        response_seq: i64,
        report_due_at: Option<Millis>,
    ) -> Result<bool> {
        let tx = self.db().begin().await?;
        self.check_fence(&tx).await?;
        let res = exec(
            &tx,
            "UPDATE run SET report = ?, report_seq = ?, report_due_at = ? WHERE id = ? AND state = 'done' AND report_seq < ?",
            [report_json.into(), response_seq.into(), report_due_at.into(), run_id.into(), response_seq.into()],
        )
        .await?;
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    /// Finished runs whose provisional report is due to be built again at `now` (a retention
    /// goal's window still running, or just ended), with the due time their row holds.
    pub async fn due_reports(&self, now: Millis, limit: u64) -> Result<Vec<(RunRow, Millis)>> {
        let rows = query(
            self.db(),
            "SELECT id, campaign, version_id, slot_id, trigger, state, started_at, finished_at, report_due_at FROM run \
             WHERE state = 'done' AND report_due_at <= ? ORDER BY report_due_at, id LIMIT ?",
            [now.into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    RunRow::from_query_result(r, "")?,
                    r.try_get::<i64>("", "report_due_at")?,
                ))
            })
            .collect()
    }

    /// Replaces a due report (see [`Store::due_reports`]) with one built from the responses
    /// up to `response_seq`, and sets when it is due next (`None`: final). Only while the
    /// row is still due at `was_due` and holds no report built from more responses, so a
    /// rebuild that raced another writes nothing.
    pub async fn rebuild_due_report(
        &self,
        run_id: i64,
        report_json: &str,
        response_seq: i64,
        was_due: Millis,
        next_due: Option<Millis>,
    ) -> Result<bool> {
        let tx = self.db().begin().await?;
        self.check_fence(&tx).await?;
        let res = exec(
            &tx,
            "UPDATE run SET report = ?, report_seq = ?, report_due_at = ? \
             WHERE id = ? AND state = 'done' AND report_due_at = ? AND report_seq <= ?",
            [
                report_json.into(),
                response_seq.into(),
                next_due.into(),
                run_id.into(),
                was_due.into(),
                response_seq.into(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn run_report(&self, run_id: i64) -> Result<Option<String>> {
        let rows = query(
            self.db(),
            "SELECT report FROM run WHERE id = ?",
            [run_id.into()],
        )
        .await?;
        Ok(match rows.first() {
            Some(r) => r.try_get::<Option<String>>("", "report")?,
            None => None,
        })
    }

    /// Timers whose fire time has passed, by the clock value given (the database clock),
    /// and that the inbound barrier lets through.
    ///
    /// The barrier: a window does not close while an inbound row received at or before its
    /// close is still untried by attribution, because closing lets the next wave pick its
    /// non-responders, and a reply waiting in the queue would make its sender one. Every
    /// replica obeys it, lease holder for attribution or not. It is bounded twice, so rows
    /// that can never be attributed cannot hold windows shut: it waits only for rows
    /// attribution has not looked at yet (a deferred row has been tried, see
    /// [`Store::mark_inbound_deferred`]), and for at most `grace` past the fire time (when
    /// no replica attributes at all, e.g. every one fails on the same row, windows close
    /// late rather than never). The barrier spans all campaigns: a backlog of untried rows
    /// delays every window it could concern, never a window whose close is older than
    /// every untried row. A wave with decided contacts not yet written (`crate::batches`)
    /// does not close: the next wave and the report read all of its contacts.
    pub async fn due_timers(
        &self,
        now: Millis,
        grace: Millis,
        limit: u64,
    ) -> Result<Vec<TimerRow>> {
        let rows = query(
            self.db(),
            "SELECT t.id, t.kind, t.wave_run_id, t.fire_at FROM timer t WHERE t.state = 'pending' AND t.fire_at <= ? \
             AND (t.fire_at < ? OR NOT EXISTS (SELECT 1 FROM inbound i \
                  WHERE i.processed = ? AND i.tries = 0 AND i.received_at <= t.fire_at)) \
             AND NOT EXISTS (SELECT 1 FROM planned_batch b WHERE b.wave_run_id = t.wave_run_id) \
             ORDER BY t.fire_at LIMIT ?",
            [now.into(), now.saturating_sub(grace).into(), false.into(), (limit as i64).into()],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(TimerRow::from_query_result(r, "")?))
            .collect()
    }

    /// Takes or renews the lease `name` for `holder` until `until`; true when `holder` has it.
    /// For work one replica at a time must do; a dead holder's lease simply runs out.
    pub async fn try_singleton_lease(
        &self,
        name: &str,
        holder: &str,
        until: Millis,
        now: Millis,
    ) -> Result<bool> {
        exec(
            self.db(),
            "INSERT INTO singleton_lease (name, holder, until) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
            [name.into(), holder.into(), until.into()],
        )
        .await?;
        let res = exec(
            self.db(),
            "UPDATE singleton_lease SET holder = ?, until = ? WHERE name = ? AND (holder = ? OR until < ?)",
            [holder.into(), until.into(), name.into(), holder.into(), now.into()],
        )
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The earliest pending timer, to sleep until it.
    pub async fn next_timer_at(&self) -> Result<Option<Millis>> {
        let rows = query(
            self.db(),
            "SELECT MIN(fire_at) AS m FROM timer WHERE state = 'pending'",
            [],
        )
        .await?;
        Ok(rows[0].try_get::<Option<i64>>("", "m")?)
    }
}

/// What [`Store::close_run_early`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClosedEarly {
    /// Waves not planned yet, closed without contacts.
    pub waves_skipped: u64,
    /// Open waves whose window now closes at once.
    pub windows_closed: u64,
    /// Queued messages not sent yet, expired.
    pub expired: u64,
}

impl Store {
    /// Closes an active run before its time (a newer run of the campaign replaces it,
    /// `schedule.overlap: close`), in one transaction: waves not planned yet close with no
    /// contacts, queued messages not yet handed to a gateway expire with `reason` (a message
    /// under a lease is in flight and settles as usual), and the open waves' window timers
    /// are brought forward to `now`, so housekeeping closes them (after the inbound barrier)
    /// and the run finishes with its report as any other.
    pub async fn close_run_early(
        &self,
        run_id: i64,
        now: Millis,
        reason: &str,
    ) -> Result<ClosedEarly> {
        let tx = self.db().begin().await?;
        let waves_skipped = exec(
            &tx,
            "UPDATE wave_run SET state = ? WHERE run_id = ? AND state = ?",
            [
                wave_state::CLOSED.into(),
                run_id.into(),
                wave_state::PENDING.into(),
            ],
        )
        .await?
        .rows_affected();
        // Decided contacts still in batches are written first, so they expire below with
        // the queued ones instead of being queued after the run closed.
        while crate::batches::take_one(&tx, None, crate::batches::Wait::Block)
            .await?
            .is_some()
        {}
        let removed = query(
            &tx,
            "DELETE FROM dispatch WHERE lease_token IS NULL \
             AND contact_id IN (SELECT id FROM contact WHERE run_id = ?) RETURNING contact_id",
            [run_id.into()],
        )
        .await?;
        let expired = crate::contacts::expire_removed(&tx, &removed, reason).await?;
        let windows_closed = exec(
            &tx,
            "UPDATE timer SET fire_at = ? WHERE state = 'pending' AND fire_at > ? \
             AND wave_run_id IN (SELECT id FROM wave_run WHERE run_id = ? AND state = ?)",
            [
                now.into(),
                now.into(),
                run_id.into(),
                wave_state::OPEN.into(),
            ],
        )
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(ClosedEarly {
            waves_skipped,
            windows_closed,
            expired,
        })
    }

    /// Fires a due window timer and closes its wave (`open` → `closed`), in one transaction.
    /// True only for the caller that did both: a timer another replica fired, or a wave that
    /// was not open, closes nothing twice.
    pub async fn fire_window_timer(&self, timer_id: i64, wave_run_id: i64) -> Result<bool> {
        let tx = self.db().begin().await?;
        let fired = fire_timer(&tx, timer_id).await?
            && transition_wave(&tx, wave_run_id, wave_state::OPEN, wave_state::CLOSED).await?;
        tx.commit().await?;
        Ok(fired)
    }
}

/// [`Store::finish_run_as_of`] inside the caller's transaction (with the report mail: see
/// [`Store::finish_run_with_mail`]).
pub(crate) async fn finish_run_in<C: ConnectionTrait>(
    c: &C,
    run_id: i64,
    report_json: &str,
    response_seq: i64,
    now: Millis,
    report_due_at: Option<Millis>,
) -> Result<bool> {
    let res = exec(
        c,
        "UPDATE run SET state = 'done', finished_at = ?, report = ?, report_seq = ?, report_due_at = ? WHERE id = ? AND state = 'active'",
        [now.into(), report_json.into(), response_seq.into(), report_due_at.into(), run_id.into()],
    )
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Moves a wave run between states inside the caller's transaction.
pub async fn transition_wave<C: ConnectionTrait>(
    c: &C,
    wave_run_id: i64,
    from: &str,
    to: &str,
) -> Result<bool> {
    let res = exec(
        c,
        "UPDATE wave_run SET state = ? WHERE id = ? AND state = ?",
        [to.into(), wave_run_id.into(), from.into()],
    )
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Records a planned wave's window and arms the durable timer that closes it. Part of the
/// planner's transaction, after it moved the wave from `pending` to `open`.
pub async fn set_wave_window<C: ConnectionTrait>(
    c: &C,
    wave_run_id: i64,
    planned_at: Millis,
    closes_at: Millis,
) -> Result<()> {
    exec(
        c,
        "UPDATE wave_run SET planned_at = ?, closes_at = ? WHERE id = ?",
        [planned_at.into(), closes_at.into(), wave_run_id.into()],
    )
    .await?;
    exec(
        c,
        "INSERT INTO timer (kind, wave_run_id, fire_at, state) VALUES ('wave_close', ?, ?, 'pending') ON CONFLICT (kind, wave_run_id) DO NOTHING",
        [wave_run_id.into(), closes_at.into()],
    )
    .await?;
    Ok(())
}

/// Takes a due timer: only the caller whose update changes the row fires it.
pub async fn fire_timer<C: ConnectionTrait>(c: &C, timer_id: i64) -> Result<bool> {
    let res = exec(
        c,
        "UPDATE timer SET state = 'fired' WHERE id = ? AND state = 'pending'",
        [timer_id.into()],
    )
    .await?;
    Ok(res.rows_affected() == 1)
}

async fn insert_slot<C: ConnectionTrait>(
    c: &C,
    campaign: &str,
    version_id: i64,
    slot_at: Millis,
    state: &str,
    reason: Option<&str>,
    now: Millis,
) -> Result<Option<i64>> {
    let rows = query(
        c,
        "INSERT INTO schedule_slot (campaign, version_id, slot_at, state, reason, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (campaign, slot_at) DO NOTHING RETURNING id",
        [campaign.into(), version_id.into(), slot_at.into(), state.into(), reason.map(str::to_owned).into(), now.into()],
    )
    .await?;
    Ok(match rows.first() {
        Some(r) => Some(r.try_get::<i64>("", "id")?),
        None => None,
    })
}
