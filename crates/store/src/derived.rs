//! Derived attributes in SQL: [`catalogue::DExpr`] compiled to one sea-query expression over
//! the `subscriber` row, with correlated subqueries for history windows (`usage_month`,
//! `usage_day`) and event counts (`subscriber_event`), every literal bound.
//!
//! A derived attribute made only of history windows of one table (and literals and
//! operators), with two windows or more (`arpu_change`: last month against the three before;
//! `churn_signals`: six windows), is compiled to ONE correlated subquery over the span of its
//! windows, each window an aggregate of `CASE WHEN period BETWEEN .. THEN x END`: one index range
//! read per subscriber instead of one per window. An aggregate over no rows is NULL either
//! way, and a subquery of aggregates always returns one row, so the value is the same.
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
        self.field_at(name, 0, false)
    }

    fn field_at(&self, name: &str, depth: usize, inside: bool) -> Expr {
        match self.cat.derived(name) {
            // A derived attribute names only earlier ones (the catalogue checks), so this
            // recursion ends; the depth bound is a second guard.
            Some(d) if depth < DEPTH_LIMIT => {
                if !inside {
                    let mut w = None;
                    if self.windows(&d.expr, depth + 1, &mut w)
                        && let Some(w) = w.filter(|w| w.count >= 2)
                    {
                        return self.merged(&d.expr, depth + 1, &w);
                    }
                }
                self.compile(&d.expr, depth + 1, inside)
            }
            // Unqualified: stored columns only appear outside the subqueries, whose own
            // columns are all qualified (`h.`, `e.`); a merged subquery has none
            // ([`FieldSql::windows`]).
            _ => Expr::col(Alias::new(name)),
        }
    }

    /// Compiles a checked derived expression.
    pub fn expr(&self, e: &DExpr, depth: usize) -> Expr {
        self.compile(e, depth, false)
    }

    /// `inside`: within a merged history subquery ([`FieldSql::merged`]), where a window is
    /// a filtered aggregate over the subquery's rows rather than a subquery of its own.
    fn compile(&self, e: &DExpr, depth: usize, inside: bool) -> Expr {
        let expr = |x: &DExpr| self.compile(x, depth, inside);
        match e {
            DExpr::Lit(l) => lit(l),
            DExpr::Field { name, .. } => self.field_at(name, depth, inside),
            // Not `(-$1)` as custom SQL: sea-query substitutes `$1` on PostgreSQL only, and
            // SQLite read it as an unbound parameter (NULL).
            DExpr::Neg(x) => lit(&Lit::Int(-1)).mul(expr(x)),
            DExpr::Arith(op, a, b) => {
                let (a, b) = (expr(a), expr(b));
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
                let (a, b) = (expr(a), expr(b));
                match op {
                    CmpOp::Eq => a.eq(b),
                    CmpOp::Ne => a.ne(b),
                    CmpOp::Lt => a.lt(b),
                    CmpOp::Le => a.lte(b),
                    CmpOp::Gt => a.gt(b),
                    CmpOp::Ge => a.gte(b),
                }
            }
            DExpr::And(xs) => self.fold(xs, depth, inside, |a, b| a.and(b)),
            DExpr::Or(xs) => self.fold(xs, depth, inside, |a, b| a.or(b)),
            DExpr::Not(x) => expr(x).not(),
            DExpr::IsNull { expr: x, negated } => {
                let x = expr(x);
                if *negated {
                    x.is_not_null()
                } else {
                    x.is_null()
                }
            }
            DExpr::In {
                expr: x,
                values,
                negated,
            } => {
                let x = expr(x);
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
                let mut case = Expr::case(expr(c0), expr(v0));
                for (c, v) in arms {
                    case = case.case(expr(c), expr(v));
                }
                Expr::Case(Box::new(case.finally(expr(otherwise))))
            }
            DExpr::Coalesce(xs) => Expr::from(Func::coalesce(xs.iter().map(expr))),
            DExpr::History {
                agg,
                measure,
                periods,
                skip,
                ..
            } if inside => self.filtered(*agg, measure, *periods, *skip),
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

    fn fold(
        &self,
        xs: &[DExpr],
        depth: usize,
        inside: bool,
        f: impl Fn(Expr, Expr) -> Expr,
    ) -> Expr {
        let mut it = xs.iter().map(|x| self.compile(x, depth, inside));
        let first = it
            .next()
            .expect("and/or have two or more operands (parser)");
        it.fold(first, f)
    }

    /// A history window's measure type, table and periods (`None` when the measure is
    /// unknown or no history of its period length is loaded).
    fn window(&self, agg: Agg, name: &str, periods: u32, skip: u32) -> Option<Window> {
        let m = self.cat.measure(name)?;
        let newest = self.as_of.newest(m.period)?;
        let hi = newest - i64::from(skip);
        Some(Window {
            ty: measure_type(m.integer, agg),
            period: m.period,
            lo: hi - i64::from(periods) + 1,
            hi,
        })
    }

    fn history(&self, agg: Agg, name: &str, periods: u32, skip: u32) -> Expr {
        let Some(m) = self.cat.measure(name) else {
            return Expr::cust("NULL");
        };
        let Some(w) = self.window(agg, name, periods, skip) else {
            // No history of this period length loaded: every window is empty.
            return Expr::cust("NULL").cast_as(measure_type(m.integer, agg));
        };
        let h = Alias::new("h");
        let value = aggregate(agg, Expr::col((h.clone(), Alias::new(name))));
        let mut q = Query::select();
        q.expr(value.cast_as(w.ty))
            .from_as(Alias::new(w.period.table()), h.clone())
            .and_where(
                Expr::col((h.clone(), Alias::new("subscriber_id")))
                    .eq(Expr::col((Alias::new(SUBSCRIBER), Alias::new("id")))),
            )
            .and_where(period_between(w.lo, w.hi));
        subquery(q)
    }

    /// A window inside a merged subquery: the aggregate over the subquery's rows of its
    /// periods. Only reached for windows [`FieldSql::windows`] accepted.
    fn filtered(&self, agg: Agg, name: &str, periods: u32, skip: u32) -> Expr {
        let Some(w) = self.window(agg, name, periods, skip) else {
            return Expr::cust("NULL");
        };
        // `AGG(CASE WHEN in window THEN x END)`: aggregates skip NULLs, so this is the
        // window's aggregate (NULL when the window has no row), as `FILTER (WHERE ..)` would
        // be, with no custom SQL text (sea-query's custom placeholders differ per backend).
        let in_window = Expr::case(
            period_between(w.lo, w.hi),
            Expr::col((Alias::new("h"), Alias::new(name))),
        )
        .finally(Expr::cust("NULL"));
        aggregate(agg, Expr::Case(Box::new(in_window))).cast_as(w.ty)
    }

    /// Whether `e` (derived attributes it names included) is made only of literals,
    /// operators and history windows of one table with history loaded, widening `span` to
    /// cover every window; such an expression can be one subquery ([`FieldSql::merged`]).
    fn windows(&self, e: &DExpr, depth: usize, span: &mut Option<Span>) -> bool {
        match e {
            DExpr::Lit(_) => true,
            DExpr::Field { name, .. } => match self.cat.derived(name) {
                Some(d) if depth < DEPTH_LIMIT => self.windows(&d.expr, depth + 1, span),
                // A stored column, which the subquery's own table might shadow.
                _ => false,
            },
            DExpr::Events { .. } => false,
            DExpr::History {
                agg,
                measure,
                periods,
                skip,
                ..
            } => {
                let Some(w) = self.window(*agg, measure, *periods, *skip) else {
                    return false;
                };
                match span {
                    None => {
                        *span = Some(Span {
                            period: w.period,
                            lo: w.lo,
                            hi: w.hi,
                            count: 1,
                        });
                        true
                    }
                    Some(s) if s.period == w.period => {
                        s.lo = std::cmp::min(s.lo, w.lo);
                        s.hi = std::cmp::max(s.hi, w.hi);
                        s.count += 1;
                        true
                    }
                    Some(_) => false,
                }
            }
            DExpr::Neg(x) | DExpr::Not(x) => self.windows(x, depth, span),
            DExpr::IsNull { expr, .. } | DExpr::In { expr, .. } => self.windows(expr, depth, span),
            DExpr::Arith(_, a, b) | DExpr::Cmp(_, a, b) => {
                self.windows(a, depth, span) && self.windows(b, depth, span)
            }
            DExpr::And(xs) | DExpr::Or(xs) | DExpr::Coalesce(xs) => {
                xs.iter().all(|x| self.windows(x, depth, span))
            }
            DExpr::Case { arms, otherwise } => {
                arms.iter()
                    .all(|(c, v)| self.windows(c, depth, span) && self.windows(v, depth, span))
                    && self.windows(otherwise, depth, span)
            }
        }
    }

    /// `e` as one correlated subquery over the periods of `span` (see the module doc).
    fn merged(&self, e: &DExpr, depth: usize, span: &Span) -> Expr {
        let h = Alias::new("h");
        let mut q = Query::select();
        q.expr(self.compile(e, depth, true))
            .from_as(Alias::new(span.period.table()), h.clone())
            .and_where(
                Expr::col((h, Alias::new("subscriber_id")))
                    .eq(Expr::col((Alias::new(SUBSCRIBER), Alias::new("id")))),
            )
            .and_where(period_between(span.lo, span.hi));
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

/// One history window, resolved against [`AsOf`].
struct Window {
    ty: &'static str,
    period: Period,
    lo: i64,
    hi: i64,
}

/// The periods a merged subquery reads, and how many windows it serves.
struct Span {
    period: Period,
    lo: i64,
    hi: i64,
    count: usize,
}

/// PostgreSQL's `SUM(bigint)` and `AVG` are `numeric`: every aggregate is cast to this.
fn measure_type(integer: bool, agg: Agg) -> &'static str {
    if integer && agg != Agg::Mean {
        "BIGINT"
    } else {
        "DOUBLE PRECISION"
    }
}

fn aggregate(agg: Agg, x: Expr) -> Expr {
    Expr::from(match agg {
        Agg::Mean => Func::avg(x),
        Agg::Sum => Func::sum(x),
        Agg::Min => Func::min(x),
        // `last` is one period: MAX of one row is its value.
        Agg::Max | Agg::Last => Func::max(x),
    })
}

fn period_between(lo: i64, hi: i64) -> Expr {
    Expr::col((Alias::new("h"), Alias::new("period")))
        .between(lit(&Lit::Int(lo)), lit(&Lit::Int(hi)))
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
