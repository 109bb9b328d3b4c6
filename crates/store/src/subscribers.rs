//! The subscriber base: bulk insert and lookups, and consent (opt-out and do-not-disturb).
//!
//! **Consent is a record, not a column.** Every change of an opt-out or a do-not-disturb is a
//! row of `consent_change` (subscriber, kind, state, source, time, principal, reason); the
//! newest row of a (subscriber, kind) is its state. `subscriber.opt_out` and
//! `subscriber.do_not_disturb` are caches of that state, read by the planner's SQL and the
//! send-time re-check, and written only here, in the transaction that appends the record.
//! An import may turn consent flags on (and records that it did) but never off: only
//! [`Store::set_consent`] with an explicit source, principal and reason clears one.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;

use catalogue::{Attrs, Catalogue, Storage, Value as AttrValue};

/// A subscriber row: the built-in core and the catalogue's declared attributes.
///
/// `Debug` masks the phone number, so a row formatted into a log or an error shows none.
#[derive(Clone, PartialEq)]
pub struct NewSubscriber {
    pub msisdn: String,
    pub external_id: Option<String>,
    pub timezone: Option<String>,
    pub opt_out: bool,
    pub do_not_disturb: bool,
    /// Every declared attribute, in the order of its catalogue.
    pub attrs: Attrs,
}

impl fmt::Debug for NewSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("NewSubscriber");
        d.field("msisdn", &domain::mask(&self.msisdn))
            .field("external_id", &self.external_id)
            .field("timezone", &self.timezone)
            .field("opt_out", &self.opt_out)
            .field("do_not_disturb", &self.do_not_disturb);
        for (a, v) in self.attrs.catalogue().declared().zip(self.attrs.values()) {
            d.field(&a.name, v);
        }
        d.finish()
    }
}

impl NewSubscriber {
    /// A subscriber with every declared attribute empty and no consent flags.
    pub fn new(msisdn: impl Into<String>, catalogue: Arc<Catalogue>) -> NewSubscriber {
        NewSubscriber {
            msisdn: msisdn.into(),
            external_id: None,
            timezone: None,
            opt_out: false,
            do_not_disturb: false,
            attrs: Attrs::new(catalogue),
        }
    }

    /// The value of a core or declared attribute; `None` when there is no such attribute.
    pub fn get(&self, name: &str) -> Option<AttrValue> {
        match name {
            "msisdn" => Some(AttrValue::Text(self.msisdn.clone())),
            "external_id" => Some(self.external_id.clone().into()),
            "timezone" => Some(self.timezone.clone().into()),
            "opt_out" => Some(AttrValue::Bool(self.opt_out)),
            "do_not_disturb" => Some(AttrValue::Bool(self.do_not_disturb)),
            _ => self.attrs.get(name).cloned(),
        }
    }

    /// An attribute as template text (empty when unset or unknown).
    pub fn text(&self, name: &str) -> String {
        self.get(name).map(|v| v.to_text()).unwrap_or_default()
    }

    /// Sets a core or declared attribute; false (nothing changed) when there is no such
    /// attribute or the value does not fit a core one.
    pub fn set(&mut self, name: &str, value: impl Into<AttrValue>) -> bool {
        let value = value.into();
        match (name, value) {
            ("msisdn", AttrValue::Text(t)) => self.msisdn = t,
            ("external_id", AttrValue::Text(t)) => self.external_id = Some(t),
            ("external_id", AttrValue::Null) => self.external_id = None,
            ("timezone", AttrValue::Text(t)) => self.timezone = Some(t),
            ("timezone", AttrValue::Null) => self.timezone = None,
            ("opt_out", AttrValue::Bool(b)) => self.opt_out = b,
            ("do_not_disturb", AttrValue::Bool(b)) => self.do_not_disturb = b,
            (n, _) if catalogue::CORE.contains(&n) => return false,
            (n, v) => return self.attrs.set(n, v),
        }
        true
    }

    /// Builder form of [`NewSubscriber::set`] for tests and fixtures.
    ///
    /// # Panics
    /// When the catalogue has no such attribute: a fixture naming a field that does not
    /// exist is a bug in the fixture.
    #[track_caller]
    pub fn with(mut self, name: &str, value: impl Into<AttrValue>) -> NewSubscriber {
        assert!(self.set(name, value), "no attribute `{name}` of that type");
        self
    }
}

/// The SQL value of an attribute for a column of `storage`: NULLs carry the column's type
/// (PostgreSQL refuses an untyped one), whole numbers widen into decimal columns.
pub(crate) fn sql_value(name: &str, storage: Storage, v: &AttrValue) -> Result<Value> {
    Ok(match (storage, v) {
        (Storage::Integer, AttrValue::Null) => Value::BigInt(None),
        (Storage::Real, AttrValue::Null) => Value::Double(None),
        (Storage::Text, AttrValue::Null) => Value::String(None),
        (Storage::Bool, AttrValue::Null) => Value::Bool(None),
        (Storage::Integer, AttrValue::Int(i)) => (*i).into(),
        (Storage::Real, AttrValue::Dec(d)) => (*d).into(),
        (Storage::Real, AttrValue::Int(i)) => (*i as f64).into(),
        (Storage::Text, AttrValue::Text(t)) => t.clone().into(),
        (Storage::Bool, AttrValue::Bool(b)) => (*b).into(),
        (storage, v) => {
            return Err(StoreError::Invalid(format!(
                "attribute `{name}` is stored as {storage:?}; a value {v:?} does not fit it"
            )));
        }
    })
}

/// Reads an attribute value from column `col` of a row.
pub(crate) fn read_value(
    r: &sea_orm::QueryResult,
    col: &str,
    storage: Storage,
) -> Result<AttrValue> {
    Ok(match storage {
        Storage::Integer => r.try_get::<Option<i64>>("", col)?.into(),
        Storage::Real => r.try_get::<Option<f64>>("", col)?.into(),
        Storage::Text => r.try_get::<Option<String>>("", col)?.into(),
        Storage::Bool => r.try_get::<Option<bool>>("", col)?.into(),
    })
}

/// The columns of a subscriber row under alias `s`, for [`read_subscriber`]: the core by
/// name, declared attributes as `a0`, `a1`, ... (their names are the operator's).
pub(crate) fn subscriber_cols(cat: &Catalogue) -> String {
    let mut out = String::from("s.msisdn, s.external_id, s.timezone, s.opt_out, s.do_not_disturb");
    for (i, a) in cat.declared().enumerate() {
        out.push_str(&format!(", s.\"{}\" AS a{i}", a.name));
    }
    out
}

/// A subscriber row selected with [`subscriber_cols`].
pub(crate) fn read_subscriber(
    r: &sea_orm::QueryResult,
    cat: &Arc<Catalogue>,
) -> Result<NewSubscriber> {
    let mut values = Vec::with_capacity(cat.declared().count());
    for (i, a) in cat.declared().enumerate() {
        values.push(read_value(r, &format!("a{i}"), a.kind.storage())?);
    }
    let attrs = Attrs::from_values(cat.clone(), values)
        .ok_or_else(|| StoreError::Invalid("attribute count mismatch".into()))?;
    Ok(NewSubscriber {
        msisdn: r.try_get("", "msisdn")?,
        external_id: r.try_get("", "external_id")?,
        timezone: r.try_get("", "timezone")?,
        opt_out: r.try_get("", "opt_out")?,
        do_not_disturb: r.try_get("", "do_not_disturb")?,
        attrs,
    })
}

use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait, Value};

use crate::{Millis, Result, Store, StoreError, audit, exec, query};

/// The core columns an insert writes, before the declared attributes.
const CORE_COLUMNS: [&str; 6] = [
    "msisdn",
    "external_id",
    "timezone",
    "opt_out",
    "do_not_disturb",
    "updated_at",
];
/// Bound parameters per INSERT, under SQLite's (32,766) and PostgreSQL's (65,535) limits.
const MAX_PARAMS: usize = 30_000;
/// At most this many rows per INSERT, however few the columns.
const MAX_CHUNK: usize = 1000;

/// Rows per INSERT for a catalogue: as many as fit the parameter limit.
fn chunk_rows(cat: &Catalogue) -> usize {
    let cols = CORE_COLUMNS.len() + cat.declared().count();
    (MAX_PARAMS / cols).clamp(1, MAX_CHUNK)
}

/// How an insert treats a subscriber whose msisdn is already in the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    /// Refuse the whole batch.
    Fail,
    /// Replace the stored attributes with the new ones (re-import of a fresher export).
    Update,
}

impl Store {
    /// Inserts all rows in one transaction: either every row is stored or none is.
    /// Consent flags set in the rows are recorded as `import` changes by `system`.
    pub async fn insert_subscribers(
        &self,
        rows: &[NewSubscriber],
        on_dup: OnDuplicate,
        now: Millis,
    ) -> Result<u64> {
        let cat = match rows.first() {
            Some(r) => r.attrs.catalogue().clone(),
            None => return Ok(0),
        };
        let mut import = self
            .begin_import(cat, on_dup, now, "system", "insert")
            .await?;
        import.write(rows).await?;
        Ok(import.commit().await?.rows)
    }

    /// Starts an import: rows go in with [`SubscriberImport::write`] as they are read, and
    /// nothing is visible (or kept) until [`SubscriberImport::commit`]. Dropping the import
    /// without committing rolls everything back, so a failed import leaves the base exactly
    /// as it was. `principal` and `file` are recorded with the consent changes it makes.
    /// Rows must follow `catalogue`, whose every attribute must have its column
    /// (`campaignd migrate`).
    pub async fn begin_import(
        &self,
        catalogue: Arc<Catalogue>,
        on_dup: OnDuplicate,
        now: Millis,
        principal: &str,
        file: &str,
    ) -> Result<SubscriberImport> {
        self.check_catalogue(&catalogue).await?;
        Ok(SubscriberImport {
            catalogue,
            tx: self.db().begin().await?,
            on_dup,
            now,
            principal: principal.to_owned(),
            file: file.to_owned(),
            rows: 0,
            keys_table: false,
        })
    }

    pub async fn count_subscribers(&self) -> Result<u64> {
        let rows = query(self.db(), "SELECT COUNT(*) AS n FROM subscriber", []).await?;
        Ok(rows[0].try_get::<i64>("", "n")? as u64)
    }

    /// Looks a subscriber up by phone number.
    pub async fn subscriber_by_msisdn(&self, msisdn: &str) -> Result<Option<i64>> {
        let rows = query(
            self.db(),
            "SELECT id FROM subscriber WHERE msisdn = ?",
            [msisdn.into()],
        )
        .await?;
        Ok(match rows.first() {
            Some(r) => Some(r.try_get::<i64>("", "id")?),
            None => None,
        })
    }

    /// Records an opt-out the subscriber sent by SMS (a reply such as "TD"); every later plan
    /// and every claim honours it.
    pub async fn set_opt_out(&self, subscriber_id: i64, now: Millis) -> Result<()> {
        self.set_consent(
            subscriber_id,
            ConsentKind::OptOut,
            true,
            ConsentSource::SmsReply,
            "subscriber",
            Some("opt-out keyword in an SMS reply"),
            now,
        )
        .await?;
        Ok(())
    }

    /// Records one consent change with who made it and why, updates the cached flag and
    /// writes the audit entry, all in one transaction. This is the only way to clear an
    /// opt-out or a do-not-disturb. Returns false (and records nothing) when the state is
    /// already `state`, or the subscriber does not exist.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_consent(
        &self,
        subscriber_id: i64,
        kind: ConsentKind,
        state: bool,
        source: ConsentSource,
        principal: &str,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        let tx = self.db().begin().await?;
        // Attribution records opt-outs through a fenced handle (see `Store::fenced`).
        self.check_fence(&tx).await?;
        let column = kind.column();
        let rows = query(
            &tx,
            &format!("SELECT {column} AS state FROM subscriber WHERE id = ?"),
            [subscriber_id.into()],
        )
        .await?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        if row.try_get::<bool>("", "state")? == state {
            return Ok(false);
        }
        exec(
            &tx,
            "INSERT INTO consent_change (subscriber_id, kind, state, source, at, principal, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                subscriber_id.into(),
                kind.as_str().into(),
                state.into(),
                source.as_str().into(),
                now.into(),
                principal.into(),
                reason.map(str::to_owned).into(),
            ],
        )
        .await?;
        // Conditional on the state read above: a concurrent change in between makes this
        // update miss, and the transaction is abandoned rather than recording a stale flip.
        let changed = exec(
            &tx,
            &format!(
                "UPDATE subscriber SET {column} = ?, updated_at = ? WHERE id = ? AND {column} = ?"
            ),
            [
                state.into(),
                now.into(),
                subscriber_id.into(),
                (!state).into(),
            ],
        )
        .await?
        .rows_affected();
        if changed != 1 {
            return Err(StoreError::Invalid(format!(
                "consent of subscriber {subscriber_id} changed concurrently; nothing recorded, try again"
            )));
        }
        audit::record(
            &tx,
            now,
            principal,
            audit::action::CONSENT,
            &format!("subscriber {subscriber_id}"),
            Some(&format!(
                "{} {} ({}){}",
                kind.as_str(),
                if state { "on" } else { "off" },
                source.as_str(),
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            )),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every consent change of a subscriber, oldest first.
    pub async fn consent_history(&self, subscriber_id: i64) -> Result<Vec<ConsentChange>> {
        let rows = query(
            self.db(),
            "SELECT kind, state, source, at, principal, reason FROM consent_change WHERE subscriber_id = ? ORDER BY id",
            [subscriber_id.into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ConsentChange {
                    kind: r.try_get("", "kind")?,
                    state: r.try_get("", "state")?,
                    source: r.try_get("", "source")?,
                    at: r.try_get("", "at")?,
                    principal: r.try_get("", "principal")?,
                    reason: r.try_get("", "reason")?,
                })
            })
            .collect()
    }

    /// Subscribers whose cached flag disagrees with their consent record (should be none).
    pub async fn consent_disagreements(&self) -> Result<u64> {
        let mut n = 0;
        for kind in [ConsentKind::OptOut, ConsentKind::Dnd] {
            let rows = query(
                self.db(),
                &format!(
                    "SELECT COUNT(*) AS n FROM subscriber s WHERE s.{} <> {}",
                    kind.column(),
                    latest_state(kind)
                ),
                [],
            )
            .await?;
            n += rows[0].try_get::<i64>("", "n")? as u64;
        }
        Ok(n)
    }
}

/// Which consent a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentKind {
    /// The subscriber does not want marketing messages.
    OptOut,
    /// Do not disturb: no calls or messages at all.
    Dnd,
}

impl ConsentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentKind::OptOut => "opt_out",
            ConsentKind::Dnd => "dnd",
        }
    }

    fn column(self) -> &'static str {
        match self {
            ConsentKind::OptOut => "opt_out",
            ConsentKind::Dnd => "do_not_disturb",
        }
    }
}

/// Where a consent change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentSource {
    Import,
    SmsReply,
    Api,
    Cli,
}

impl ConsentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentSource::Import => "import",
            ConsentSource::SmsReply => "sms_reply",
            ConsentSource::Api => "api",
            ConsentSource::Cli => "cli",
        }
    }
}

/// One recorded consent change. `kind` is `opt_out` or `dnd`; `source` is import,
/// sms_reply, api, cli, or backfill (flags set before consent was recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    pub kind: String,
    pub state: bool,
    pub source: String,
    pub at: Millis,
    pub principal: String,
    pub reason: Option<String>,
}

/// The recorded state of `kind` for the subscriber row aliased `s` (false without a record).
fn latest_state(kind: ConsentKind) -> String {
    format!(
        "COALESCE((SELECT c.state FROM consent_change c WHERE c.subscriber_id = s.id AND c.kind = '{}' ORDER BY c.id DESC LIMIT 1), {})",
        kind.as_str(),
        FALSE
    )
}

/// `FALSE` is understood by both backends (SQLite since 3.23) and compares with either's
/// boolean column.
const FALSE: &str = "FALSE";

/// What an import stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportOutcome {
    /// Rows inserted or updated.
    pub rows: u64,
    /// Opt-outs the import added (recorded with source `import`).
    pub opt_outs_added: u64,
    /// Do-not-disturb flags the import added.
    pub dnd_added: u64,
}

/// An import in progress: one open transaction (see [`Store::begin_import`]).
pub struct SubscriberImport {
    catalogue: Arc<Catalogue>,
    tx: DatabaseTransaction,
    on_dup: OnDuplicate,
    now: Millis,
    principal: String,
    file: String,
    rows: u64,
    /// Whether [`SubscriberImport::earlier_lines`] created its temporary table.
    keys_table: bool,
}

/// The temporary table of [`SubscriberImport::earlier_lines`]: one row per number of the file.
const KEYS_TABLE: &str = "import_number_line";

impl SubscriberImport {
    /// Finds the file's duplicate numbers without holding the file's numbers in memory: each
    /// number's key (any `i64` that is equal exactly when the numbers are) and the line it is
    /// on are kept in a temporary table of the import's transaction, gone with it. Returns,
    /// for each of `numbers` in order, the line of an earlier record with the same key, from
    /// an earlier call or earlier in `numbers`, or `None` for a first occurrence.
    pub async fn earlier_lines(&mut self, numbers: &[(i64, u64)]) -> Result<Vec<Option<u64>>> {
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        if !self.keys_table {
            // SQLite: an INTEGER PRIMARY KEY is the rowid itself, so the table is its index.
            let key_type = match self.tx.get_database_backend() {
                sea_orm::DbBackend::Sqlite => "INTEGER",
                _ => "BIGINT",
            };
            exec(
                &self.tx,
                &format!(
                    "CREATE TEMPORARY TABLE IF NOT EXISTS {KEYS_TABLE} (number_key {key_type} PRIMARY KEY, line BIGINT NOT NULL)"
                ),
                [],
            )
            .await?;
            // Left by an import on this connection that committed without dropping it.
            exec(&self.tx, &format!("DELETE FROM {KEYS_TABLE}"), []).await?;
            self.keys_table = true;
        }
        // First line of each key of this call: earlier copies in `numbers` need no query.
        let mut first: HashMap<i64, u64> = HashMap::with_capacity(numbers.len());
        let mut out = Vec::with_capacity(numbers.len());
        let mut new = Vec::with_capacity(numbers.len());
        for &(key, line) in numbers {
            match first.entry(key) {
                Entry::Occupied(o) => out.push(Some(*o.get())),
                Entry::Vacant(v) => {
                    v.insert(line);
                    out.push(None);
                    new.push(key);
                }
            }
        }
        // Duplicates are rare: insert every first occurrence, and only when some were
        // already there ask which, and on what line.
        let mut inserted = 0;
        for chunk in new.chunks(MAX_CHUNK) {
            let mut sql = format!("INSERT INTO {KEYS_TABLE} (number_key, line) VALUES ");
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 2);
            for (i, key) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str("(?, ?)");
                values.extend([(*key).into(), (first[key] as i64).into()]);
            }
            sql.push_str(" ON CONFLICT (number_key) DO NOTHING");
            inserted += exec(&self.tx, &sql, values).await?.rows_affected();
        }
        if inserted == new.len() as u64 {
            return Ok(out);
        }
        let mut stored: HashMap<i64, u64> = HashMap::new();
        for chunk in new.chunks(MAX_PARAMS) {
            let rows = query(
                &self.tx,
                &format!(
                    "SELECT number_key, line FROM {KEYS_TABLE} WHERE number_key IN ({})",
                    crate::marks(chunk.len())
                ),
                chunk.iter().map(|k| Value::from(*k)),
            )
            .await?;
            for r in &rows {
                let key = r.try_get::<i64>("", "number_key")?;
                let line = r.try_get::<i64>("", "line")? as u64;
                // A line other than this call's first one for the key: an earlier record's.
                if first.get(&key) != Some(&line) {
                    stored.insert(key, line);
                }
            }
        }
        for ((key, _), earlier) in numbers.iter().zip(out.iter_mut()) {
            if let Some(&line) = stored.get(key) {
                *earlier = Some(line);
            }
        }
        Ok(out)
    }

    /// Writes rows inside the import's transaction, as many per statement as the
    /// backends' parameter limits allow.
    pub async fn write(&mut self, rows: &[NewSubscriber]) -> Result<u64> {
        if let Some(other) = rows
            .iter()
            .find(|r| !Arc::ptr_eq(r.attrs.catalogue(), &self.catalogue))
            .filter(|r| **r.attrs.catalogue() != *self.catalogue)
        {
            return Err(StoreError::Invalid(format!(
                "row {:?} follows another attribute catalogue than the import",
                domain::mask(&other.msisdn)
            )));
        }
        let mut n = 0;
        for chunk in rows.chunks(chunk_rows(&self.catalogue)) {
            n += insert_chunk(&self.tx, &self.catalogue, chunk, self.on_dup, self.now).await?;
        }
        self.rows += n;
        Ok(n)
    }

    /// Records the consent flags the import turned on, then commits everything at once.
    pub async fn commit(self) -> Result<ImportOutcome> {
        let mut outcome = ImportOutcome {
            rows: self.rows,
            ..ImportOutcome::default()
        };
        for kind in [ConsentKind::OptOut, ConsentKind::Dnd] {
            // The upsert can only have turned flags on (see `insert_chunk`); every flag now on
            // without a record saying so was turned on by this import.
            let added = exec(
                &self.tx,
                &format!(
                    "INSERT INTO consent_change (subscriber_id, kind, state, source, at, principal, reason) \
                     SELECT s.id, ?, ?, ?, ?, ?, ? FROM subscriber s WHERE s.{} AND NOT {}",
                    kind.column(),
                    latest_state(kind)
                ),
                [
                    kind.as_str().into(),
                    true.into(),
                    ConsentSource::Import.as_str().into(),
                    self.now.into(),
                    self.principal.clone().into(),
                    Some(format!("import of {}", self.file)).into(),
                ],
            )
            .await?
            .rows_affected();
            match kind {
                ConsentKind::OptOut => outcome.opt_outs_added = added,
                ConsentKind::Dnd => outcome.dnd_added = added,
            }
        }
        if outcome.opt_outs_added + outcome.dnd_added > 0 {
            audit::record(
                &self.tx,
                self.now,
                &self.principal,
                audit::action::CONSENT,
                &self.file,
                Some(&format!(
                    "import added {} opt-out(s) and {} do-not-disturb flag(s)",
                    outcome.opt_outs_added, outcome.dnd_added
                )),
            )
            .await?;
        }
        if self.keys_table {
            // A temporary table outlives the transaction on its pooled connection.
            exec(&self.tx, &format!("DROP TABLE {KEYS_TABLE}"), []).await?;
        }
        self.tx.commit().await?;
        Ok(outcome)
    }
}

async fn insert_chunk<C: ConnectionTrait>(
    c: &C,
    cat: &Catalogue,
    chunk: &[NewSubscriber],
    on_dup: OnDuplicate,
    now: Millis,
) -> Result<u64> {
    let declared: Vec<(&str, Storage)> = cat
        .declared()
        .map(|a| (a.name.as_str(), a.kind.storage()))
        .collect();
    let n_cols = CORE_COLUMNS.len() + declared.len();
    let mut columns: Vec<String> = CORE_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    columns.extend(declared.iter().map(|(n, _)| format!("\"{n}\"")));
    let row = format!("({})", crate::marks(n_cols));
    let mut sql = format!("INSERT INTO subscriber ({}) VALUES ", columns.join(", "));
    let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * n_cols);
    for (i, s) in chunk.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&row);
        values.extend([
            s.msisdn.clone().into(),
            s.external_id.clone().into(),
            s.timezone.clone().into(),
            s.opt_out.into(),
            s.do_not_disturb.into(),
            now.into(),
        ]);
        for ((name, storage), v) in declared.iter().zip(s.attrs.values()) {
            values.push(sql_value(name, *storage, v)?);
        }
    }
    if on_dup == OnDuplicate::Update {
        sql.push_str(" ON CONFLICT (msisdn) DO UPDATE SET ");
        // Consent flags only ever turn on here: an export that says "not opted out" is an
        // export that does not know, never a subscriber's opt-in (`Store::set_consent` is).
        let sets: Vec<String> = columns
            .iter()
            .filter(|c| *c != "msisdn")
            .map(|c| match c.as_str() {
                "opt_out" | "do_not_disturb" => format!("{c} = (subscriber.{c} OR excluded.{c})"),
                _ => format!("{c} = excluded.{c}"),
            })
            .collect();
        sql.push_str(&sets.join(", "));
    }
    Ok(exec(c, &sql, values).await?.rows_affected())
}

impl Store {
    /// One subscriber, read with the store's catalogue; `None` when there is no such id.
    pub async fn subscriber(&self, id: i64) -> Result<Option<NewSubscriber>> {
        let cat = self.catalogue();
        let sql = format!(
            "SELECT {} FROM subscriber s WHERE s.id = ?",
            subscriber_cols(&cat)
        );
        match query(self.db(), &sql, [id.into()]).await?.first() {
            Some(r) => Ok(Some(read_subscriber(r, &cat)?)),
            None => Ok(None),
        }
    }

    /// Phone numbers of the given subscribers.
    pub async fn msisdns_of(&self, ids: &[i64]) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT id, msisdn FROM subscriber WHERE id IN ({})",
                crate::marks(chunk.len())
            );
            let rows = query(self.db(), &sql, chunk.iter().map(|i| Value::from(*i))).await?;
            for r in rows {
                out.push((r.try_get("", "id")?, r.try_get("", "msisdn")?));
            }
        }
        Ok(out)
    }
}
