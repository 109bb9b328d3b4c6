//! Attribution: turns stored inbound events (delivery reports, SMS replies, agent outcomes,
//! business events) into contact state changes and responses.
//!
//! Architecture invariants:
//! - This crate stores nothing itself except through `store`; it knows nothing of HTTP or of
//!   channels. Callbacks are stored as `inbound` rows first (by the api crate or the store)
//!   and attributed here later, so an event that races its contact is kept, not lost.
//! - What counts as a response comes from the workflow version a run started with, through
//!   [`Rules`]; a response is judged by when it was received, not when it is processed, so a
//!   late attribution pass never changes the outcome: an event is matched against the runs
//!   that were active when it was received, finished since or not, and the rules of a
//!   finished run are still looked up.
//! - One attribution loop per database: two loops over the same rows would record the same
//!   responses twice (the store offers no claim on inbound rows). The engine passes a
//!   fenced store (`Store::fenced` on the `attribution` lease): every write renews the lease
//!   and fails with `StoreError::LeaseLost` once another worker holds it, so a loop that
//!   stalled past its lease stops at its next write.

use spec::ResponseRule;
use store::contacts::{ContactState, TREATMENT};
use store::inbound::{ContactRef, InboundRow, Report, ReportChange, source};
use store::{Millis, Store};
use tracing::{debug, info, warn};

/// Where attribution learns what counts as a response for a wave of a run (the engine keeps
/// each active run's workflow version in memory and compiles a finished run's from the
/// store, which is why the lookup may wait on the database).
pub trait Rules: Send + Sync {
    /// `Ok(None)` when the run's workflow cannot be known; such a wave then has no rules, so
    /// its responses are recorded but never count. An error (the store is unreachable)
    /// fails the pass and leaves the row for the next one, rather than deciding it wrongly.
    fn rules(
        &self,
        run_id: i64,
        wave: &str,
    ) -> impl Future<Output = Result<Option<Vec<ResponseRule>>, TrackingError>> + Send;
}

/// What one attribution pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    /// Contacts moved to `delivered` by a delivery report.
    pub delivered: u64,
    /// Contacts moved to `undelivered` by a delivery report (DLR type 2 or 16).
    pub failed: u64,
    /// Contacts still queued that an SMSC acknowledgement (DLR type 8) proved sent.
    pub reconciled: u64,
    /// Response rows recorded (counted or not); one business event may record several.
    pub responses: u64,
    pub opt_outs: u64,
    /// Preferred waves' first-choice calls recorded `unreachable`, now failed with their
    /// second choice written.
    pub fallbacks: u64,
    /// Inbound rows that matched no contact (or were malformed); marked processed.
    pub unmatched: u64,
    /// Inbound rows left unprocessed for a later pass.
    pub deferred: u64,
    /// Inbound rows marked processed, including those that changed nothing (an SMSC ACK, a
    /// repeated report): a caller draining the queue loops while this is non-zero.
    pub processed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("attribution could not use the store: {0}")]
    Store(#[from] store::StoreError),
}

/// Replies whose first word (case-insensitive) is one of these opt the subscriber out. The
/// workflow language owns the list, so a wave cannot count one as a positive reply.
pub use spec::rules::OPT_OUT_KEYWORDS;

/// Kannel DLR types (the `%d` escape), as stored in `inbound.kind`.
mod dlr_type {
    pub(crate) const DELIVERED: &str = "1";
    pub(crate) const UNDELIVERABLE: &str = "2";
    pub(crate) const BUFFERED: &str = "4";
    pub(crate) const SMSC_ACK: &str = "8";
    pub(crate) const SMSC_NACK: &str = "16";
}

/// The channel replies come back on.
const SMS: &str = spec::ChannelKind::Sms.as_str();

enum Disposition {
    Processed,
    Deferred,
}

/// Processes up to `limit` unprocessed inbound rows, untried before deferred, oldest first;
/// returns what it did.
///
/// Delivery reports go first, all of the batch's together: their contacts read with one
/// query, their changes written in one transaction, and the rows marked at the end of the
/// batch, so a crash may repeat the batch's reports (recording a report is idempotent). A
/// report only moves its contact forward (sent, delivered), which the batch's other rows do
/// not wait for: a reply matches a contact that went out whether or not its report came.
///
/// Every other row is marked processed right after it is handled, so a crash repeats at
/// most the row in flight. Opt-outs are idempotent; a repeated reply, outcome or event
/// records its response row again, but the contact's first counted response is kept and
/// conversions are counted per subscriber, so results do not change.
pub async fn process_batch<R: Rules>(
    store: &Store,
    rules: &R,
    limit: u64,
) -> Result<Stats, TrackingError> {
    let rows = store.unprocessed_inbound(limit).await?;
    let mut stats = Stats::default();
    let reports: Vec<&InboundRow> = rows.iter().filter(|r| r.source == source::DLR).collect();
    let (dlrs_done, dlrs_deferred) = dlrs(store, &reports, &mut stats).await?;
    for row in rows.iter().filter(|r| r.source != source::DLR) {
        let disposition = match row.source.as_str() {
            source::MO => mo(store, rules, row, &mut stats).await?,
            source::EVENT => event(store, rules, row, &mut stats).await?,
            source::TASK => task(store, rules, row, &mut stats).await?,
            other => {
                warn!(
                    inbound = row.id,
                    source = other,
                    "Inbound row from an unknown source; dropped."
                );
                stats.unmatched += 1;
                Disposition::Processed
            }
        };
        match disposition {
            Disposition::Processed => {
                store.mark_inbound_processed(&[row.id]).await?;
                stats.processed += 1;
            }
            Disposition::Deferred => {
                // Tried now: the row no longer holds its wave's window open, and it goes
                // behind rows not tried yet.
                store.mark_inbound_deferred(&[row.id]).await?;
                stats.deferred += 1;
            }
        }
    }
    if !dlrs_done.is_empty() {
        store.mark_inbound_processed(&dlrs_done).await?;
    }
    if !dlrs_deferred.is_empty() {
        store.mark_inbound_deferred(&dlrs_deferred).await?;
    }
    Ok(stats)
}

/// Attributes a batch's delivery reports; returns the rows (processed, deferred).
async fn dlrs(
    store: &Store,
    rows: &[&InboundRow],
    stats: &mut Stats,
) -> Result<(Vec<i64>, Vec<i64>), TrackingError> {
    let keys: Vec<&str> = rows.iter().filter_map(|r| r.idem_key.as_deref()).collect();
    let contacts = if keys.is_empty() {
        Default::default()
    } else {
        store.contacts_by_keys(&keys).await?
    };
    let (mut done, mut deferred, mut reports) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let Some(contact) = row.idem_key.as_deref().and_then(|k| contacts.get(k)) else {
            warn!(inbound = row.id, source = %row.source, key = row.idem_key.as_deref().unwrap_or(""), "Inbound event for an unknown contact key; dropped.");
            stats.unmatched += 1;
            done.push(row.id);
            continue;
        };
        if contact.state == ContactState::Pending.as_str() {
            debug!(inbound = row.id, source = %row.source, contact = contact.id, "Event for a contact not yet sent; deferred.");
            deferred.push(row.id);
            continue;
        }
        done.push(row.id);
        // `sending`: still queued, but claimed (see `store::inbound::ContactRef`). States
        // only move forward, so a report whose store-side condition its contact no longer
        // meets is not written at all: the SMSC acknowledgement of a contact the dispatcher
        // already settled (the usual case, half of all reports), a repeated final report.
        let claimed = contact.state == ContactState::Sending.as_str();
        let sent_or_claimed = claimed || contact.state == ContactState::Sent.as_str();
        let change = match row.kind.as_str() {
            dlr_type::DELIVERED => sent_or_claimed.then_some(ReportChange::Delivered),
            kind @ (dlr_type::UNDELIVERABLE | dlr_type::SMSC_NACK) => sent_or_claimed
                .then(|| ReportChange::Undelivered(format!("undeliverable (DLR type {kind})"))),
            // The SMSC took it: proof of submission. Settles a contact whose worker died
            // before recording Kannel's answer, so it is not sent again (it is held back
            // meanwhile).
            dlr_type::SMSC_ACK => claimed.then_some(ReportChange::Submitted),
            // The message is on its way, nothing to record.
            dlr_type::BUFFERED => None,
            other => {
                warn!(
                    inbound = row.id,
                    contact = contact.id,
                    dlr_type = other,
                    "Delivery report of an unknown type; dropped."
                );
                stats.unmatched += 1;
                None
            }
        };
        if let Some(change) = change {
            reports.push(Report {
                contact_id: contact.id,
                change,
                at: row.received_at,
            });
        }
    }
    let changed = store.record_reports(&reports).await?;
    for (r, changed) in reports.iter().zip(changed) {
        if changed {
            match r.change {
                ReportChange::Delivered => stats.delivered += 1,
                ReportChange::Undelivered(_) => stats.failed += 1,
                ReportChange::Submitted => stats.reconciled += 1,
            }
        }
    }
    stats.processed += done.len() as u64;
    stats.deferred += deferred.len() as u64;
    Ok((done, deferred))
}

async fn mo<R: Rules>(
    store: &Store,
    rules: &R,
    row: &InboundRow,
    stats: &mut Stats,
) -> Result<Disposition, TrackingError> {
    let Some(subscriber) = subscriber_for(store, row, stats).await? else {
        return Ok(Disposition::Processed);
    };
    let text = row.value.as_deref().unwrap_or("");
    let word = first_word(text);
    if OPT_OUT_KEYWORDS.contains(&word.as_str()) {
        store.set_opt_out(subscriber, store::wall_now()).await?;
        stats.opt_outs += 1;
        info!(inbound = row.id, msisdn = %mask(row.msisdn.as_deref().unwrap_or("")), "Subscriber opted out by SMS reply.");
        return Ok(Disposition::Processed);
    }
    let at = row.received_at;
    // A reply can only answer a message that went out, so contacts never sent and the
    // control arm are no candidates.
    let mut candidates: Vec<ContactRef> = store
        .contacts_of_at(subscriber, at)
        .await?
        .into_iter()
        .filter(|c| {
            c.arm == TREATMENT
                && c.channel == SMS
                // A reply cannot answer a message that never left us (`undelivered` did:
                // a reply proves it arrived after all).
                && !ContactState::any_is(&ContactState::NEVER_SENT, &c.state)
                && c.planned_at.is_some_and(|p| p <= at)
        })
        .collect();
    // Newest wave across all runs active at `at`, not per run ordinal.
    candidates.sort_by(|a, b| b.planned_at.cmp(&a.planned_at).then(b.id.cmp(&a.id)));
    for contact in &candidates {
        let accepts = rules_of(rules, contact)
            .await?
            .iter()
            .any(|r| matches!(r, ResponseRule::Reply(k) if k == "*" || *k == word));
        if accepts {
            // The keyword, as action paths (`targets: { replied: [...] }`) name it; the
            // whole text stays in the inbound row.
            store
                .record_response(contact, "reply", Some(&word), at, in_window(contact, at))
                .await?;
            stats.responses += 1;
            return Ok(Disposition::Processed);
        }
    }
    debug!(inbound = row.id, msisdn = %mask(row.msisdn.as_deref().unwrap_or("")), "SMS reply matched no wave.");
    stats.unmatched += 1;
    Ok(Disposition::Processed)
}

async fn event<R: Rules>(
    store: &Store,
    rules: &R,
    row: &InboundRow,
    stats: &mut Stats,
) -> Result<Disposition, TrackingError> {
    let Some(subscriber) = subscriber_for(store, row, stats).await? else {
        return Ok(Disposition::Processed);
    };
    let at = row.received_at;
    let value = row.value.as_deref();
    // Control contacts are recorded too: that is how evaluation sees the control group's
    // conversions. Only treatment responses inside the window count for the wave.
    let contacts: Vec<ContactRef> = store
        .contacts_of_at(subscriber, at)
        .await?
        .into_iter()
        .filter(|c| c.planned_at.is_some_and(|p| p <= at))
        .collect();
    let contacts = one_per_wave(contacts);
    if contacts.is_empty() {
        debug!(inbound = row.id, msisdn = %mask(row.msisdn.as_deref().unwrap_or("")), kind = %row.kind, "Business event for a subscriber in no active wave.");
        stats.unmatched += 1;
        return Ok(Disposition::Processed);
    }
    for contact in &contacts {
        let goal = rules_of(rules, contact)
            .await?
            .iter()
            .any(|r| matches!(r, ResponseRule::Event(m) if m.matches(&row.kind, value)));
        let counts = goal && contact.arm == TREATMENT && in_window(contact, at);
        store
            .record_response(contact, &row.kind, value, at, counts)
            .await?;
        stats.responses += 1;
    }
    Ok(Disposition::Processed)
}

/// One contact per wave run: a preferred wave's subscriber may have two (first and second
/// choice), and an event answers the wave once, on the newest that went out (the fallback,
/// when it did), else the newest. In the order given otherwise.
fn one_per_wave(contacts: Vec<ContactRef>) -> Vec<ContactRef> {
    let rank = |c: &ContactRef| {
        (
            !ContactState::any_is(&ContactState::NEVER_SENT, &c.state),
            c.id,
        )
    };
    let mut best: std::collections::HashMap<i64, (bool, i64)> = std::collections::HashMap::new();
    for c in &contacts {
        let r = rank(c);
        best.entry(c.wave_run_id)
            .and_modify(|b| *b = (*b).max(r))
            .or_insert(r);
    }
    contacts
        .into_iter()
        .filter(|c| best.get(&c.wave_run_id).is_some_and(|b| b.1 == c.id))
        .collect()
}

async fn task<R: Rules>(
    store: &Store,
    rules: &R,
    row: &InboundRow,
    stats: &mut Stats,
) -> Result<Disposition, TrackingError> {
    let contact = match sent_contact_for_key(store, row, stats).await? {
        Ok(contact) => contact,
        Err(disposition) => return Ok(disposition),
    };
    let at = row.received_at;
    let outcome = row.value.as_deref();
    // Not reached by phone: a preferred wave's first-choice call falls back to the second
    // choice (before the response is stored, so a crash between the two repeats both, and
    // each is idempotent).
    if outcome == Some(domain::UNREACHABLE) && store.record_unreachable_call(contact.id, at).await?
    {
        stats.fallbacks += 1;
    }
    let expected = rules_of(rules, &contact)
        .await?
        .iter()
        .any(|r| matches!(r, ResponseRule::Outcome(o) if Some(o.as_str()) == outcome));
    store
        .record_response(
            &contact,
            "outcome",
            outcome,
            at,
            expected && in_window(&contact, at),
        )
        .await?;
    stats.responses += 1;
    Ok(Disposition::Processed)
}

/// The contact an event names by key, once it has been sent. An unknown key is dropped
/// (processed, counted unmatched); a contact not yet sent defers the event to a later pass.
async fn sent_contact_for_key(
    store: &Store,
    row: &InboundRow,
    stats: &mut Stats,
) -> Result<Result<ContactRef, Disposition>, TrackingError> {
    let contact = match row.idem_key.as_deref() {
        Some(key) => store.contact_by_key(key).await?,
        None => None,
    };
    let Some(contact) = contact else {
        warn!(inbound = row.id, source = %row.source, key = row.idem_key.as_deref().unwrap_or(""), "Inbound event for an unknown contact key; dropped.");
        stats.unmatched += 1;
        return Ok(Err(Disposition::Processed));
    };
    if contact.state == ContactState::Pending.as_str() {
        debug!(inbound = row.id, source = %row.source, contact = contact.id, "Event for a contact not yet sent; deferred.");
        return Ok(Err(Disposition::Deferred));
    }
    Ok(Ok(contact))
}

async fn subscriber_for(
    store: &Store,
    row: &InboundRow,
    stats: &mut Stats,
) -> Result<Option<i64>, TrackingError> {
    let subscriber = match row.msisdn.as_deref() {
        Some(msisdn) => store.subscriber_by_msisdn(msisdn).await?,
        None => None,
    };
    if subscriber.is_none() {
        debug!(inbound = row.id, source = %row.source, msisdn = %mask(row.msisdn.as_deref().unwrap_or("")), "Inbound event from an unknown number.");
        stats.unmatched += 1;
    }
    Ok(subscriber)
}

async fn rules_of<R: Rules>(
    rules: &R,
    contact: &ContactRef,
) -> Result<Vec<ResponseRule>, TrackingError> {
    Ok(rules
        .rules(contact.run_id, &contact.wave)
        .await?
        .unwrap_or_else(|| {
            warn!(run_id = contact.run_id, wave = %contact.wave, "No response rules known for this wave; its responses do not count.");
            Vec::new()
        }))
}

/// Judged by arrival, so a reply that arrived in the window counts even when processed late.
fn in_window(contact: &ContactRef, at: Millis) -> bool {
    contact.closes_at.is_some_and(|end| at <= end)
}

/// The first word of a reply, lowercased, as workflow reply keywords are written. Trailing
/// or leading punctuation ("STOP.", "1！") is dropped, so a subscriber's punctuation does not
/// defeat an opt-out; a word that is only punctuation ("*", "?") is kept as is.
fn first_word(text: &str) -> String {
    let word = text.split_whitespace().next().unwrap_or("");
    let trimmed =
        word.trim_matches(|c: char| c.is_ascii_punctuation() || "。，、！？；：…".contains(c));
    let word = if trimmed.is_empty() { word } else { trimmed };
    word.to_lowercase()
}

/// Phone numbers never appear in logs in full (`13800138000` → `138****8000`): the one mask.
use domain::mask;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_word_is_lowercased_and_stripped_of_punctuation() {
        assert_eq!(first_word("YES please"), "yes");
        assert_eq!(first_word("  Stop now"), "stop");
        assert_eq!(first_word("STOP."), "stop");
        assert_eq!(first_word("1！"), "1");
        assert_eq!(first_word("退订"), "退订");
        assert_eq!(first_word("*"), "*");
        assert_eq!(first_word(""), "");
        assert_eq!(first_word("TD\u{3000}谢谢"), "td");
    }

    #[test]
    fn msisdn_is_masked() {
        assert_eq!(mask("13800138000"), "138****8000");
        assert_eq!(mask("+8613800138000"), "+86****8000");
        assert_eq!(mask("10086"), "****");
        assert_eq!(mask(""), "****");
    }

    #[test]
    fn window_is_judged_by_arrival() {
        let c = ContactRef {
            id: 1,
            run_id: 1,
            wave_run_id: 1,
            subscriber_id: 1,
            arm: TREATMENT.into(),
            state: ContactState::Sent.as_str().into(),
            channel: SMS.into(),
            wave: "w".into(),
            wave_state: "closed".into(),
            planned_at: Some(100),
            closes_at: Some(200),
            responded_at: None,
        };
        assert!(in_window(&c, 200));
        assert!(!in_window(&c, 201));
        assert!(!in_window(
            &ContactRef {
                closes_at: None,
                ..c
            },
            150
        ));
    }
}
