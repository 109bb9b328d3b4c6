//! The service-staff channel's step over agent tasks (`agent_task`, SLA columns from
//! migration 26): overdue open tasks are escalated once, and each staff member's digest
//! mail of new tasks and escalations is queued in the staff mail queue (`mail.rs`) in the
//! transaction that marks those tasks told.
//!
//! Idempotent across replicas without a lease of its own, as monitor digests are:
//! escalation is one conditional update (`escalated_at IS NULL`), so a second replica
//! escalates nothing again; a digest's transaction first marks its tasks told *only if they
//! were not* (`UPDATE … WHERE told_at IS NULL … RETURNING id`: on PostgreSQL a concurrent
//! replica's update waits for the first to commit and then finds nothing to mark), builds
//! the mail from the tasks it marked, and queues it under a dedup key per person per
//! interval; when that key is taken (the person had their digest this interval, or another
//! replica queued it) the transaction is dropped and the marks with it, so the tasks wait
//! for the next interval. A task is therefore in exactly one digest of its team and, once
//! escalated, in exactly one of its supervisor.

use std::collections::BTreeMap;

use sea_orm::{DatabaseTransaction, FromQueryResult, TransactionTrait, Value};

use crate::inbound::TaskState;
use crate::mail::NewMail;
use crate::{Millis, Result, Store, StoreError, exec, marks, query};

/// How many tasks one step reads for digests: the rest wait for the next step.
const DIGEST_READ_LIMIT: i64 = 10_000;

/// A task a staff member has not been told of yet, as their digest shows it.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct TaskNews {
    pub id: i64,
    pub kind: String,
    pub team: String,
    pub escalate_to: Option<String>,
    pub campaign: String,
    pub wave: String,
    pub msisdn: String,
    pub external_id: Option<String>,
    pub created_at: i64,
    pub due_at: Option<i64>,
    pub escalated_at: Option<i64>,
}

/// What one staff member is to be told of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// Open tasks of their team, new to them.
    pub new: Vec<TaskNews>,
    /// Overdue tasks escalated to them.
    pub escalated: Vec<TaskNews>,
}

/// One staff member's digest: dropped without [`TaskDigestTx::commit`], it rolls back.
#[derive(Debug)]
pub struct TaskDigestTx {
    tx: DatabaseTransaction,
    now: Millis,
}

const NEWS: &str = "SELECT t.id, t.kind, t.team, t.escalate_to, r.campaign, w.wave, s.msisdn, \
     s.external_id, t.created_at, t.due_at, t.escalated_at FROM agent_task t \
     JOIN contact c ON c.id = t.contact_id JOIN run r ON r.id = c.run_id \
     JOIN wave_run w ON w.id = c.wave_run_id JOIN subscriber s ON s.id = t.subscriber_id";

impl Store {
    /// Escalates every open task past its due time that has someone to escalate to and was
    /// not escalated yet; returns how many. Once per task, whichever replica runs it.
    pub async fn escalate_overdue_tasks(&self, now: Millis) -> Result<u64> {
        Ok(exec(
            self.db(),
            "UPDATE agent_task SET escalated_at = ?, updated_at = ? \
             WHERE state = ? AND due_at IS NOT NULL AND due_at <= ? \
             AND escalate_to IS NOT NULL AND escalated_at IS NULL",
            [
                now.into(),
                now.into(),
                TaskState::Open.as_str().into(),
                now.into(),
            ],
        )
        .await?
        .rows_affected())
    }

    /// What each of `staff` (staff ids) has not been told of: open tasks of their team not
    /// yet in a digest, and escalated open tasks not yet in their supervisor's. By staff id,
    /// each list in task order.
    pub async fn pending_task_news(&self, staff: &[&str]) -> Result<BTreeMap<String, Pending>> {
        let mut out: BTreeMap<String, Pending> = BTreeMap::new();
        if staff.is_empty() {
            return Ok(out);
        }
        let ids: Vec<Value> = staff.iter().map(|s| (*s).into()).collect();
        let open: Value = TaskState::Open.as_str().into();
        let new_sql = format!(
            "{NEWS} WHERE t.state = ? AND t.told_at IS NULL AND t.team IN ({}) ORDER BY t.id LIMIT ?",
            marks(staff.len())
        );
        let mut values = vec![open.clone()];
        values.extend(ids.iter().cloned());
        values.push(DIGEST_READ_LIMIT.into());
        for r in query(self.db(), &new_sql, values).await? {
            let t = TaskNews::from_query_result(&r, "")?;
            out.entry(t.team.clone()).or_default().new.push(t);
        }
        let esc_sql = format!(
            "{NEWS} WHERE t.state = ? AND t.escalated_at IS NOT NULL \
             AND t.escalation_told_at IS NULL AND t.escalate_to IN ({}) ORDER BY t.id LIMIT ?",
            marks(staff.len())
        );
        let mut values = vec![open];
        values.extend(ids);
        values.push(DIGEST_READ_LIMIT.into());
        for r in query(self.db(), &esc_sql, values).await? {
            let t = TaskNews::from_query_result(&r, "")?;
            let to = t.escalate_to.clone().unwrap_or_default();
            out.entry(to).or_default().escalated.push(t);
        }
        Ok(out)
    }

    /// Starts one staff member's digest at `now`.
    pub async fn begin_task_digest(&self, now: Millis) -> Result<TaskDigestTx> {
        Ok(TaskDigestTx {
            tx: self.db().begin().await?,
            now,
        })
    }
}

impl TaskDigestTx {
    /// Marks `new` told to their team and `escalated` told to their supervisor, each only if
    /// it was not yet; returns the ids this transaction marked (the others were told by
    /// another replica meanwhile, and the mail must not list them).
    pub async fn mark(&self, new: &[i64], escalated: &[i64]) -> Result<(Vec<i64>, Vec<i64>)> {
        let mut marked = (Vec::new(), Vec::new());
        for (ids, col, out) in [
            (new, "told_at", &mut marked.0),
            (escalated, "escalation_told_at", &mut marked.1),
        ] {
            for chunk in ids.chunks(1000) {
                let sql = format!(
                    "UPDATE agent_task SET {col} = ? WHERE {col} IS NULL AND state = ? AND id IN ({}) RETURNING id",
                    marks(chunk.len())
                );
                let mut values: Vec<Value> = vec![self.now.into(), TaskState::Open.as_str().into()];
                values.extend(chunk.iter().map(|&id| id.into()));
                for r in query(&self.tx, &sql, values).await? {
                    out.push(r.try_get::<i64>("", "id")?);
                }
            }
            out.sort_unstable();
        }
        Ok(marked)
    }

    /// Queues the digest `mail`; false when its dedup key is taken (the person had this
    /// interval's digest): then drop this transaction, and the marks go with it.
    pub async fn digest(&self, mail: &NewMail) -> Result<bool> {
        crate::mail::enqueue_mail_in(&self.tx, mail, self.now).await
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await.map_err(StoreError::from)
    }
}
