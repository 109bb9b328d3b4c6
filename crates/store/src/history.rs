//! Usage history: the catalogue's measures per subscriber and period (see
//! [`catalogue::history`]). One table per period length (`usage_month`, `usage_day`): key
//! `(subscriber_id, period)`, an index on `period`, and one column per measure of that
//! length, named as the measure (BIGINT for whole numbers, DOUBLE PRECISION otherwise).
//!
//! As for attributes, the database is the record of what was applied: measure columns follow
//! the catalogue ([`Store::apply_catalogue`] adds them, [`Store::check_catalogue`] verifies
//! them), are never dropped and never change type in place.
//!
//! Imports of history and of events go through one transaction ([`RecordImport`]): all or
//! nothing.

use std::collections::{HashMap, HashSet};

use catalogue::history::{Measure, Period, Retention};
use catalogue::{Catalogue, Storage, Value as AttrValue};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, TransactionTrait, Value};

use crate::attributes::storage_of;
use crate::events::NewEvent;
use crate::subscribers::{read_value, sql_value};
use crate::{Millis, Result, Store, StoreError, exec, marks, query};

/// Bound parameters per INSERT, under SQLite's (32,766) and PostgreSQL's (65,535) limits.
const MAX_PARAMS: usize = 30_000;
/// At most this many rows per INSERT, however few the columns.
const MAX_CHUNK: usize = 1000;

const DAY_MS: Millis = 86_400_000;

fn storage(m: &Measure) -> Storage {
    if m.integer {
        Storage::Integer
    } else {
        Storage::Real
    }
}

/// One subscriber's measures for one period. `values` follow the measure list the row is
/// written with; a `Null` stores "not measured".
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub subscriber_id: i64,
    pub period: i64,
    pub values: Vec<AttrValue>,
}

/// How an import names subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriberKey {
    Msisdn,
    ExternalId,
}

impl SubscriberKey {
    pub fn column(self) -> &'static str {
        match self {
            SubscriberKey::Msisdn => "msisdn",
            SubscriberKey::ExternalId => "external_id",
        }
    }
}

/// What [`Store::prune`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    pub months: u64,
    pub days: u64,
    pub events: u64,
}

/// A history or event import in progress: one open transaction. Nothing is visible until
/// [`RecordImport::commit`]; dropping it rolls everything back.
pub struct RecordImport {
    catalogue: std::sync::Arc<Catalogue>,
    tx: DatabaseTransaction,
    history: u64,
    events: u64,
    /// Whether [`RecordImport::earlier_lines`] created its temporary table.
    lines_table: bool,
}

/// The temporary table of [`RecordImport::earlier_lines`]: one row per (subscriber, period)
/// of a history file.
const LINES_TABLE: &str = "import_record_line";

/// (subscriber key, period) pairs looked up per statement: 2 parameters each.
const LOOKUP_CHUNK: usize = 500;

/// The catalogue's measure columns the database lacks, and those whose type does not store
/// the measure's kind, per table. Read before any change, so a refusal changes nothing.
pub(crate) struct HistoryPlan {
    missing: Vec<(Period, Measure)>,
    wrong: Vec<String>,
}

impl HistoryPlan {
    /// The check's problems, in the words of [`Store::check_catalogue`].
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.missing.is_empty() {
            let names: Vec<String> = self
                .missing
                .iter()
                .map(|(p, m)| format!("{}.{}", p.table(), m.name))
                .collect();
            out.push(format!(
                "the database has no column for measure(s) {}: run `campaignd migrate` to add them",
                names.join(", ")
            ));
        }
        out.extend(self.refusal());
        out
    }

    /// Why `apply_catalogue` must refuse, if it must.
    pub(crate) fn refusal(&self) -> Option<String> {
        (!self.wrong.is_empty()).then(|| {
            format!(
                "{}: a type is never changed in place; declare a new measure and import into it",
                self.wrong.join("; ")
            )
        })
    }

    /// Adds the missing columns inside `tx`; returns them as `table.measure`.
    pub(crate) async fn apply(&self, tx: &DatabaseTransaction) -> Result<Vec<String>> {
        let mut added = Vec::new();
        for (p, m) in &self.missing {
            let ty = if m.integer {
                "BIGINT"
            } else {
                "DOUBLE PRECISION"
            };
            tx.execute_unprepared(&format!(
                "ALTER TABLE {} ADD COLUMN \"{}\" {ty}",
                p.table(),
                m.name
            ))
            .await?;
            added.push(format!("{}.{}", p.table(), m.name));
        }
        Ok(added)
    }
}

impl Store {
    /// Compares the catalogue's measures with the history tables' columns.
    pub(crate) async fn history_plan(&self, cat: &Catalogue) -> Result<HistoryPlan> {
        let mut plan = HistoryPlan {
            missing: Vec::new(),
            wrong: Vec::new(),
        };
        for p in Period::ALL {
            let columns = self.table_columns(p.table()).await?;
            for m in cat.measures_of(p) {
                match columns.iter().find(|(n, _)| *n == m.name) {
                    None => plan.missing.push((p, m.clone())),
                    Some((_, ty)) if storage_of(ty) != Some(storage(m)) => {
                        plan.wrong.push(format!(
                            "measure `{}` is declared {} but its column {}.{} holds {ty}",
                            m.name,
                            if m.integer { "integer" } else { "decimal" },
                            p.table(),
                            m.name
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(plan)
    }

    /// (name, declared SQL type) of every column of `table`.
    pub(crate) async fn table_columns(&self, table: &str) -> Result<Vec<(String, String)>> {
        let (sql, values): (&str, Vec<Value>) = if self.db().get_database_backend()
            == DbBackend::Postgres
        {
            (
                "SELECT column_name AS name, data_type AS ty FROM information_schema.columns \
                     WHERE table_name = ? AND table_schema = current_schema() ORDER BY ordinal_position",
                vec![table.into()],
            )
        } else {
            (
                "SELECT name, type AS ty FROM pragma_table_info(?) ORDER BY cid",
                vec![table.into()],
            )
        };
        query(self.db(), sql, values)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("", "name")?, r.try_get("", "ty")?)))
            .collect()
    }

    /// Starts a history or event import (see [`RecordImport`]), with the catalogue in use.
    pub async fn begin_records(&self) -> Result<RecordImport> {
        let catalogue = self.catalogue();
        self.history_plan(&catalogue)
            .await?
            .problems()
            .first()
            .map_or(Ok(()), |p| Err(StoreError::Catalogue(p.clone())))?;
        Ok(RecordImport {
            catalogue,
            tx: self.db().begin().await?,
            history: 0,
            events: 0,
            lines_table: false,
        })
    }

    /// Writes history rows in one transaction (see [`RecordImport::write_history`]).
    pub async fn record_history(
        &self,
        period: Period,
        measures: &[&str],
        rows: &[HistoryRow],
    ) -> Result<u64> {
        let mut import = self.begin_records().await?;
        let n = import.write_history(period, measures, rows).await?;
        import.commit().await?;
        Ok(n)
    }

    /// A subscriber's history of one period length, oldest period first: every measure of
    /// that length in the catalogue in use, in declared order.
    pub async fn history_of(
        &self,
        subscriber_id: i64,
        period: Period,
    ) -> Result<Vec<(i64, Vec<AttrValue>)>> {
        let cat = self.catalogue();
        let measures: Vec<&Measure> = cat.measures_of(period).collect();
        let mut cols = String::from("period");
        for (i, m) in measures.iter().enumerate() {
            cols.push_str(&format!(", \"{}\" AS m{i}", m.name));
        }
        let rows = query(
            self.db(),
            &format!(
                "SELECT {cols} FROM {} WHERE subscriber_id = ? ORDER BY period",
                period.table()
            ),
            [subscriber_id.into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let values = measures
                    .iter()
                    .enumerate()
                    .map(|(i, m)| read_value(r, &format!("m{i}"), storage(m)))
                    .collect::<Result<Vec<_>>>()?;
                Ok((r.try_get("", "period")?, values))
            })
            .collect()
    }

    /// The newest period loaded, if any (retention and "the last n periods" count from it).
    pub async fn newest_period(&self, period: Period) -> Result<Option<i64>> {
        newest_period(self.db(), period).await
    }

    /// Retention of history: keeps the newest `retention.months` monthly and `.days` daily
    /// periods loaded (counted back from the newest, whether or not each was loaded) and
    /// deletes older rows. Returns how many rows of each table went.
    pub async fn prune_history(&self, retention: &Retention) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        for p in Period::ALL {
            let Some(newest) = self.newest_period(p).await? else {
                continue;
            };
            let keep = i64::from(retention.periods(p));
            let n = exec(
                self.db(),
                &format!("DELETE FROM {} WHERE period < ?", p.table()),
                [(newest - keep + 1).into()],
            )
            .await?
            .rows_affected();
            match p {
                Period::Month => pruned.months = n,
                Period::Day => pruned.days = n,
            }
        }
        Ok(pruned)
    }

    /// All retention at once: history as [`Store::prune_history`], and events that happened
    /// more than `retention.event_days` days before `now`.
    pub async fn prune(&self, retention: &Retention, now: Millis) -> Result<Pruned> {
        let mut pruned = self.prune_history(retention).await?;
        pruned.events = self
            .prune_events(now - i64::from(retention.event_days) * DAY_MS)
            .await?;
        Ok(pruned)
    }
}

impl RecordImport {
    /// The ids of the subscribers named by `keys` (as `key` says), for those that exist.
    /// A key shared by several subscribers (external ids need not be unique) is left out:
    /// its rows cannot be told apart.
    pub async fn subscriber_ids(
        &self,
        key: SubscriberKey,
        keys: &[&str],
    ) -> Result<HashMap<String, i64>> {
        let mut ids = HashMap::with_capacity(keys.len());
        let mut shared = HashSet::new();
        let col = key.column();
        for chunk in keys.chunks(MAX_CHUNK) {
            let sql = format!(
                "SELECT id, {col} AS k FROM subscriber WHERE {col} IN ({})",
                marks(chunk.len())
            );
            let rows = query(&self.tx, &sql, chunk.iter().map(|k| Value::from(*k))).await?;
            for r in &rows {
                let k: String = r.try_get("", "k")?;
                if ids.insert(k.clone(), r.try_get::<i64>("", "id")?).is_some() {
                    shared.insert(k);
                }
            }
        }
        for k in shared {
            ids.remove(&k);
        }
        Ok(ids)
    }

    /// Upserts rows of one period length: a row for a (subscriber, period) already stored
    /// replaces the values of the measures in `measures` and leaves the others. `measures`
    /// must be measures of `period` in the catalogue; `values` of each row follow it. A
    /// (subscriber, period) twice in one call is refused (which one would win?).
    pub async fn write_history(
        &mut self,
        period: Period,
        measures: &[&str],
        rows: &[HistoryRow],
    ) -> Result<u64> {
        let declared: Vec<&Measure> = measures
            .iter()
            .map(|name| {
                self.catalogue
                    .measure(name)
                    .filter(|m| m.period == period)
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "`{name}` is not a {period} measure of the catalogue"
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        let mut seen = HashSet::with_capacity(rows.len());
        for r in rows {
            if r.values.len() != declared.len() {
                return Err(StoreError::Invalid(format!(
                    "a history row has {} values for {} measures",
                    r.values.len(),
                    declared.len()
                )));
            }
            if !seen.insert((r.subscriber_id, r.period)) {
                return Err(StoreError::Invalid(format!(
                    "subscriber {} has period {} twice",
                    r.subscriber_id,
                    period.label(r.period)
                )));
            }
        }
        let per_row = 2 + declared.len();
        let chunk_rows = (MAX_PARAMS / per_row).clamp(1, MAX_CHUNK);
        let mut columns = vec!["subscriber_id".to_owned(), "period".to_owned()];
        columns.extend(declared.iter().map(|m| format!("\"{}\"", m.name)));
        let conflict = if declared.is_empty() {
            " ON CONFLICT (subscriber_id, period) DO NOTHING".to_owned()
        } else {
            let sets: Vec<String> = columns[2..]
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            format!(
                " ON CONFLICT (subscriber_id, period) DO UPDATE SET {}",
                sets.join(", ")
            )
        };
        let row = format!("({})", marks(per_row));
        let mut n = 0;
        for chunk in rows.chunks(chunk_rows) {
            let mut sql = format!(
                "INSERT INTO {} ({}) VALUES ",
                period.table(),
                columns.join(", ")
            );
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * per_row);
            for (i, r) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&row);
                values.extend([r.subscriber_id.into(), r.period.into()]);
                for (m, v) in declared.iter().zip(&r.values) {
                    values.push(sql_value(&m.name, storage(m), v)?);
                }
            }
            sql.push_str(&conflict);
            n += exec(&self.tx, &sql, values).await?.rows_affected();
        }
        self.history += n;
        Ok(n)
    }

    /// Appends events to the log, checked as [`Store::record_events`] checks them; returns
    /// how many were new (an event already in the log is not stored again).
    pub async fn write_events(&mut self, events: &[NewEvent]) -> Result<u64> {
        crate::events::check(events)?;
        let n = crate::events::insert_events(&self.tx, events).await?;
        self.events += n;
        Ok(n)
    }

    /// Finds the repeats of a history file without holding the file's records in memory:
    /// each record's (subscriber key, period) and the line it is on are kept in a temporary
    /// table of the import's transaction, gone with it (as [`crate::subscribers::SubscriberImport::earlier_lines`]
    /// keeps the base import's numbers). Returns, for each of `records` in order, the line of
    /// an earlier record with the same subscriber and period, from an earlier call or earlier
    /// in `records`, or `None` for a first occurrence.
    pub async fn earlier_lines(
        &mut self,
        records: &[(String, i64, u64)],
    ) -> Result<Vec<Option<u64>>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if !self.lines_table {
            exec(
                &self.tx,
                &format!(
                    "CREATE TEMPORARY TABLE IF NOT EXISTS {LINES_TABLE} (subscriber_key TEXT NOT NULL, \
                     period BIGINT NOT NULL, line BIGINT NOT NULL, PRIMARY KEY (subscriber_key, period))"
                ),
                [],
            )
            .await?;
            // Left by an import on this connection that committed without dropping it.
            exec(&self.tx, &format!("DELETE FROM {LINES_TABLE}"), []).await?;
            self.lines_table = true;
        }
        // First line of each pair of this call: earlier copies in `records` need no query.
        let mut first: HashMap<(&str, i64), u64> = HashMap::with_capacity(records.len());
        let mut out = Vec::with_capacity(records.len());
        let mut new: Vec<(&str, i64, u64)> = Vec::with_capacity(records.len());
        for (key, period, line) in records {
            match first.entry((key.as_str(), *period)) {
                std::collections::hash_map::Entry::Occupied(o) => out.push(Some(*o.get())),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(*line);
                    out.push(None);
                    new.push((key.as_str(), *period, *line));
                }
            }
        }
        // Repeats are rare: insert every first occurrence, and only when some were already
        // there ask which, and on what line.
        let mut inserted = 0;
        for chunk in new.chunks(MAX_CHUNK) {
            let mut sql =
                format!("INSERT INTO {LINES_TABLE} (subscriber_key, period, line) VALUES ");
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 3);
            for (i, (key, period, line)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str("(?, ?, ?)");
                values.extend([(*key).into(), (*period).into(), (*line as i64).into()]);
            }
            sql.push_str(" ON CONFLICT (subscriber_key, period) DO NOTHING");
            inserted += exec(&self.tx, &sql, values).await?.rows_affected();
        }
        if inserted == new.len() as u64 {
            return Ok(out);
        }
        // Only when a pair was already there (rare): owned keys, to match the rows read back.
        let firsts: HashMap<(String, i64), u64> = new
            .iter()
            .map(|(key, period, line)| (((*key).to_owned(), *period), *line))
            .collect();
        let mut stored: HashMap<(String, i64), u64> = HashMap::new();
        for chunk in new.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT subscriber_key, period, line FROM {LINES_TABLE} WHERE {}",
                vec!["(subscriber_key = ? AND period = ?)"; chunk.len()].join(" OR ")
            );
            let values = chunk
                .iter()
                .flat_map(|(key, period, _)| [Value::from(*key), Value::from(*period)]);
            for r in query(&self.tx, &sql, values).await? {
                let key: String = r.try_get("", "subscriber_key")?;
                let period: i64 = r.try_get("", "period")?;
                let line = r.try_get::<i64>("", "line")? as u64;
                // A line other than this call's first one for the pair: an earlier record's.
                let pair = (key, period);
                if firsts
                    .get(&pair)
                    .is_some_and(|&first_line| first_line != line)
                {
                    stored.insert(pair, line);
                }
            }
        }
        for ((key, period, _), earlier) in records.iter().zip(out.iter_mut()) {
            if let Some(&line) = stored.get(&(key.clone(), *period)) {
                *earlier = Some(line);
            }
        }
        Ok(out)
    }

    /// Commits everything written; returns (history rows, events) written.
    pub async fn commit(self) -> Result<(u64, u64)> {
        if self.lines_table {
            // A temporary table outlives the transaction on its pooled connection.
            exec(&self.tx, &format!("DROP TABLE {LINES_TABLE}"), []).await?;
        }
        self.tx.commit().await?;
        Ok((self.history, self.events))
    }
}

/// The newest period of a history table, on any connection (the planner reads it inside its
/// transaction): `MAX(period)`, answered from the period index.
pub(crate) async fn newest_period(
    c: &impl sea_orm::ConnectionTrait,
    period: Period,
) -> Result<Option<i64>> {
    let rows = query(
        c,
        &format!("SELECT MAX(period) AS p FROM {}", period.table()),
        [],
    )
    .await?;
    Ok(rows[0].try_get::<Option<i64>>("", "p")?)
}
