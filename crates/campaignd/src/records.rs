//! `campaignd import-history` and `campaignd import-events`: usage history and events of
//! subscribers already in the base, streamed from CSV in one transaction (all or nothing).
//! Rows of subscribers not in the base are counted and left out, not refused: an operator's
//! export often runs a day ahead of or behind the base.

use std::path::Path;

use catalogue::Catalogue;
use store::Store;
use store::events::{EventSource, NewEvent};
use store::history::{HistoryRow, RecordImport, SubscriberKey};
use subscribers::import::Key;
use subscribers::{Record, RecordKind, RecordMapping, RecordReader};

use crate::import::{ImportFailure, mask_digit_runs, progress_bar};

/// Records per round trip from the CSV reader to the database.
const CHUNK: usize = 5_000;

/// Unknown subscribers named in the summary.
const SHOWN_UNKNOWN: usize = 5;

/// What an import stored.
#[derive(Debug, Default)]
pub struct RecordsOutcome {
    /// Records in the file.
    pub records: u64,
    /// History rows or events stored.
    pub stored: u64,
    /// Events of the file already in the log (an import of the same file again), not stored
    /// twice.
    pub already: u64,
    /// Records of subscribers not in the base (left out).
    pub unknown: u64,
    /// The first few of those subscribers, numbers masked.
    pub unknown_shown: Vec<String>,
}

/// Reads the mapping file (if any) for records of `kind`; `Err` is its located problem.
pub fn read_mapping(
    cat: &Catalogue,
    kind: RecordKind,
    mapping: Option<&Path>,
) -> anyhow::Result<Result<Option<RecordMapping>, String>> {
    let Some(path) = mapping else {
        return Ok(Ok(None));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(
        RecordMapping::parse(cat, kind, &path.display().to_string(), &text)
            .map(Some)
            .map_err(|e| e.to_string()),
    )
}

/// Streams `csv` into the history tables or the event log (see the module documentation).
pub async fn import_records(
    store: &Store,
    kind: RecordKind,
    mapping: Option<RecordMapping>,
    csv: &Path,
    progress: bool,
) -> anyhow::Result<Result<RecordsOutcome, ImportFailure>> {
    let name = csv.display().to_string();
    let file = std::fs::File::open(csv).map_err(|e| anyhow::anyhow!("cannot open {name}: {e}"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let cat = store.catalogue();
    let mut reader = match RecordReader::streaming(
        &cat,
        kind,
        mapping,
        &name,
        std::io::BufReader::with_capacity(1 << 16, file),
    ) {
        Ok(r) => r,
        Err(e) => return Ok(Err(ImportFailure::Rows(e))),
    };
    let mut tx = store.begin_records().await?;
    let bar = progress_bar(size, progress);
    let mut outcome = RecordsOutcome::default();
    let mut records = Vec::with_capacity(CHUNK);
    loop {
        let more = reader.read_chunk(&mut records, CHUNK);
        // A history file's (subscriber, period) pairs are kept in the transaction, not in
        // memory, to name both lines of a repeat; looked up even after a problem, to report
        // every repeat.
        let written = async {
            let earlier = tx.earlier_lines(reader.pairs()).await?;
            reader.repeats(&earlier);
            if !reader.failed() && !records.is_empty() {
                write(&mut tx, reader.mapping(), &records, &mut outcome).await?;
            }
            Ok::<_, store::StoreError>(())
        }
        .await;
        if let Err(e) = written {
            drop(tx);
            if let Some(b) = &bar {
                b.abandon();
            }
            return Ok(Err(ImportFailure::Store(format!(
                "the database refused the rows: {}",
                mask_digit_runs(&e.to_string())
            ))));
        }
        records.clear();
        if let Some(b) = &bar {
            b.set_position(reader.position());
            b.set_message(format!("{} records", reader.records()));
        }
        if !more {
            break;
        }
    }
    match reader.finish() {
        Ok(n) => outcome.records = n,
        Err(errors) => {
            drop(tx);
            if let Some(b) = &bar {
                b.abandon();
            }
            return Ok(Err(ImportFailure::Rows(errors)));
        }
    }
    tx.commit().await?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    Ok(Ok(outcome))
}

/// Writes one chunk of records of known subscribers; counts the others.
async fn write(
    tx: &mut RecordImport,
    mapping: &RecordMapping,
    records: &[Record],
    outcome: &mut RecordsOutcome,
) -> store::Result<()> {
    let key = match mapping.key() {
        Key::Msisdn => SubscriberKey::Msisdn,
        Key::ExternalId => SubscriberKey::ExternalId,
    };
    let mut keys: Vec<&str> = records.iter().map(Record::key).collect();
    keys.sort_unstable();
    keys.dedup();
    let ids = tx.subscriber_ids(key, &keys).await?;
    let received_at = store::wall_now();
    let mut history = Vec::new();
    let mut events = Vec::new();
    for r in records {
        let Some(&subscriber_id) = ids.get(r.key()) else {
            outcome.unknown += 1;
            if outcome.unknown_shown.len() < SHOWN_UNKNOWN {
                let shown = match key {
                    SubscriberKey::Msisdn => domain::mask(r.key()),
                    SubscriberKey::ExternalId => r.key().to_owned(),
                };
                if !outcome.unknown_shown.contains(&shown) {
                    outcome.unknown_shown.push(shown);
                }
            }
            continue;
        };
        match r {
            Record::History { period, values, .. } => history.push(HistoryRow {
                subscriber_id,
                period: *period,
                values: values.clone(),
            }),
            Record::Event {
                kind,
                at,
                value,
                detail,
                ..
            } => events.push(NewEvent {
                subscriber_id,
                kind: kind.clone(),
                at: *at,
                value: *value,
                detail: detail.clone(),
                source: EventSource::Import,
                received_at,
            }),
        }
    }
    if let Some(period) = mapping.period() {
        outcome.stored += tx
            .write_history(period, &mapping.measures(), &history)
            .await?;
    }
    if !events.is_empty() {
        let stored = tx.write_events(&events).await?;
        outcome.stored += stored;
        outcome.already += events.len() as u64 - stored;
    }
    Ok(())
}

/// The summary lines of a finished import.
pub fn summary(kind: RecordKind, csv: &Path, o: &RecordsOutcome) -> Vec<String> {
    let what = match kind {
        RecordKind::History => "history rows",
        RecordKind::Events => "events",
    };
    let mut lines = vec![format!(
        "imported {} {what} from {} ({} records)",
        o.stored,
        csv.display(),
        o.records
    )];
    if o.already > 0 {
        lines.push(format!(
            "{} {what} were already present (the same subscriber, type, time, value and detail), not stored again",
            o.already
        ));
    }
    if o.unknown > 0 {
        lines.push(format!(
            "left out {} record(s) of subscribers not in the base, such as {}",
            o.unknown,
            o.unknown_shown.join(", ")
        ));
    }
    lines
}
