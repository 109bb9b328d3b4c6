//! The planner's door to the database (crate `audience`): reads of the subscriber base and of
//! earlier waves' contacts, and the one transaction that writes a planned wave.
//!
//! The planner chooses *which* subscribers (its filters are sea-query [`Condition`]s on the
//! `subscriber` columns, every literal bound); this module runs the queries and writes the
//! plan, so no SQL is written outside this crate.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{
    Alias, Asterisk, Condition, Expr, ExprTrait, Func, Order, Query, SelectStatement,
};
use sea_orm::{ConnectionTrait, DatabaseExecutor, DatabaseTransaction, TransactionTrait};

use crate::contacts::{self, Arm, NewContact};
use crate::runs::{self, wave_state};
use crate::{Millis, Result, Store};

/// The PostgreSQL advisory-lock key planners serialize on (two int4 keys): planning's own
/// number and the schema's. Advisory locks are per database, not per schema, so with one
/// fixed key every tenant (and every test schema) in a database would wait for the others'
/// planners; the caps a planner protects are per schema anyway.
pub const PLANNER_LOCK: &str = "7290001, hashtext(current_schema())";

/// A subscriber the audience selected, with what the policy and the control split need.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: i64,
    pub opt_out: bool,
    pub timezone: Option<String>,
    /// The value of the stratification column (`None` when it is NULL); `all` when the
    /// workflow does not stratify.
    pub stratum: Option<String>,
}

/// Read queries for planning, on the planner's transaction or (for a preview) on the pool.
#[derive(Debug)]
pub struct PlanReader<'a> {
    pub(crate) c: DatabaseExecutor<'a>,
}

/// A wave's planning transaction: the wave moved from `pending` to `open` and (on
/// PostgreSQL) the planner lock is held until [`PlanTx::commit`]; dropped, it rolls back.
#[derive(Debug)]
pub struct PlanTx {
    tx: DatabaseTransaction,
}

impl Store {
    /// Begins planning a wave: serializes planners (a PostgreSQL transaction advisory lock,
    /// [`PLANNER_LOCK`]; SQLite has one writer, taken by the first write), then moves the wave
    /// from `pending` to `open`. `None` when the wave was not pending (planned already by
    /// another replica or an earlier life of this daemon): nothing was written.
    pub async fn begin_planning(&self, wave_run_id: i64) -> Result<Option<PlanTx>> {
        let tx = self.db().begin().await?;
        // Planners of different campaigns must not interleave, or two of them could each
        // read a subscriber's recent contacts before the other commits and together break
        // the frequency cap.
        if self.is_postgres() {
            tx.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({PLANNER_LOCK})"))
                .await?;
        }
        if !runs::transition_wave(&tx, wave_run_id, wave_state::PENDING, wave_state::OPEN).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        // Every wave planned before this one has all its contacts before anything is read:
        // caps, arbitration, earlier entrants and responders and the wave this one follows
        // count contacts, and a decided wave's may still be in batches. Waiting for a batch
        // another transaction is writing (never skipping it) is what makes it all; the
        // planner lock keeps new ones from being decided meanwhile.
        while crate::batches::take_one(&tx, None, crate::batches::Wait::Block)
            .await?
            .is_some()
        {}
        Ok(Some(PlanTx { tx }))
    }

    /// Planning reads outside any transaction (a preview that writes nothing).
    pub fn plan_reader(&self) -> PlanReader<'_> {
        PlanReader {
            c: self.db().into(),
        }
    }
}

impl PlanTx {
    pub(crate) fn tx(&self) -> &DatabaseTransaction {
        &self.tx
    }

    /// Reads inside this transaction.
    pub fn reader(&self) -> PlanReader<'_> {
        PlanReader {
            c: (&self.tx).into(),
        }
    }

    /// Records the planned contacts as batches (`crate::batches`), written as contacts with
    /// their queue rows after the commit ([`Store::write_planned_batch`]). The number of
    /// batches.
    pub async fn insert_batches(
        &self,
        to: &contacts::WaveContacts<'_>,
        rows: &[NewContact],
    ) -> Result<u64> {
        crate::batches::insert_batches(&self.tx, to, rows, crate::batches::BATCH_CONTACTS).await
    }

    /// [`PlanTx::insert_batches`] with `per_batch` contacts a batch (tests: several batches
    /// out of a few subscribers).
    pub async fn insert_batches_of(
        &self,
        to: &contacts::WaveContacts<'_>,
        rows: &[NewContact],
        per_batch: usize,
    ) -> Result<u64> {
        crate::batches::insert_batches(&self.tx, to, rows, per_batch).await
    }

    /// Why each left-out subscriber was left out.
    pub async fn insert_decisions(&self, wave_run_id: i64, rows: &[(i64, &str)]) -> Result<()> {
        contacts::insert_decisions(&self.tx, wave_run_id, rows).await
    }

    /// The funnel: counts by stage.
    pub async fn insert_funnel(&self, wave_run_id: i64, counts: &[(String, u64)]) -> Result<()> {
        contacts::insert_funnel(&self.tx, wave_run_id, counts).await
    }

    /// Records control members drawn by this plan in `scope`'s holdout for `period`, so later
    /// runs in the period keep them in control.
    pub async fn insert_holdout(
        &self,
        scope: &str,
        period: &str,
        run_id: i64,
        drawn_at: Millis,
        subscriber_ids: &[i64],
    ) -> Result<()> {
        crate::holdout::insert_members(&self.tx, scope, period, run_id, drawn_at, subscriber_ids)
            .await
    }

    /// The wave's window and the durable timer that closes it.
    pub async fn set_wave_window(
        &self,
        wave_run_id: i64,
        planned_at: Millis,
        closes_at: Millis,
    ) -> Result<()> {
        runs::set_wave_window(&self.tx, wave_run_id, planned_at, closes_at).await
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// A following wave's action path over the wave it follows (see `spec::Targets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path<'a> {
    NoResponse,
    All,
    DeliveredSilent,
    Undelivered,
    /// Reply keywords (the reply's first word, lowercase, as tracking records it).
    Replied(&'a [String]),
    Outcome(&'a [String]),
    Event {
        kind: &'a str,
        value: Option<&'a str>,
    },
}

/// The states of a contact whose message never reached the subscriber (`Path::Undelivered`).
const NEVER_REACHED: [contacts::ContactState; 3] = [
    contacts::ContactState::Undelivered,
    contacts::ContactState::Failed,
    contacts::ContactState::Expired,
];

/// The treatment subscribers of wave run `wave_run_id` that `path` takes: a condition on
/// `subscriber.id`. Responses are read from `response` (every attributed reply, outcome and
/// event, counted or not), as tracking recorded them inside the wave's window.
pub fn earlier_wave_targets(wave_run_id: i64, path: Path<'_>) -> Condition {
    let mut sub = Query::select();
    sub.column(Alias::new("subscriber_id"))
        .from(Alias::new("contact"))
        .and_where(col("wave_run_id").eq(wave_run_id))
        .and_where(col("arm").eq(Arm::Treatment.as_str()));
    let responded = |kind: &str, values: Option<Vec<&str>>| {
        let mut r = Query::select();
        r.column(Alias::new("subscriber_id"))
            .from(Alias::new("response"))
            .and_where(col("wave_run_id").eq(wave_run_id))
            .and_where(col("arm").eq(Arm::Treatment.as_str()))
            .and_where(col("kind").eq(kind));
        if let Some(v) = values {
            r.and_where(col("value").is_in(v));
        }
        r
    };
    // Per subscriber, not per contact: a preferred wave's subscriber may have a first and a
    // second-choice contact, and a response to either, or either reaching them, decides.
    let any_contact = |cond: Expr| {
        let mut r = Query::select();
        r.column(Alias::new("subscriber_id"))
            .from(Alias::new("contact"))
            .and_where(col("wave_run_id").eq(wave_run_id))
            .and_where(cond);
        r
    };
    let silent =
        || col("subscriber_id").not_in_subquery(any_contact(col("responded_at").is_not_null()));
    match path {
        Path::All => {}
        Path::NoResponse => {
            sub.and_where(silent());
        }
        Path::DeliveredSilent => {
            sub.and_where(silent())
                .and_where(col("state").eq(contacts::ContactState::Delivered.as_str()));
        }
        Path::Undelivered => {
            let reached = [
                contacts::ContactState::Sent.as_str(),
                contacts::ContactState::Delivered.as_str(),
            ];
            sub.and_where(col("state").is_in(NEVER_REACHED.iter().map(|s| s.as_str())))
                .and_where(
                    col("subscriber_id").not_in_subquery(any_contact(col("state").is_in(reached))),
                );
        }
        Path::Replied(words) => {
            sub.and_where(col("subscriber_id").in_subquery(responded(
                "reply",
                Some(words.iter().map(String::as_str).collect()),
            )));
        }
        Path::Outcome(outcomes) => {
            sub.and_where(col("subscriber_id").in_subquery(responded(
                "outcome",
                Some(outcomes.iter().map(String::as_str).collect()),
            )));
        }
        Path::Event { kind, value } => {
            sub.and_where(
                col("subscriber_id").in_subquery(responded(kind, value.map(|v| vec![v]))),
            );
        }
    }
    Condition::all().add(col("id").in_subquery(sub))
}

/// Subscribers with an open alert episode of `monitor` at level rank `min_rank` or above
/// (`audience.alerts`): a condition on `subscriber.id`.
pub fn open_alerts(monitor: &str, min_rank: i32) -> Condition {
    let mut sub = Query::select();
    sub.column(Alias::new("subscriber_id"))
        .from(Alias::new("alert_episode"))
        .and_where(col("monitor").eq(monitor))
        .and_where(col("state").eq(crate::alerts::EpisodeState::Open.as_str()))
        .and_where(col("level_rank").gte(min_rank));
    Condition::all().add(col("id").in_subquery(sub))
}

impl PlanReader<'_> {
    /// Subscribers matching `cond`.
    pub async fn count_subscribers(&self, cond: Condition) -> Result<u64> {
        let mut q = Query::select();
        q.expr_as(Func::count(Expr::col(Asterisk)), Alias::new("n"))
            .from(Alias::new("subscriber"))
            .cond_where(cond);
        let row = self.c.query_one(&q).await?;
        Ok(row
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0) as u64)
    }

    /// Ids of the subscribers matching `cond`.
    pub async fn subscriber_ids(&self, cond: Condition) -> Result<Vec<i64>> {
        let mut q = Query::select();
        q.column(Alias::new("id"))
            .from(Alias::new("subscriber"))
            .cond_where(cond);
        let rows = self.c.query_all(&q).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64>("", "id")?))
            .collect()
    }

    /// The field compiler for planning at `now`: windows of derived attributes fixed on the
    /// planner's own connection (inside its transaction).
    pub async fn field_sql<'c>(
        &self,
        cat: &'c catalogue::Catalogue,
        now: Millis,
    ) -> Result<crate::derived::FieldSql<'c>> {
        Ok(crate::derived::FieldSql::new(
            cat,
            crate::derived::as_of(&self.c, now).await?,
        ))
    }

    /// The subscribers matching `cond`, by id, with `stratify_by` (a checked field of the
    /// workflow, compiled by [`crate::derived::FieldSql`]) as their stratum.
    pub async fn candidates(
        &self,
        cond: Condition,
        stratify_by: Option<Expr>,
    ) -> Result<Vec<Candidate>> {
        let rows = self
            .c
            .query_all(&candidates_stmt(cond, stratify_by))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Candidate {
                    id: r.try_get("", "id")?,
                    opt_out: r.try_get("", "opt_out")?,
                    timezone: r.try_get("", "timezone")?,
                    stratum: r.try_get("", "stratum")?,
                })
            })
            .collect()
    }

    /// The text of catalogue attributes `names` (declared attributes of text or enum kind)
    /// for each subscriber of `ids`, one value per name in order: what a preferred wave
    /// routes by (`spec::Preference::attributes`). A `None` name reads nothing (a
    /// preference without a slot attribute) and gives `None`.
    pub async fn text_attributes(
        &self,
        ids: &[i64],
        names: &[Option<&str>],
    ) -> Result<HashMap<i64, Vec<Option<String>>>> {
        // Column names come from a checked catalogue; refuse anything else rather than
        // quote it into SQL.
        if let Some(bad) = names.iter().flatten().find(|n| {
            n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }) {
            return Err(crate::StoreError::Invalid(format!(
                "attribute name {bad:?}"
            )));
        }
        let cols: Vec<String> = names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| format!(", s.\"{n}\" AS a{i}")))
            .collect();
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT s.id{} FROM subscriber s WHERE s.id IN ({})",
                cols.concat(),
                crate::marks(chunk.len())
            );
            let rows = self
                .c
                .query_all_raw(crate::stmt(
                    &self.c,
                    &sql,
                    chunk.iter().map(|id| sea_orm::Value::from(*id)),
                ))
                .await?;
            for r in rows {
                let mut values = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    values.push(match name {
                        Some(_) => r.try_get::<Option<String>>("", &format!("a{i}"))?,
                        None => None,
                    });
                }
                out.insert(r.try_get::<i64>("", "id")?, values);
            }
        }
        Ok(out)
    }

    /// Subscribers an earlier run of `campaign` planned into its first wave (either arm) at
    /// or after `since`: who already entered, for `entry.once_per` and `entry.cooldown`.
    pub async fn earlier_entrants(
        &self,
        campaign: &str,
        run_id: i64,
        since: Millis,
    ) -> Result<HashSet<i64>> {
        self.ids(
            "SELECT DISTINCT c.subscriber_id AS id FROM contact c \
             JOIN wave_run w ON w.id = c.wave_run_id JOIN run r ON r.id = c.run_id \
             WHERE r.campaign = ? AND r.id <> ? AND c.due_at >= ? \
             AND w.id = (SELECT MIN(f.id) FROM wave_run f WHERE f.run_id = r.id)",
            vec![campaign.into(), run_id.into(), since.into()],
        )
        .await
    }

    /// Subscribers who responded to any wave of an earlier run of `campaign`.
    pub async fn earlier_responders(&self, campaign: &str, run_id: i64) -> Result<HashSet<i64>> {
        self.ids(
            "SELECT DISTINCT c.subscriber_id AS id FROM contact c JOIN run r ON r.id = c.run_id \
             WHERE r.campaign = ? AND r.id <> ? AND c.responded_at IS NOT NULL",
            vec![campaign.into(), run_id.into()],
        )
        .await
    }

    /// Subscribers with a response of `kind` (and `value`, when given) in an earlier run of
    /// `campaign`, either arm: who already reached the campaign's goal.
    pub async fn earlier_converters(
        &self,
        campaign: &str,
        run_id: i64,
        kind: &str,
        value: Option<&str>,
    ) -> Result<HashSet<i64>> {
        let mut sql = String::from(
            "SELECT DISTINCT p.subscriber_id AS id FROM response p JOIN run r ON r.id = p.run_id \
             WHERE r.campaign = ? AND r.id <> ? AND p.kind = ?",
        );
        let mut values: Vec<sea_orm::Value> = vec![campaign.into(), run_id.into(), kind.into()];
        if let Some(v) = value {
            sql.push_str(" AND p.value = ?");
            values.push(v.into());
        }
        self.ids(&sql, values).await
    }

    async fn ids(&self, sql: &str, values: Vec<sea_orm::Value>) -> Result<HashSet<i64>> {
        let rows = self
            .c
            .query_all_raw(crate::stmt(&self.c, sql, values))
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64>("", "id")?))
            .collect()
    }

    /// Members of `scope`'s holdout in `period`: they stay in control whatever this run's
    /// split says.
    pub async fn holdout_members(&self, scope: &str, period: &str) -> Result<HashSet<i64>> {
        crate::holdout::members(&self.c, scope, period).await
    }

    /// Treatment contacts per subscriber planned or sent since `since`, any campaign (the
    /// frequency cap).
    /// The campaigns of the marketing contacts that count toward the cap since `since`, per
    /// subscriber (one entry per contact).
    pub async fn recent_contact_campaigns(
        &self,
        since: Millis,
    ) -> Result<HashMap<i64, Vec<String>>> {
        contacts::recent_contact_campaigns(&self.c, since).await
    }
}

fn col(name: &str) -> Expr {
    Expr::col(Alias::new(name))
}

fn candidates_stmt(cond: Condition, stratify_by: Option<Expr>) -> SelectStatement {
    let mut q = Query::select();
    q.from(Alias::new("subscriber"))
        .column(Alias::new("id"))
        .column(Alias::new("opt_out"))
        .column(Alias::new("timezone"));
    match stratify_by {
        Some(f) => q.expr_as(f, Alias::new("stratum")),
        None => q.expr_as(Expr::val("all"), Alias::new("stratum")),
    };
    // `ORDER BY id` also steers SQLite to scan `subscriber` in rowid order: without it,
    // SQLite picked the index of a filter's column (`x01 >= 30`, 70% of the base) and read the
    // rows in index order, 4.4-6.4 s instead of 0.9-1.6 s at 1M (bench-plan, session 18).
    q.cond_where(cond).order_by(Alias::new("id"), Order::Asc);
    q
}
