//! The call-centre queue over agent tasks (`agent_task`, columns of migration 28).
//!
//! A queued task (its team is declared in `workflows/teams.yaml`) opens waiting; the
//! engine's release step ([`Store::release_tasks`]) lets at most the team's pacing into the
//! queue in any hour, spread over the hour (at most `ceil(pacing * m / 60)` in the last `m`
//! minutes, see [`spread_room`]), and at most its capacity in a local day, counted here from the tasks'
//! own `released_at` / `released_day`, so every replica counts the same rows. On
//! PostgreSQL the count and the release run under a transaction advisory lock per team, so
//! two replicas releasing for one team serialize and the second counts the first's tasks;
//! SQLite has one writer.
//!
//! Agents and dialers take tasks with [`Store::claim_tasks`]: one statement that holds the
//! best free tasks for the caller (`held_by`, `held_until`). PostgreSQL skips rows another
//! claim has locked (`FOR UPDATE SKIP LOCKED`); SQLite runs one writing statement at a
//! time. A task is therefore held by at most one agent: a hold is taken only on a task
//! whose hold is empty or ran out, and the conditions are re-checked on the locked row.
//!
//! `call back later` ([`Store::callback_task`]) is a promise made by one agent: the task
//! goes back to the queue, stays open (it is not a completed contact: no outcome is
//! recorded), is served to nobody before the agreed time, and from then is offered to the
//! agent that agreed it for [`CALLBACK_GRACE_MS`], to anyone of the team after that. An
//! agent asking for work within the grace is on shift; one that does not ask has its
//! promise kept by a colleague. A task still open at its deadline expires as ever: unreached.

use sea_orm::{FromQueryResult, TransactionTrait, Value};

use crate::contacts::ContactState;
use crate::inbound::{TASK_COLS, TaskRow, TaskState};
use crate::{Millis, Result, Store, StoreError, exec, marks, query};

const HOUR: Millis = 3_600_000;

/// How long a due call back waits for the agent that agreed it before any agent of the
/// team may take it: long enough for that agent to finish the call in hand (a hold is
/// 15 minutes), short enough that the subscriber is called near the time promised.
pub const CALLBACK_GRACE_MS: Millis = 10 * 60_000;

/// One paced team's limits for one release step, as the engine reads them from the teams
/// file and the team's local clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace<'a> {
    pub team: &'a str,
    /// The team's local date (`YYYY-MM-DD`): what `capacity_per_day` counts against.
    pub day: &'a str,
    pub capacity_per_day: u32,
    pub pacing_per_hour: u32,
    /// The stored catalogue attribute that orders the queue (highest first).
    pub value: &'a str,
    /// Minutes since the releasing engine's previous step (0 to [`MAX_CATCH_UP_MINUTES`]):
    /// windows that short are not checked by [`spread_room`], since no step ran within
    /// them to release their share. 0 for an engine stepping every few seconds.
    pub catch_up_minutes: u32,
}

/// The most minutes of spread pacing one release step catches up: a step after a long
/// pause (a daemon restart) still trickles rather than releasing an hour's pacing at once.
pub const MAX_CATCH_UP_MINUTES: u32 = 15;

/// What one team's release step found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Tasks released now.
    pub released: u64,
    /// Released on the team's day, including these.
    pub today: u64,
    /// Released in the hour up to now, including these.
    pub last_hour: u64,
}

/// How [`Store::callback_task`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// Re-queued for the time asked.
    Requeued,
    /// No such task.
    NotFound,
    /// The task is not open any more (its state).
    Closed(String),
    /// The caller does not hold it (nobody does, or someone else).
    NotHeld,
    /// The time asked is not before the task's deadline (the deadline).
    AfterDeadline(Millis),
}

/// How [`Store::renew_hold`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Held until then now.
    Renewed(Millis),
    /// No such task.
    NotFound,
    /// The task is not open any more (its state).
    Closed(String),
    /// The caller does not hold it (nobody does, or someone else).
    NotHeld,
}

/// Free tasks of a team's queue for a holder at `now` (bound: team, open, now, now,
/// holder, now - grace, now): a due call back is the promising agent's alone for the grace.
const FREE: &str = "team = ? AND state = ? AND released_at IS NOT NULL \
     AND (held_until IS NULL OR held_until <= ?) \
     AND (callback_at IS NULL OR callback_at <= ?) \
     AND (callback_for IS NULL OR callback_for = ? OR callback_at <= ?) \
     AND (deadline IS NULL OR deadline > ?)";

/// The queue's order: a due `call back later` first (the subscriber was promised the time),
/// then the most valuable subscriber, then the soonest due (its SLA, else its deadline).
const ORDER: &str = "CASE WHEN callback_at IS NULL THEN 1 ELSE 0 END, callback_at, \
     CASE WHEN value IS NULL THEN 1 ELSE 0 END, value DESC, \
     CASE WHEN COALESCE(due_at, deadline) IS NULL THEN 1 ELSE 0 END, COALESCE(due_at, deadline), id";

/// How many more tasks the pacing lets out now, given the releases of the last hour by
/// whole minutes ago (`per_minute[0]`: within the last minute). Spread over the hour: at
/// most `ceil(pacing * m / 60)` in the last `m` minutes, for every `m` from 1 to 60, so a
/// wave's hour comes a little each minute rather than all at its start; `m = 60` is the
/// hour's own bound (`pacing` in any hour). May be negative (over the bound: none now).
///
/// `catch_up_minutes` (at most [`MAX_CATCH_UP_MINUTES`]): the windows of that many minutes
/// or fewer are not checked, as no step ran within them; a step each few seconds passes 0.
pub fn spread_room(pacing_per_hour: u32, per_minute: &[i64; 60], catch_up_minutes: u32) -> i64 {
    let pacing = i64::from(pacing_per_hour);
    let skip = i64::from(catch_up_minutes.min(MAX_CATCH_UP_MINUTES));
    let mut seen = 0;
    let mut room = i64::MAX;
    for (i, n) in per_minute.iter().enumerate() {
        let m = i as i64 + 1;
        seen += n;
        if m > skip {
            room = room.min((pacing * m + 59) / 60 - seen);
        }
    }
    room
}

/// A stable advisory-lock key per team (FNV-1a), so every replica locks the same one.
fn team_lock_key(team: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"call-centre-release:".iter().chain(team.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

fn sort_queue(rows: &mut [TaskRow]) {
    rows.sort_by(|a, b| {
        let due = |t: &TaskRow| t.due_at.or(t.deadline);
        (a.callback_at.is_none(), a.callback_at)
            .cmp(&(b.callback_at.is_none(), b.callback_at))
            .then(
                b.value
                    .is_some()
                    .cmp(&a.value.is_some())
                    .then(b.value.unwrap_or(0.0).total_cmp(&a.value.unwrap_or(0.0))),
            )
            .then((due(a).is_none(), due(a)).cmp(&(due(b).is_none(), due(b))))
            .then(a.id.cmp(&b.id))
    });
}

impl Store {
    /// Releases waiting tasks of `pace.team` to its queue at `now`: as many as both the
    /// team's capacity left on its day and its pacing spread over the last hour
    /// ([`spread_room`]) allow, the most
    /// valuable subscribers first (then the soonest due), each stamped with the
    /// subscriber's value. Tasks not released keep waiting.
    pub async fn release_tasks(&self, pace: &Pace<'_>, now: Millis) -> Result<Released> {
        let cat = self.catalogue();
        // The attribute is checked against the catalogue (spec `teams`) and here again, as
        // it becomes a column name in the statement.
        let value_sql = match cat.get(pace.value) {
            Some(a) if matches!(a.kind, catalogue::Kind::Integer | catalogue::Kind::Decimal) => {
                format!("CAST(s.\"{}\" AS DOUBLE PRECISION)", a.name)
            }
            _ => {
                return Err(StoreError::Invalid(format!(
                    "the queue's value `{}` is not a stored integer or decimal attribute",
                    pace.value
                )));
            }
        };
        let tx = self.db().begin().await?;
        if self.is_postgres() {
            exec(
                &tx,
                "SELECT pg_advisory_xact_lock(?)",
                [team_lock_key(pace.team).into()],
            )
            .await?;
        } else {
            // Take SQLite's write lock before counting: a transaction that read first
            // could not write after another connection did (a busy snapshot) and would
            // fail; this way a second release waits for the first and counts its tasks.
            exec(&tx, "UPDATE agent_task SET team = team WHERE id = -1", []).await?;
        }
        let count = |sql: &'static str, v: Vec<Value>| {
            let tx = &tx;
            async move {
                let r = query(tx, sql, v).await?;
                Ok::<i64, StoreError>(r[0].try_get::<i64>("", "n")?)
            }
        };
        let today = count(
            "SELECT COUNT(*) AS n FROM agent_task WHERE team = ? AND released_day = ?",
            vec![pace.team.into(), pace.day.into()],
        )
        .await?;
        // The last hour's releases by whole minutes ago (0 to 59): at most 60 rows, whatever
        // the pacing. A stamp ahead of `now` (another replica's clock) counts as this minute.
        let rows = query(
            &tx,
            "SELECT (? - released_at) / 60000 AS m, COUNT(*) AS n FROM agent_task \
             WHERE team = ? AND queued = ? AND released_at > ? GROUP BY 1",
            vec![
                now.into(),
                pace.team.into(),
                true.into(),
                (now - HOUR).into(),
            ],
        )
        .await?;
        let mut per_minute = [0i64; 60];
        for r in &rows {
            let m = r.try_get::<i64>("", "m")?.clamp(0, 59) as usize;
            per_minute[m] += r.try_get::<i64>("", "n")?;
        }
        let last_hour: i64 = per_minute.iter().sum();
        let room = (i64::from(pace.capacity_per_day) - today)
            .min(spread_room(
                pace.pacing_per_hour,
                &per_minute,
                pace.catch_up_minutes,
            ))
            .max(0);
        let mut released = 0;
        if room > 0 {
            let sql = format!(
                "UPDATE agent_task SET released_at = ?, released_day = ?, updated_at = ?, \
                 value = (SELECT {value_sql} FROM subscriber s WHERE s.id = agent_task.subscriber_id) \
                 WHERE released_at IS NULL AND state = ? AND id IN (\
                 SELECT t.id FROM agent_task t JOIN subscriber s ON s.id = t.subscriber_id \
                 WHERE t.team = ? AND t.state = ? AND t.queued = ? AND t.released_at IS NULL \
                 ORDER BY CASE WHEN {value_sql} IS NULL THEN 1 ELSE 0 END, {value_sql} DESC, \
                 CASE WHEN COALESCE(t.due_at, t.deadline) IS NULL THEN 1 ELSE 0 END, \
                 COALESCE(t.due_at, t.deadline), t.id LIMIT ?)"
            );
            let open = TaskState::Open.as_str();
            released = exec(
                &tx,
                &sql,
                [
                    now.into(),
                    pace.day.into(),
                    now.into(),
                    open.into(),
                    pace.team.into(),
                    open.into(),
                    true.into(),
                    room.into(),
                ],
            )
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(Released {
            released,
            today: today as u64 + released,
            last_hour: last_hour as u64 + released,
        })
    }

    /// Holds up to `limit` free tasks of `team`'s queue for `holder` until `hold_until`:
    /// one statement, so two callers never hold the same task. The best first (see the
    /// module's order): a due callback, the most valuable subscriber, the soonest due.
    pub async fn claim_tasks(
        &self,
        team: &str,
        holder: &str,
        limit: u32,
        hold_until: Millis,
        now: Millis,
    ) -> Result<Vec<TaskRow>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let open = TaskState::Open.as_str();
        // The outer WHERE repeats the conditions: on PostgreSQL a row that changed after
        // the subquery's snapshot is re-checked on its newest version before it is taken.
        let sql = if self.is_postgres() {
            format!(
                "UPDATE agent_task SET held_by = ?, held_until = ?, callback_at = NULL, callback_for = NULL, updated_at = ? \
                 WHERE id = ANY(ARRAY(SELECT id FROM agent_task WHERE {FREE} ORDER BY {ORDER} \
                 LIMIT ? FOR UPDATE SKIP LOCKED)) AND {FREE} RETURNING {TASK_COLS}"
            )
        } else {
            format!(
                "UPDATE agent_task SET held_by = ?, held_until = ?, callback_at = NULL, callback_for = NULL, updated_at = ? \
                 WHERE id IN (SELECT id FROM agent_task WHERE {FREE} ORDER BY {ORDER} LIMIT ?) \
                 AND {FREE} RETURNING {TASK_COLS}"
            )
        };
        let free = || -> [Value; 7] {
            [
                team.into(),
                open.into(),
                now.into(),
                now.into(),
                holder.into(),
                (now - CALLBACK_GRACE_MS).into(),
                now.into(),
            ]
        };
        let mut values: Vec<Value> = vec![holder.into(), hold_until.into(), now.into()];
        values.extend(free());
        values.push(i64::from(limit).into());
        values.extend(free());
        let mut rows = query(self.db(), &sql, values)
            .await?
            .iter()
            .map(|r| Ok(TaskRow::from_query_result(r, "")?))
            .collect::<Result<Vec<TaskRow>>>()?;
        sort_queue(&mut rows);
        Ok(rows)
    }

    /// The open tasks of `team` that `holder` holds at `now`, at most `limit`, best first.
    pub async fn held_tasks(
        &self,
        team: &str,
        holder: &str,
        limit: u32,
        now: Millis,
    ) -> Result<Vec<TaskRow>> {
        let mut rows = query(
            self.db(),
            &format!(
                "SELECT {TASK_COLS} FROM agent_task WHERE team = ? AND state = ? AND held_by = ? \
                 AND held_until > ? ORDER BY {ORDER} LIMIT ?"
            ),
            [
                team.into(),
                TaskState::Open.as_str().into(),
                holder.into(),
                now.into(),
                i64::from(limit).into(),
            ],
        )
        .await?
        .iter()
        .map(|r| Ok(TaskRow::from_query_result(r, "")?))
        .collect::<Result<Vec<TaskRow>>>()?;
        sort_queue(&mut rows);
        Ok(rows)
    }

    /// Re-queues a task `holder` holds for `at` (`call back later`): the hold ends, the task
    /// stays open (no outcome is recorded) and the queue serves it again from `at`, first
    /// among the free ones then, to `holder` alone for [`CALLBACK_GRACE_MS`]. Refused when
    /// `at` is not before the task's deadline (it would expire unserved).
    pub async fn callback_task(
        &self,
        task_id: i64,
        holder: &str,
        at: Millis,
        now: Millis,
    ) -> Result<Callback> {
        let res = exec(
            self.db(),
            "UPDATE agent_task SET callback_at = ?, callback_for = ?, callbacks = callbacks + 1, \
             held_by = NULL, held_until = NULL, updated_at = ? \
             WHERE id = ? AND state = ? AND held_by = ? AND held_until > ? \
             AND (deadline IS NULL OR deadline > ?)",
            [
                at.into(),
                holder.into(),
                now.into(),
                task_id.into(),
                TaskState::Open.as_str().into(),
                holder.into(),
                now.into(),
                at.into(),
            ],
        )
        .await?;
        if res.rows_affected() == 1 {
            return Ok(Callback::Requeued);
        }
        let Some(t) = self.task(task_id).await? else {
            return Ok(Callback::NotFound);
        };
        Ok(if t.state != TaskState::Open.as_str() {
            Callback::Closed(t.state)
        } else if t.holder_at(now) != Some(holder) {
            Callback::NotHeld
        } else {
            Callback::AfterDeadline(t.deadline.unwrap_or(at))
        })
    }

    /// Extends `holder`'s hold on a task to `until` (a long call is not taken over), never
    /// past the task's deadline. Only the holder, while the hold lasts: the condition is
    /// the update's own, so a hold that ran out (and the task another agent took) stays lost.
    pub async fn renew_hold(
        &self,
        task_id: i64,
        holder: &str,
        until: Millis,
        now: Millis,
    ) -> Result<Renewal> {
        let rows = query(
            self.db(),
            "UPDATE agent_task SET held_until = CASE WHEN deadline IS NOT NULL AND deadline < ? \
             THEN deadline ELSE ? END, updated_at = ? \
             WHERE id = ? AND state = ? AND held_by = ? AND held_until > ? RETURNING held_until",
            [
                until.into(),
                until.into(),
                now.into(),
                task_id.into(),
                TaskState::Open.as_str().into(),
                holder.into(),
                now.into(),
            ],
        )
        .await?;
        if let Some(r) = rows.first() {
            return Ok(Renewal::Renewed(r.try_get::<i64>("", "held_until")?));
        }
        let Some(t) = self.task(task_id).await? else {
            return Ok(Renewal::NotFound);
        };
        Ok(if t.state != TaskState::Open.as_str() {
            Renewal::Closed(t.state)
        } else {
            Renewal::NotHeld
        })
    }

    /// One task, or `None` when there is no such task.
    pub async fn task(&self, task_id: i64) -> Result<Option<TaskRow>> {
        query(
            self.db(),
            &format!("SELECT {TASK_COLS} FROM agent_task WHERE id = ?"),
            [task_id.into()],
        )
        .await?
        .first()
        .map(|r| Ok(TaskRow::from_query_result(r, "")?))
        .transpose()
    }

    /// Expires open tasks past their deadline at `now`, and in the same transaction gives
    /// their contacts the state `expired` (unreached: never called) unless the subscriber
    /// responded some other way. Returns how many tasks expired. A conditional update on
    /// `state = open`, so a second replica expires nothing again, and a task whose outcome
    /// was recorded first is not expired.
    pub async fn expire_tasks(&self, now: Millis) -> Result<u64> {
        // The engine asks every tick: a read first, so a tick with nothing due opens no write
        // transaction (on SQLite that would take the one connection's write lock each time).
        let due = query(
            self.db(),
            "SELECT 1 AS one FROM agent_task WHERE state = ? AND deadline IS NOT NULL AND deadline <= ? LIMIT 1",
            [TaskState::Open.as_str().into(), now.into()],
        )
        .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let tx = self.db().begin().await?;
        let contacts: Vec<i64> = query(
            &tx,
            "UPDATE agent_task SET state = ?, held_by = NULL, held_until = NULL, updated_at = ? \
             WHERE state = ? AND deadline IS NOT NULL AND deadline <= ? RETURNING contact_id",
            [
                TaskState::Expired.as_str().into(),
                now.into(),
                TaskState::Open.as_str().into(),
                now.into(),
            ],
        )
        .await?
        .iter()
        .map(|r| r.try_get::<i64>("", "contact_id"))
        .collect::<std::result::Result<_, _>>()?;
        for chunk in contacts.chunks(1000) {
            let sql = format!(
                "UPDATE contact SET state = ?, last_error = ? WHERE state = ? AND responded_at IS NULL AND id IN ({})",
                marks(chunk.len())
            );
            let mut values: Vec<Value> = vec![
                ContactState::Expired.as_str().into(),
                "task not worked by its deadline".into(),
                ContactState::Sent.as_str().into(),
            ];
            values.extend(chunk.iter().map(|&id| id.into()));
            exec(&tx, &sql, values).await?;
            // A task nobody worked (a call, a preferred wave's service visit) is unreached:
            // its fallback, if the wave's deadline leaves time for one, goes with the expiry.
            crate::contacts::write_fallbacks(&tx, chunk, now).await?;
        }
        tx.commit().await?;
        Ok(contacts.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::team_lock_key;

    #[test]
    fn the_lock_key_is_stable_and_per_team() {
        assert_eq!(team_lock_key("a"), team_lock_key("a"));
        assert_ne!(team_lock_key("a"), team_lock_key("b"));
    }
}
