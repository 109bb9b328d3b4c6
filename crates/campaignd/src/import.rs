//! `campaignd import` and `campaignd consent`: a CSV export streamed into the base in one
//! transaction, and the explicit, recorded consent change that is the only way to clear an
//! opt-out or a do-not-disturb.

use std::io::IsTerminal;
use std::path::Path;

use domain::Msisdn;
use store::Store;
use store::subscribers::{ConsentKind, ConsentSource, ImportOutcome, OnDuplicate};
use subscribers::{CsvImport, ImportErrors, Mapping};

/// Records per round trip from the CSV reader to the database.
const CHUNK: usize = 5_000;

/// Why an import stored nothing.
#[derive(Debug)]
pub enum ImportFailure {
    /// Rows of the file are wrong (every problem, located).
    Rows(ImportErrors),
    /// The database refused the rows or failed; the message names no phone number.
    Store(String),
}

impl std::fmt::Display for ImportFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportFailure::Rows(e) => write!(f, "{e}"),
            ImportFailure::Store(e) => f.write_str(e),
        }
    }
}

/// Streams `csv` into the base: records are read, checked and written a chunk at a time
/// inside one transaction, committed only when the whole file is good. A bad row, a number
/// already in the base (without `update`), or any database error rolls everything back.
/// With `progress` and a terminal on stderr, a bar shows bytes read.
pub async fn import_csv(
    store: &Store,
    mapping: &Mapping,
    csv: &Path,
    update: bool,
    principal: &str,
    progress: bool,
) -> anyhow::Result<Result<ImportOutcome, ImportFailure>> {
    let name = csv.display().to_string();
    let file = std::fs::File::open(csv).map_err(|e| anyhow::anyhow!("cannot open {name}: {e}"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = match CsvImport::streaming(
        mapping,
        &name,
        std::io::BufReader::with_capacity(1 << 16, file),
    ) {
        Ok(r) => r,
        Err(e) => return Ok(Err(ImportFailure::Rows(e))),
    };
    let on_dup = if update {
        OnDuplicate::Update
    } else {
        OnDuplicate::Fail
    };
    let mut tx = store
        .begin_import(
            mapping.catalogue().clone(),
            on_dup,
            store::wall_now(),
            principal,
            &name,
        )
        .await?;
    let bar = progress_bar(size, progress);
    let mut rows = Vec::with_capacity(CHUNK);
    loop {
        let more = reader.read_chunk(&mut rows, CHUNK);
        // The file's numbers are kept in the transaction, not in memory, to name both lines
        // of a duplicate; looked up even after a problem, to report every duplicate.
        let written = async {
            let earlier = tx.earlier_lines(reader.numbers()).await?;
            reader.duplicates(&earlier);
            if !reader.failed() && !rows.is_empty() {
                tx.write(&rows).await?;
            }
            Ok::<_, store::StoreError>(())
        }
        .await;
        if let Err(e) = written {
            drop(tx);
            if let Some(b) = &bar {
                b.abandon();
            }
            return Ok(Err(ImportFailure::Store(
                store_failure(store, &rows, &e, update).await,
            )));
        }
        rows.clear();
        if let Some(b) = &bar {
            b.set_position(reader.position());
            b.set_message(format!("{} records", reader.records()));
        }
        if !more {
            break;
        }
    }
    if let Err(errors) = reader.finish() {
        drop(tx);
        if let Some(b) = &bar {
            b.abandon();
        }
        return Ok(Err(ImportFailure::Rows(errors)));
    }
    let outcome = tx.commit().await?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    Ok(Ok(outcome))
}

/// A bar of bytes read, when `progress` is asked for and stderr is a terminal.
pub(crate) fn progress_bar(size: u64, progress: bool) -> Option<indicatif::ProgressBar> {
    (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} [{bar:40}] {percent}% {per_sec} eta {eta} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar
    })
}

/// A message for a refused chunk that names no number in full: the first row already in the
/// base (masked), or the database's error with digit runs masked.
async fn store_failure(
    store: &Store,
    rows: &[store::subscribers::NewSubscriber],
    e: &store::StoreError,
    update: bool,
) -> String {
    if !update {
        for r in rows {
            if let Ok(Some(_)) = store.subscriber_by_msisdn(&r.msisdn).await {
                let shown = Msisdn::parse(&r.msisdn)
                    .map(|m| m.to_string())
                    .unwrap_or_else(|_| domain::mask(&r.msisdn));
                return format!(
                    "msisdn {shown} is already in the base; use --update to refresh subscribers already there"
                );
            }
        }
    }
    format!(
        "the database refused the rows: {}",
        mask_digit_runs(&e.to_string())
    )
}

/// Masks every run of 5 or more digits (a number inside a database error text).
pub(crate) fn mask_digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 5 {
            out.push_str(&domain::mask(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// `campaignd consent set`: the one way to clear (or set) consent, recorded with who and why.
/// Returns what happened, in words for the terminal (the number masked).
pub async fn set_consent(
    store: &Store,
    msisdn: &str,
    kind: ConsentKind,
    state: bool,
    principal: &str,
    reason: &str,
) -> anyhow::Result<String> {
    let number = Msisdn::parse(msisdn.trim()).map_err(|e| anyhow::anyhow!("MSISDN: {e}"))?;
    if reason.trim().is_empty() || reason.chars().any(char::is_control) {
        anyhow::bail!("--reason: expected why, in words (no control characters)");
    }
    let Some(id) = store.subscriber_by_msisdn(number.expose()).await? else {
        anyhow::bail!("no subscriber {number}");
    };
    let changed = store
        .set_consent(
            id,
            kind,
            state,
            ConsentSource::Cli,
            principal,
            Some(reason.trim()),
            store::wall_now(),
        )
        .await?;
    let what = match (kind, state) {
        (ConsentKind::OptOut, true) => "opted out",
        (ConsentKind::OptOut, false) => "opted in",
        (ConsentKind::Dnd, true) => "on do-not-disturb",
        (ConsentKind::Dnd, false) => "off do-not-disturb",
    };
    Ok(if changed {
        format!("{number} is now {what} (recorded: cli, by {principal})")
    } else {
        format!("{number} was already {what}; nothing recorded")
    })
}

/// `campaignd consent show`: the consent history of one subscriber, number masked.
pub async fn show_consent(store: &Store, msisdn: &str) -> anyhow::Result<Vec<String>> {
    let number = Msisdn::parse(msisdn.trim()).map_err(|e| anyhow::anyhow!("MSISDN: {e}"))?;
    let Some(id) = store.subscriber_by_msisdn(number.expose()).await? else {
        anyhow::bail!("no subscriber {number}");
    };
    let mut lines = vec![format!("consent of {number} (subscriber {id})")];
    for c in store.consent_history(id).await? {
        lines.push(format!(
            "{}  {:<7} {:<3}  {:<9}  {}{}",
            crate::out::time(c.at),
            c.kind,
            if c.state { "on" } else { "off" },
            c.source,
            c.principal,
            c.reason.map(|r| format!("  ({r})")).unwrap_or_default()
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_are_masked() {
        assert_eq!(
            mask_digit_runs("Key (msisdn)=(13900001234) already exists, code 23505"),
            "Key (msisdn)=(139****1234) already exists, code ****"
        );
        assert_eq!(mask_digit_runs("row 12 of 1000"), "row 12 of 1000");
    }
}
