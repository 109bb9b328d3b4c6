//! Survey scores (`survey` and `gate.purchase_intent` of the workflow language): each
//! respondent's latest answer in a run, scored, summed per group of a subscriber field.
//!
//! Scores are whole thousandths (`i64`), summed by the database as integers: the gate
//! compares `Σ score ≥ min · respondents` with no division, so the same answers give the same
//! decision on SQLite and PostgreSQL, at the threshold too.

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, Func, Query};

use crate::contacts::Arm;
use crate::derived::FieldSql;
use crate::planning::PlanReader;
use crate::{Millis, Result, Store};

/// What the survey of one run reads.
#[derive(Debug, Clone, Copy)]
pub struct SurveyQuery<'a> {
    pub run_id: i64,
    /// The waves (ids, as `wave_run.wave`) whose answers count.
    pub waves: &'a [String],
    /// Each answer: the `response.kind` and `value` tracking records it under, and its score
    /// in thousandths.
    pub answers: &'a [(&'a str, &'a str, i64)],
}

/// One group's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupScore {
    /// The group field's value; `None` where it is NULL.
    pub group: Option<String>,
    /// Subscribers with an answer (each counted once, by their latest answer).
    pub respondents: u64,
    /// The sum of their scores, in thousandths.
    pub score_sum: i64,
}

impl PlanReader<'_> {
    /// The survey's scores per value of `group` (a field compiled by this plan's
    /// [`FieldSql`]), read inside the planning transaction.
    pub async fn survey_scores(&self, q: SurveyQuery<'_>, group: Expr) -> Result<Vec<GroupScore>> {
        scores(&self.c, q, group).await
    }
}

impl Store {
    /// The survey's scores per value of `group_by` (a text field of `cat`), its derived
    /// attributes computed as of `as_of`: what a report shows.
    pub async fn survey_scores(
        &self,
        cat: &catalogue::Catalogue,
        q: SurveyQuery<'_>,
        group_by: &str,
        as_of: Millis,
    ) -> Result<Vec<GroupScore>> {
        let fields = FieldSql::new(cat, self.as_of(as_of).await?);
        scores(self.db(), q, fields.field(group_by)).await
    }
}

fn col(table: &str, name: &str) -> Expr {
    Expr::col((Alias::new(table), Alias::new(name)))
}

/// The responses (table alias `t`) that are answers of this survey in this run: treatment
/// contacts of the named waves, with one of the answers' kind and value.
fn answers_of(t: &str, q: &SurveyQuery<'_>) -> Condition {
    let mut waves = Query::select();
    waves
        .column(Alias::new("id"))
        .from(Alias::new("wave_run"))
        .and_where(Expr::col(Alias::new("run_id")).eq(q.run_id))
        .and_where(Expr::col(Alias::new("wave")).is_in(q.waves.iter().map(String::as_str)));
    let mut any = Condition::any();
    for (kind, value, _) in q.answers {
        any = any.add(
            Condition::all()
                .add(col(t, "kind").eq(*kind))
                .add(col(t, "value").eq(*value)),
        );
    }
    Condition::all()
        .add(col(t, "run_id").eq(q.run_id))
        .add(col(t, "arm").eq(Arm::Treatment.as_str()))
        .add(col(t, "wave_run_id").in_subquery(waves))
        .add(any)
}

async fn scores<C: ConnectionTrait>(
    c: &C,
    q: SurveyQuery<'_>,
    group: Expr,
) -> Result<Vec<GroupScore>> {
    if q.answers.is_empty() || q.waves.is_empty() {
        return Ok(Vec::new());
    }
    // A respondent's latest answer (the highest response id): one who answers again, or is
    // asked again by a later wave, has changed their mind. Grouped in one pass over the
    // run's answers, not looked up per respondent: a per-row subquery left PostgreSQL to
    // guess an index before the new responses were analyzed (100,000 respondents ran past
    // the statement timeout).
    let mut latest = Query::select();
    latest
        .expr(Func::max(col("l", "id")))
        .from_as(Alias::new("response"), Alias::new("l"))
        .cond_where(answers_of("l", &q))
        .group_by_col(col_of("l", "subscriber_id"));
    let mut case = Expr::case(
        Condition::all()
            .add(col("r", "kind").eq(q.answers[0].0))
            .add(col("r", "value").eq(q.answers[0].1)),
        Expr::val(q.answers[0].2).cast_as("BIGINT"),
    );
    for (kind, value, score) in &q.answers[1..] {
        case = case.case(
            Condition::all()
                .add(col("r", "kind").eq(*kind))
                .add(col("r", "value").eq(*value)),
            Expr::val(*score).cast_as("BIGINT"),
        );
    }
    let mut answered = Query::select();
    answered
        .expr_as(col("r", "subscriber_id"), Alias::new("survey_subscriber"))
        .expr_as(
            Expr::Case(Box::new(case.finally(Expr::val(0_i64).cast_as("BIGINT")))),
            Alias::new("survey_score"),
        )
        .from_as(Alias::new("response"), Alias::new("r"))
        .and_where(col("r", "id").in_subquery(latest));
    // The group field's SQL names `subscriber` columns unqualified, so the only other
    // relation here is the derived table `a`, whose two columns no attribute is named.
    let mut each = Query::select();
    each.expr_as(group, Alias::new("survey_group"))
        .expr_as(col("a", "survey_score"), Alias::new("survey_score"))
        .from(Alias::new("subscriber"))
        .join_subquery(
            sea_orm::sea_query::JoinType::InnerJoin,
            answered,
            Alias::new("a"),
            col("a", "survey_subscriber").equals((Alias::new("subscriber"), Alias::new("id"))),
        );
    let mut outer = Query::select();
    outer
        .column(Alias::new("survey_group"))
        .expr_as(Expr::cust("COUNT(*)").cast_as("BIGINT"), Alias::new("n"))
        .expr_as(
            Func::sum(Expr::col(Alias::new("survey_score"))).cast_as("BIGINT"),
            Alias::new("total"),
        )
        .from_subquery(each, Alias::new("t"))
        .group_by_col(Alias::new("survey_group"))
        .order_by(Alias::new("survey_group"), sea_orm::sea_query::Order::Asc);
    let rows = c.query_all(&outer).await?;
    rows.iter()
        .map(|r| {
            Ok(GroupScore {
                group: r.try_get("", "survey_group")?,
                respondents: u64::try_from(r.try_get::<i64>("", "n")?).unwrap_or(0),
                score_sum: r.try_get("", "total")?,
            })
        })
        .collect()
}

fn col_of(table: &str, name: &str) -> (Alias, Alias) {
    (Alias::new(table), Alias::new(name))
}

impl PlanReader<'_> {
    /// The value of `group` (a field compiled by this plan's [`FieldSql`]) for each
    /// subscriber matching `cond`: the group a gate judges them by.
    pub async fn group_values(
        &self,
        cond: Condition,
        group: Expr,
    ) -> Result<Vec<(i64, Option<String>)>> {
        let mut q = Query::select();
        q.column(Alias::new("id"))
            .expr_as(group, Alias::new("survey_group"))
            .from(Alias::new("subscriber"))
            .cond_where(cond);
        let rows = self.c.query_all(&q).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("", "id")?, r.try_get("", "survey_group")?)))
            .collect()
    }
}
