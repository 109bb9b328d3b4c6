//! The per-subscriber event log: orders, top-ups, complaints, brand changes, port-out, churn,
//! activations, first calls, campus-cell sightings, fed by `POST /events` and by import.
//! Events of subscribers outside any campaign are kept: they are data for targeting and
//! monitors (derived attributes such as `bill_queries_30d` count them), not only responses.
//! Responses are a separate path: business events are also `inbound` rows, which tracking
//! attributes to contacts; [`Store::record_business_events`] writes both in one transaction.
//!
//! An event is stored once: the same subscriber, type, time (ms), value and detail is the same
//! event, whether it comes from an import (a file imported twice) or the API (a retried
//! request). A unique index holds it; inserts skip what is already there and say how many.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, TransactionTrait, Value};
use sha2::{Digest, Sha256};

use crate::inbound::{NewInbound, insert_inbound_in, source};
use crate::{Millis, Result, Store, StoreError, exec, marks, query};

/// The longest `detail` text, in characters (the events API's `value` limit).
pub const MAX_DETAIL_LEN: usize = 256;

/// Rows per insert statement: 7 parameters each, far under every backend's parameter limit
/// (SQLite's is 32,766; PostgreSQL's 65,535).
const CHUNK: usize = 1_000;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// `POST /events`.
    Api,
    /// A file import.
    Import,
}

impl EventSource {
    pub const ALL: [EventSource; 2] = [EventSource::Api, EventSource::Import];

    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Api => "api",
            EventSource::Import => "import",
        }
    }

    pub fn parse(s: &str) -> Option<EventSource> {
        EventSource::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// An event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub subscriber_id: i64,
    /// The event type (`order`, `topup`, `port_out`): [`domain::event_type_problem`] holds.
    pub kind: String,
    /// When it happened.
    pub at: Millis,
    /// Its number, when it has one (a top-up amount). Finite.
    pub value: Option<f64>,
    /// Its text (an offer or product id), at most [`MAX_DETAIL_LEN`] characters.
    pub detail: Option<String>,
    pub source: EventSource,
    /// When campaignd stored it.
    pub received_at: Millis,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub subscriber_id: i64,
    pub kind: String,
    pub at: Millis,
    pub value: Option<f64>,
    pub detail: Option<String>,
    pub source: EventSource,
    pub received_at: Millis,
}

/// What [`Store::record_business_events`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusinessEvents {
    /// `inbound` rows, for attribution: every event not stored for attribution before.
    pub inbound: u64,
    /// Events already stored for attribution (the same event sent again, or twice in the
    /// batch): no second `inbound` row, so a retried request is not attributed twice.
    pub inbound_already: u64,
    /// `subscriber_event` rows: the events of known subscribers, newly recorded.
    pub recorded: u64,
    /// Events of known subscribers already in the log (the same event sent again).
    pub already: u64,
}

impl Store {
    /// Records events in one transaction: all or none. Refuses (storing nothing) an event
    /// whose type breaks [`domain::event_type_problem`], whose detail is longer than
    /// [`MAX_DETAIL_LEN`] or whose value is not finite. Returns how many were new: an event
    /// already in the log (or twice in `events`) is stored once.
    pub async fn record_events(&self, events: &[NewEvent]) -> Result<u64> {
        check(events)?;
        let tx = self.db().begin().await?;
        let n = insert_events(&tx, events).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Business events from the API (`inbound` rows of source `event`, as the events route
    /// builds them): every row is stored for attribution, and the event of every known
    /// subscriber is also recorded in the event log (source api), in one transaction, so an
    /// event is never kept as a response but lost as data, or the other way round. The
    /// event's `value` text is its detail, and its value too when it is a finite number.
    /// An unknown number is stored for attribution only (which counts it unmatched).
    ///
    /// Each event is stored for attribution once: its `inbound` row gets the key
    /// [`event_key`] (whatever `idem_key` it came with), which a unique index over event
    /// rows holds (migration 22), so the same event sent again adds no row and is counted in
    /// [`BusinessEvents::inbound_already`].
    pub async fn record_business_events(
        &self,
        rows: &[NewInbound],
        received_at: Millis,
    ) -> Result<BusinessEvents> {
        if let Some(r) = rows.iter().find(|r| r.source != source::EVENT) {
            return Err(StoreError::Invalid(format!(
                "record_business_events takes business events, got an inbound row of source `{}`",
                r.source
            )));
        }
        let rows: Vec<NewInbound> = rows
            .iter()
            .map(|r| NewInbound {
                idem_key: Some(event_key(
                    r.msisdn.as_deref(),
                    &r.kind,
                    r.received_at,
                    r.value.as_deref(),
                )),
                ..r.clone()
            })
            .collect();
        let tx = self.db().begin().await?;
        // The conflict is with `ux_inbound_event_key`: the same event, already stored.
        let inbound = insert_inbound_in(&tx, &rows).await?;
        let mut numbers: Vec<&str> = rows.iter().filter_map(|r| r.msisdn.as_deref()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        let ids = subscriber_ids(&tx, &numbers).await?;
        let events: Vec<NewEvent> = rows
            .iter()
            .filter_map(|r| {
                let subscriber_id = *ids.get(r.msisdn.as_deref()?)?;
                Some(NewEvent {
                    subscriber_id,
                    kind: r.kind.clone(),
                    at: r.received_at,
                    value: r.value.as_deref().and_then(number),
                    detail: r.value.clone(),
                    source: EventSource::Api,
                    received_at,
                })
            })
            .collect();
        if let Err(e) = check(&events) {
            tx.rollback().await?;
            return Err(e);
        }
        let recorded = insert_events(&tx, &events).await?;
        tx.commit().await?;
        Ok(BusinessEvents {
            inbound,
            inbound_already: rows.len() as u64 - inbound,
            recorded,
            already: events.len() as u64 - recorded,
        })
    }

    /// A subscriber's events at or after `since`, oldest first.
    pub async fn events_of(&self, subscriber_id: i64, since: Millis) -> Result<Vec<Event>> {
        let rows = query(
            self.db(),
            "SELECT id, subscriber_id, type, at, value, detail, source, received_at \
             FROM subscriber_event WHERE subscriber_id = ? AND at >= ? ORDER BY at, id",
            [subscriber_id.into(), since.into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let source: String = r.try_get("", "source")?;
                Ok(Event {
                    id: r.try_get("", "id")?,
                    subscriber_id: r.try_get("", "subscriber_id")?,
                    kind: r.try_get("", "type")?,
                    at: r.try_get("", "at")?,
                    value: r.try_get("", "value")?,
                    detail: r.try_get("", "detail")?,
                    source: EventSource::parse(&source).ok_or_else(|| {
                        StoreError::Invalid(format!("subscriber_event with source `{source}`"))
                    })?,
                    received_at: r.try_get("", "received_at")?,
                })
            })
            .collect()
    }

    /// How many events of `kind` a subscriber had at or after `since`: what derived
    /// attributes such as `bill_queries_30d` compute.
    pub async fn count_events(&self, subscriber_id: i64, kind: &str, since: Millis) -> Result<u64> {
        let rows = query(
            self.db(),
            "SELECT COUNT(*) AS n FROM subscriber_event WHERE subscriber_id = ? AND type = ? AND at >= ?",
            [subscriber_id.into(), kind.into(), since.into()],
        )
        .await?;
        Ok(rows[0].try_get::<i64>("", "n")? as u64)
    }

    /// The members of a wave run (its contacts, either arm) with an event of one of `kinds`
    /// that happened in `(after, until]`: who a retention goal counts as lost.
    pub async fn lost_members(
        &self,
        wave_run_id: i64,
        kinds: &[String],
        after: Millis,
        until: Millis,
    ) -> Result<std::collections::HashSet<i64>> {
        if kinds.is_empty() {
            return Ok(Default::default());
        }
        let sql = format!(
            "SELECT DISTINCT e.subscriber_id FROM contact c \
             JOIN subscriber_event e ON e.subscriber_id = c.subscriber_id \
             WHERE c.wave_run_id = ? AND e.type IN ({}) AND e.at > ? AND e.at <= ?",
            marks(kinds.len())
        );
        let mut params: Vec<Value> = vec![wave_run_id.into()];
        params.extend(kinds.iter().map(|k| Value::from(k.as_str())));
        params.push(after.into());
        params.push(until.into());
        let rows = query(self.db(), &sql, params).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64>("", "subscriber_id")?))
            .collect()
    }

    /// Retention: deletes the events that happened before `before`; returns how many.
    pub async fn prune_events(&self, before: Millis) -> Result<u64> {
        Ok(exec(
            self.db(),
            "DELETE FROM subscriber_event WHERE at < ?",
            [before.into()],
        )
        .await?
        .rows_affected())
    }
}

/// The `inbound` key of a business event: what makes it the same event (its number, type,
/// time in ms and value text, the event log's subscriber, type, time, value and detail),
/// hashed, so any value fits and the key cannot be mistaken for a contact's. Each part is
/// length-prefixed, and a missing value differs from an empty one.
pub fn event_key(msisdn: Option<&str>, kind: &str, at: Millis, value: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [msisdn, Some(kind), Some(&at.to_string()), value] {
        match part {
            None => h.update(b"-"),
            Some(p) => {
                h.update(format!("{}:", p.len()).as_bytes());
                h.update(p.as_bytes());
            }
        }
    }
    format!("event:{}", hex::encode(h.finalize()))
}

/// The event's number, when its text is one: `50`, `-3.5`, `1e3`. Not `NaN` or `inf`.
fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

pub(crate) fn check(events: &[NewEvent]) -> Result<()> {
    for (i, e) in events.iter().enumerate() {
        if domain::event_type_problem(&e.kind).is_some() {
            return Err(StoreError::Invalid(format!(
                "event {i}: `{}` is not an event type (1 to {} of a-z, A-Z, 0-9, _ - ., not {})",
                e.kind,
                domain::MAX_EVENT_TYPE_LEN,
                domain::RESERVED_EVENT_TYPES.join(" or ")
            )));
        }
        if e.detail
            .as_deref()
            .is_some_and(|d| d.chars().count() > MAX_DETAIL_LEN)
        {
            return Err(StoreError::Invalid(format!(
                "event {i}: detail longer than {MAX_DETAIL_LEN} characters"
            )));
        }
        if e.value.is_some_and(|v| !v.is_finite()) {
            return Err(StoreError::Invalid(format!(
                "event {i}: value is not a finite number"
            )));
        }
    }
    Ok(())
}

/// Inserts the events not yet in the log; returns how many were inserted.
pub(crate) async fn insert_events<C: ConnectionTrait>(c: &C, events: &[NewEvent]) -> Result<u64> {
    let mut n = 0;
    for chunk in events.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO subscriber_event (subscriber_id, type, at, value, detail, source, received_at) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 7);
        for (i, e) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?)");
            values.extend([
                e.subscriber_id.into(),
                e.kind.clone().into(),
                e.at.into(),
                e.value.into(),
                e.detail.clone().into(),
                e.source.as_str().into(),
                e.received_at.into(),
            ]);
        }
        // The conflict is with `ux_subscriber_event_same`: the same event, already stored.
        sql.push_str(" ON CONFLICT DO NOTHING");
        n += exec(c, &sql, values).await?.rows_affected();
    }
    Ok(n)
}

/// Subscriber ids by phone number, for the numbers that are subscribers.
async fn subscriber_ids<C: ConnectionTrait>(
    c: &C,
    numbers: &[&str],
) -> Result<HashMap<String, i64>> {
    let mut ids = HashMap::with_capacity(numbers.len());
    for chunk in numbers.chunks(CHUNK) {
        let sql = format!(
            "SELECT id, msisdn FROM subscriber WHERE msisdn IN ({})",
            marks(chunk.len())
        );
        let rows = query(c, &sql, chunk.iter().map(|m| Value::from(*m))).await?;
        for r in &rows {
            ids.insert(
                r.try_get::<String>("", "msisdn")?,
                r.try_get::<i64>("", "id")?,
            );
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_back() {
        for s in EventSource::ALL {
            assert_eq!(EventSource::parse(s.as_str()), Some(s));
        }
        assert_eq!(EventSource::parse("cli"), None);
    }

    #[test]
    fn event_keys_tell_events_apart() {
        let k = event_key(Some("13800000001"), "order", 5, Some("a"));
        assert_eq!(k, event_key(Some("13800000001"), "order", 5, Some("a")));
        assert!(k.starts_with("event:"));
        for other in [
            event_key(Some("13800000002"), "order", 5, Some("a")),
            event_key(None, "order", 5, Some("a")),
            event_key(Some("13800000001"), "topup", 5, Some("a")),
            event_key(Some("13800000001"), "order", 6, Some("a")),
            event_key(Some("13800000001"), "order", 5, Some("b")),
            event_key(Some("13800000001"), "order", 5, Some("")),
            event_key(Some("13800000001"), "order", 5, None),
            // The parts' boundaries count.
            event_key(Some("13800000001o"), "rder", 5, Some("a")),
        ] {
            assert_ne!(k, other);
        }
        assert_ne!(
            event_key(Some("1"), "order", 5, None),
            event_key(Some("1"), "order", 5, Some("-"))
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number("50"), Some(50.0));
        assert_eq!(number(" -3.5 "), Some(-3.5));
        assert_eq!(number("offer_a"), None);
        assert_eq!(number("NaN"), None);
        assert_eq!(number("inf"), None);
    }
}
