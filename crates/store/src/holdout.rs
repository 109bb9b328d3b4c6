//! Control members that hold across runs: who a campaign (`scope`) drew into its control group
//! in a holdout period (`2026`, `season-2026`, `90d-2026-01-05`, `run-42`). The planner reads
//! and extends them inside its transaction ([`crate::planning::PlanTx`]); `campaignd holdout`
//! lists them.

use std::collections::HashSet;

use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, Func, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, DbBackend};

use crate::contacts::{PG_ROWS_PER_STATEMENT, PgArray};
use crate::{Millis, Result, Store, exec};

/// One holdout period of a campaign and how many subscribers it holds out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldoutPeriod {
    pub period: String,
    pub members: u64,
    /// When the period's first and latest members were drawn.
    pub first_drawn_at: Millis,
    pub last_drawn_at: Millis,
}

/// Rows per INSERT: five values a row stays far below both backends' bind limits.
const ROWS_PER_STATEMENT: usize = 1000;

/// Members of `scope`'s holdout in `period`. Read whole rather than filtered by the candidates:
/// a holdout is a share of one campaign's audience, and an id list as long as the audience
/// would be the bigger statement.
pub(crate) async fn members<C: ConnectionTrait>(
    c: &C,
    scope: &str,
    period: &str,
) -> Result<HashSet<i64>> {
    let mut q = Query::select();
    q.column(Alias::new("subscriber_id"))
        .from(Alias::new("holdout"))
        .and_where(col("scope").eq(scope))
        .and_where(col("period").eq(period));
    c.query_all(&q)
        .await?
        .iter()
        .map(|r| Ok(r.try_get::<i64>("", "subscriber_id")?))
        .collect()
}

/// Records new members; one already recorded (a replanned wave) keeps its first row.
pub(crate) async fn insert_members<C: ConnectionTrait>(
    c: &C,
    scope: &str,
    period: &str,
    run_id: i64,
    drawn_at: Millis,
    subscriber_ids: &[i64],
) -> Result<()> {
    if c.get_database_backend() == DbBackend::Postgres {
        // One array parameter, as for decisions: a control group of 28,000 was 29 statements
        // of 5,000 binds each, about a second of a 1M-subscriber plan (bench-plan).
        for chunk in subscriber_ids.chunks(PG_ROWS_PER_STATEMENT) {
            let mut ids = PgArray::default();
            for id in chunk {
                ids.int(Some(*id));
            }
            exec(
                c,
                "INSERT INTO holdout (scope, period, subscriber_id, run_id, drawn_at) \
                 SELECT ?, ?, s, ?, ? FROM unnest(?::text::bigint[]) AS u(s) \
                 ON CONFLICT (scope, period, subscriber_id) DO NOTHING",
                [
                    scope.into(),
                    period.into(),
                    run_id.into(),
                    drawn_at.into(),
                    ids.finish().into(),
                ],
            )
            .await?;
        }
        return Ok(());
    }
    for chunk in subscriber_ids.chunks(ROWS_PER_STATEMENT) {
        let mut q = Query::insert();
        q.into_table(Alias::new("holdout"))
            .columns([
                Alias::new("scope"),
                Alias::new("period"),
                Alias::new("subscriber_id"),
                Alias::new("run_id"),
                Alias::new("drawn_at"),
            ])
            .on_conflict(
                OnConflict::columns([
                    Alias::new("scope"),
                    Alias::new("period"),
                    Alias::new("subscriber_id"),
                ])
                .do_nothing()
                .to_owned(),
            );
        for id in chunk {
            q.values_panic([
                scope.into(),
                period.into(),
                (*id).into(),
                run_id.into(),
                drawn_at.into(),
            ]);
        }
        c.execute(&q).await?;
    }
    Ok(())
}

impl Store {
    /// The holdout periods of a campaign (only `period` when given), oldest first, with their
    /// member counts: the audit of who a campaign has held out.
    pub async fn holdout_periods(
        &self,
        scope: &str,
        period: Option<&str>,
    ) -> Result<Vec<HoldoutPeriod>> {
        let mut q = Query::select();
        q.column(Alias::new("period"))
            .expr_as(Func::count(Expr::col(Asterisk)), Alias::new("n"))
            .expr_as(
                Func::min(Expr::col(Alias::new("drawn_at"))),
                Alias::new("first_at"),
            )
            .expr_as(
                Func::max(Expr::col(Alias::new("drawn_at"))),
                Alias::new("last_at"),
            )
            .from(Alias::new("holdout"))
            .and_where(col("scope").eq(scope))
            .group_by_col(Alias::new("period"))
            .order_by(Alias::new("first_at"), Order::Asc)
            .order_by(Alias::new("period"), Order::Asc);
        if let Some(p) = period {
            q.and_where(col("period").eq(p));
        }
        self.db()
            .query_all(&q)
            .await?
            .iter()
            .map(|r| {
                Ok(HoldoutPeriod {
                    period: r.try_get("", "period")?,
                    members: r.try_get::<i64>("", "n")? as u64,
                    first_drawn_at: r.try_get("", "first_at")?,
                    last_drawn_at: r.try_get("", "last_at")?,
                })
            })
            .collect()
    }

    /// Members of a campaign's holdout in one period, by id.
    pub async fn holdout_members(&self, scope: &str, period: &str) -> Result<HashSet<i64>> {
        members(self.db(), scope, period).await
    }
}

fn col(name: &str) -> Expr {
    Expr::col(Alias::new(name))
}
