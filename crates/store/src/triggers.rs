//! Triggered entry (`trigger_entry`, migration 25): who a slot's gather let into a triggered
//! campaign's run, and why.
//!
//! A gather runs inside the run's first-wave planning transaction ([`PlanTx`]), so the
//! entrants, the plan over them and the wave's state commit together: a crash before the
//! commit gathers again into the same run, one after it never gathers twice. The table's
//! unique indexes hold the rest across runs: an event enters its subscriber once
//! (`campaign, event_id`), and a condition has one open episode per subscriber
//! (`campaign, open_key`, the subscriber id while open, NULL once closed).

use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, Value};

use crate::planning::PlanTx;
use crate::{Millis, Result, Store, exec};

fn col(name: &str) -> Expr {
    Expr::col(Alias::new(name))
}

/// Subscribers with an event of `kind` that happened in `(since, until]` and has not yet
/// entered `campaign`: who an event trigger would let in now. A condition on `subscriber.id`.
pub fn pending_event_entrants(
    campaign: &str,
    kind: &str,
    since: Millis,
    until: Millis,
) -> Condition {
    let mut entered = Query::select();
    entered
        .column(Alias::new("event_id"))
        .from(Alias::new("trigger_entry"))
        .and_where(col("campaign").eq(campaign))
        .and_where(col("event_id").is_not_null());
    let mut sub = Query::select();
    sub.column(Alias::new("subscriber_id"))
        .from(Alias::new("subscriber_event"))
        .and_where(col("type").eq(kind))
        .and_where(col("at").gt(since))
        .and_where(col("at").lte(until))
        .and_where(col("id").not_in_subquery(entered));
    Condition::all().add(col("id").in_subquery(sub))
}

/// Subscribers matching `when` with no open episode in `campaign`: who a condition trigger
/// would let in now. `when` is a condition on `subscriber` (the audience and the trigger's
/// condition).
pub fn pending_condition_entrants(campaign: &str, when: Condition) -> Condition {
    when.add(col("id").not_in_subquery(open_episodes(campaign)))
}

/// The entrants a run's gather let in: what its first wave plans over.
pub fn run_entrants(run_id: i64) -> Condition {
    let mut sub = Query::select();
    sub.column(Alias::new("subscriber_id"))
        .from(Alias::new("trigger_entry"))
        .and_where(col("run_id").eq(run_id));
    Condition::all().add(col("id").in_subquery(sub))
}

fn open_episodes(campaign: &str) -> sea_orm::sea_query::SelectStatement {
    let mut q = Query::select();
    q.column(Alias::new("subscriber_id"))
        .from(Alias::new("trigger_entry"))
        .and_where(col("campaign").eq(campaign))
        .and_where(col("open_key").is_not_null());
    q
}

/// What a gather did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gathered {
    /// Rows let in: events (event triggers) or episodes opened (condition triggers).
    pub entered: u64,
    /// Condition episodes closed because the condition no longer holds.
    pub closed: u64,
}

/// Closes the open episodes of `campaign` whose subscriber no longer matches `when`.
async fn close_episodes<C: ConnectionTrait>(
    c: &C,
    campaign: &str,
    when: Condition,
    now: Millis,
) -> Result<u64> {
    let mut matching = Query::select();
    matching
        .column(Alias::new("id"))
        .from(Alias::new("subscriber"))
        .cond_where(when);
    let mut close = Query::update();
    close
        .table(Alias::new("trigger_entry"))
        .value(Alias::new("closed_at"), now)
        .value(Alias::new("open_key"), Option::<i64>::None)
        .and_where(col("campaign").eq(campaign))
        .and_where(col("open_key").is_not_null())
        .and_where(col("subscriber_id").not_in_subquery(matching));
    Ok(c.execute(&close).await?.rows_affected())
}

impl Store {
    /// Closes the condition episodes that ended (`when` no longer holds) outside a run: a
    /// slot with nobody new to let in still notices who recovered, so their next episode
    /// enters them again. Idempotent.
    pub async fn close_trigger_episodes(
        &self,
        campaign: &str,
        when: Condition,
        now: Millis,
    ) -> Result<u64> {
        close_episodes(self.db(), campaign, when, now).await
    }
}

impl PlanTx {
    /// Lets into `run_id` every subscriber with an event of `kind` in `(since, until]` that has
    /// not entered `campaign` yet, one row per event.
    pub async fn enter_on_events(
        &self,
        campaign: &str,
        run_id: i64,
        kind: &str,
        since: Millis,
        until: Millis,
    ) -> Result<Gathered> {
        let r = exec(
            self.tx(),
            "INSERT INTO trigger_entry (campaign, run_id, subscriber_id, event_id, entered_at) \
             SELECT ?, ?, e.subscriber_id, e.id, ? FROM subscriber_event e \
             WHERE e.type = ? AND e.at > ? AND e.at <= ? AND NOT EXISTS \
             (SELECT 1 FROM trigger_entry t WHERE t.campaign = ? AND t.event_id = e.id)",
            [
                Value::from(campaign),
                run_id.into(),
                until.into(),
                kind.into(),
                since.into(),
                until.into(),
                campaign.into(),
            ],
        )
        .await?;
        Ok(Gathered {
            entered: r.rows_affected(),
            closed: 0,
        })
    }

    /// Closes the open episodes of `campaign` whose subscriber no longer matches `when`, then
    /// opens one, into `run_id`, for each subscriber matching it without an open episode.
    pub async fn enter_on_condition(
        &self,
        campaign: &str,
        run_id: i64,
        when: Condition,
        now: Millis,
    ) -> Result<Gathered> {
        let closed = close_episodes(self.tx(), campaign, when.clone(), now).await?;

        let mut select = Query::select();
        select
            .expr(Expr::val(campaign))
            .expr(Expr::val(run_id))
            .column(Alias::new("id"))
            .column(Alias::new("id"))
            .expr(Expr::val(now))
            .from(Alias::new("subscriber"))
            .cond_where(pending_condition_entrants(campaign, when));
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new("trigger_entry"))
            .columns([
                Alias::new("campaign"),
                Alias::new("run_id"),
                Alias::new("subscriber_id"),
                Alias::new("open_key"),
                Alias::new("entered_at"),
            ])
            .select_from(select)
            .expect("five columns, five values");
        let entered = self.tx().execute(&insert).await?.rows_affected();
        Ok(Gathered { entered, closed })
    }
}
