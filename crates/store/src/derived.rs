//! Derived attributes in SQL: [`catalogue::DExpr`] compiled to one sea-query expression over
//! the `subscriber` row, with correlated subqueries for history windows (`usage_month`,
//! `usage_day`) and event counts (`subscriber_event`), every literal bound.
//!
//! The same expression serves filters and strata (the planner's queries) and the values a
//! template shows ([`Store::derived_values`]), so a subscriber is selected and greeted with
//! one definition. Windows are fixed once per evaluation ([`AsOf`]): history counts back from
//! the newest period loaded, events from the evaluation's `now`.
//!
//! Types are made explicit in the SQL text, as the filter compiler does: numbers are cast,
//! `/` divides as double precision and gives NULL for a zero divisor (PostgreSQL would raise
//! an error, SQLite returns NULL), and aggregates are cast to the measure's type
//! (PostgreSQL's `SUM(bigint)` and `AVG` are `numeric`).

use catalogue::derived::{Agg, ArithOp, CmpOp, DExpr, EventAgg, Lit};
use catalogue::{Catalogue, Period, Value};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Query, SelectStatement, SubQueryStatement};

use crate::{Millis, Result, Store};

/// What windows count back from in one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf {
    /// The newest monthly period loaded; `None` when there is no monthly history.
    pub month: Option<i64>,
    /// The newest daily period loaded.
    pub day: Option<i64>,
    /// Event windows end here.
    pub now: Millis,
}

impl AsOf {
    fn newest(&self, p: Period) -> Option<i64> {
        match p {
            Period::Month => self.month,
            Period::Day => self.day,
        }
    }
}

/// Compiles field names to SQL for one catalogue and one [`AsOf`].
#[derive(Debug, Clone, Copy)]
pub struct FieldSql<'a> {
    cat: &'a Catalogue,
    as_of: AsOf,
}

const SUBSCRIBER: &str = "subscriber";
const DEPTH_LIMIT: usize = 16;

impl<'a> FieldSql<'a> {
    pub fn new(cat: &'a Catalogue, as_of: AsOf) -> FieldSql<'a> {
        FieldSql { cat, as_of }
    }

    /// A field as SQL: its `subscriber` column, or its derived expression. Names the
    /// catalogue does not know are taken as columns (checked filters never have them).
    pub fn field(&self, name: &str) -> Expr {
        self.field_at(name, 0)
    }

    fn field_at(&self, name: &str, depth: usize) -> Expr {
        match self.cat.derived(name) {
            // A derived attribute names only earlier ones (the catalogue checks), so this
            // recursion ends; the depth bound is a second guard.
            Some(d) if depth < DEPTH_LIMIT => self.expr(&d.expr, depth + 1),
            // Unqualified: stored columns only appear outside the subqueries, whose own
            // columns are all qualified (`h.`, `e.`).
            _ => Expr::col(Alias::new(name)),
        }
    }

    /// Compiles a checked derived expression.
    pub fn expr(&self, e: &DExpr, depth: usize) -> Expr {
        match e {
            DExpr::Lit(l) => lit(l),
            DExpr::Field { name, .. } => self.field_at(name, depth),
            DExpr::Neg(x) => Expr::cust_with_exprs("(-$1)", [self.expr(x, depth)]),
            DExpr::Arith(op, a, b) => {
                let (a, b) = (self.expr(a, depth), self.expr(b, depth));
                match op {
                    ArithOp::Add => a.add(b),
                    ArithOp::Sub => a.sub(b),
                    ArithOp::Mul => a.mul(b),
                    ArithOp::Div => double(a).div(Expr::from(
                        Func::cust("NULLIF").args([double(b), lit(&Lit::Dec(0.0))]),
                    )),
                }
            }
            DExpr::Cmp(op, a, b) => {
                let (a, b) = (self.expr(a, depth), self.expr(b, depth));
                match op {
                    CmpOp::Eq => a.eq(b),
                    CmpOp::Ne => a.ne(b),
                    CmpOp::Lt => a.lt(b),
                    CmpOp::Le => a.lte(b),
                    CmpOp::Gt => a.gt(b),
                    CmpOp::Ge => a.gte(b),
                }
            }
            DExpr::And(xs) => self.fold(xs, depth, |a, b| a.and(b)),
            DExpr::Or(xs) => self.fold(xs, depth, |a, b| a.or(b)),
            DExpr::Not(x) => self.expr(x, depth).not(),
            DExpr::IsNull { expr, negated } => {
                let x = self.expr(expr, depth);
                if *negated {
                    x.is_not_null()
                } else {
                    x.is_null()
                }
            }
            DExpr::In {
                expr,
                values,
                negated,
            } => {
                let x = self.expr(expr, depth);
                let vs: Vec<Expr> = values.iter().map(lit).collect();
                if *negated {
                    x.is_not_in(vs)
                } else {
                    x.is_in(vs)
                }
            }
            DExpr::Case { arms, otherwise } => {
                let mut arms = arms.iter();
                let (c0, v0) = arms.next().expect("a case has an arm (parser)");
                let mut case = Expr::case(self.expr(c0, depth), self.expr(v0, depth));
                for (c, v) in arms {
                    case = case.case(self.expr(c, depth), self.expr(v, depth));
                }
                Expr::Case(Box::new(case.finally(self.expr(otherwise, depth))))
            }
            DExpr::Coalesce(xs) => {
                Expr::from(Func::coalesce(xs.iter().map(|x| self.expr(x, depth))))
            }
            DExpr::History {
                agg,
                measure,
                periods,
                skip,
                ..
            } => self.history(*agg, measure, *periods, *skip),
            DExpr::Events {
                agg,
                event_type,
                days,
                ..
            } => self.events(*agg, event_type, *days),
        }
    }

    fn fold(&self, xs: &[DExpr], depth: usize, f: impl Fn(Expr, Expr) -> Expr) -> Expr {
        let mut it = xs.iter().map(|x| self.expr(x, depth));
        let first = it
            .next()
            .expect("and/or have two or more operands (parser)");
        it.fold(first, f)
    }

    fn history(&self, agg: Agg, name: &str, periods: u32, skip: u32) -> Expr {
        let Some(m) = self.cat.measure(name) else {
            return Expr::cust("NULL");
        };
        let ty = if m.integer && agg != Agg::Mean {
            "BIGINT"
        } else {
            "DOUBLE PRECISION"
        };
        let Some(newest) = self.as_of.newest(m.period) else {
            // No history of this period length loaded: every window is empty.
            return Expr::cust("NULL").cast_as(ty);
        };
        let hi = newest - i64::from(skip);
        let lo = hi - i64::from(periods) + 1;
        let h = Alias::new("h");
        let col = Expr::col((h.clone(), Alias::new(name)));
        let value = match agg {
            Agg::Mean => Expr::from(Func::avg(col)),
            Agg::Sum => Expr::from(Func::sum(col)),
            Agg::Min => Expr::from(Func::min(col)),
            // `last` is one period: MAX of one row is its value.
            Agg::Max | Agg::Last => Expr::from(Func::max(col)),
        };
        let mut q = Query::select();
        q.expr(value.cast_as(ty))
            .from_as(Alias::new(m.period.table()), h.clone())
            .and_where(
                Expr::col((h.clone(), Alias::new("subscriber_id")))
                    .eq(Expr::col((Alias::new(SUBSCRIBER), Alias::new("id")))),
            )
            .and_where(
                Expr::col((h, Alias::new("period")))
                    .between(lit(&Lit::Int(lo)), lit(&Lit::Int(hi))),
            );
        subquery(q)
    }

    fn events(&self, agg: EventAgg, event_type: &str, days: u32) -> Expr {
        let e = Alias::new("e");
        let since = self.as_of.now - i64::from(days) * 86_400_000;
        let value = match agg {
            EventAgg::Count => Expr::cust("COUNT(*)").cast_as("BIGINT"),
            EventAgg::Sum => Expr::from(Func::coalesce([
                Expr::from(Func::sum(Expr::col((e.clone(), Alias::new("value"))))),
                lit(&Lit::Dec(0.0)),
            ]))
            .cast_as("DOUBLE PRECISION"),
        };
        let mut q = Query::select();
        q.expr(value)
            .from_as(Alias::new("subscriber_event"), e.clone())
            .and_where(
                Expr::col((e.clone(), Alias::new("subscriber_id")))
                    .eq(Expr::col((Alias::new(SUBSCRIBER), Alias::new("id")))),
            )
            .and_where(Expr::col((e.clone(), Alias::new("type"))).eq(event_type))
            .and_where(Expr::col((e.clone(), Alias::new("at"))).gt(lit(&Lit::Int(since))))
            .and_where(Expr::col((e, Alias::new("at"))).lte(lit(&Lit::Int(self.as_of.now))));
        subquery(q)
    }
}

fn subquery(q: SelectStatement) -> Expr {
    Expr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(q)))
}

fn double(x: Expr) -> Expr {
    x.cast_as("DOUBLE PRECISION")
}

/// A literal, bound, with its type in the SQL text (see `audience::filter_sql`: PostgreSQL
/// caches a statement's parameter types by its text).
fn lit(l: &Lit) -> Expr {
    match l {
        Lit::Int(i) => Expr::val(*i).cast_as("BIGINT"),
        Lit::Dec(d) => Expr::val(*d).cast_as("DOUBLE PRECISION"),
        Lit::Text(s) => Expr::val(s.clone()),
        Lit::Bool(b) => Expr::val(*b),
        Lit::Null => Expr::cust("NULL"),
    }
}

/// The newest period of each history table.
pub(crate) async fn as_of(c: &impl ConnectionTrait, now: Millis) -> Result<AsOf> {
    let mut out = AsOf {
        month: None,
        day: None,
        now,
    };
    for p in Period::ALL {
        let newest = crate::history::newest_period(c, p).await?;
        match p {
            Period::Month => out.month = newest,
            Period::Day => out.day = newest,
        }
    }
    Ok(out)
}

impl Store {
    /// What derived attributes' windows count back from, now.
    pub async fn as_of(&self, now: Millis) -> Result<AsOf> {
        as_of(self.db(), now).await
    }

    /// The values of derived attributes `names` for subscribers `ids`, as template text
    /// (in the order of `names`), computed by the same SQL filters use.
    pub async fn derived_values(
        &self,
        cat: &Catalogue,
        ids: &[i64],
        names: &[&str],
        now: Millis,
    ) -> Result<std::collections::HashMap<i64, Vec<String>>> {
        let mut out = std::collections::HashMap::new();
        if ids.is_empty() || names.is_empty() {
            return Ok(out);
        }
        let fields = FieldSql::new(cat, self.as_of(now).await?);
        for chunk in ids.chunks(500) {
            let mut q = Query::select();
            q.column((Alias::new(SUBSCRIBER), Alias::new("id")))
                .from(Alias::new(SUBSCRIBER))
                .and_where(
                    Expr::col((Alias::new(SUBSCRIBER), Alias::new("id")))
                        .is_in(chunk.iter().copied()),
                );
            for (i, n) in names.iter().enumerate() {
                q.expr_as(fields.field(n), Alias::new(format!("d{i}")));
            }
            for r in self.db().query_all(&q).await? {
                let id: i64 = r.try_get("", "id")?;
                let mut values = Vec::with_capacity(names.len());
                for (i, n) in names.iter().enumerate() {
                    let col = format!("d{i}");
                    let kind = cat.field(n).map(|a| a.kind.clone());
                    values.push(read_value(&r, &col, kind.as_ref())?.to_text());
                }
                out.insert(id, values);
            }
        }
        Ok(out)
    }
}

fn read_value(
    r: &sea_orm::QueryResult,
    col: &str,
    kind: Option<&catalogue::Kind>,
) -> Result<Value> {
    use catalogue::Storage;
    Ok(match kind.map(catalogue::Kind::storage) {
        Some(Storage::Integer) => r.try_get::<Option<i64>>("", col)?.into(),
        Some(Storage::Real) => r.try_get::<Option<f64>>("", col)?.into(),
        Some(Storage::Bool) => r.try_get::<Option<bool>>("", col)?.into(),
        _ => r.try_get::<Option<String>>("", col)?.into(),
    })
}
