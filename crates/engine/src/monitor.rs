//! Churn-warning monitors: one evaluation of one monitor slot.
//!
//! The base is read first, without a transaction (who in the population raises which
//! signal, computed in SQL through the same filter compiler campaigns use); then the slot is
//! claimed and what changed is written in one transaction ([`store::alerts::MonitorTx`]):
//! Alertmanager's shape, an alert per *episode*, not per day. A subscriber whose score
//! reaches a level opens an episode, assigned once to the staff who own them; a higher
//! level escalates it (and its owner is told again), a lower one is recorded quietly; a
//! closing event (churn, port-out) or a score below every level closes it. Owners get one
//! digest mail per digest interval with their new and escalated alerts: the mail row and
//! the episodes it reports are written together, so nobody is told twice or never.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use audience::filter_sql::to_condition;
use spec::monitor::{Assign, Monitor, StaffDirectory};
use store::alerts::{CloseReason, EvalCounts, NewEpisode, PendingAlert};
use store::mail::{MailKind, NewMail};
use store::{Millis, Store};

use crate::EngineError;
use crate::digest::{LISTED, PAGE_END, addressee, esc, masked_number, page_start};

/// How long after a closing event (churn, port-out) a subscriber is not alerted again: their
/// history still shows the signals that preceded it.
const AFTER_CHURN_MS: Millis = 365 * 86_400_000;

/// The digest mail's dedup key: one per owner per interval of `every_ms`
/// (`digest:monitor:<id>:<owner>:<interval>`).
pub fn digest_key(monitor: &str, owner: &str, now: Millis, every_ms: Millis) -> String {
    store::mail::digest_dedup_key(&format!("monitor:{monitor}"), owner, now, every_ms)
}

/// A watched subscriber's state at this evaluation.
struct Reading {
    score: u32,
    level: Option<usize>,
    signals: Vec<usize>,
    row: usize,
}

/// Evaluates `m` for `slot_at`; `None` when another worker evaluated that slot already.
pub async fn evaluate(
    store: &Store,
    m: &Monitor,
    staff: &StaffDirectory,
    slot_at: Millis,
    now: Millis,
) -> Result<Option<EvalCounts>, EngineError> {
    let fields = store.monitor_fields(&m.catalogue, now).await?;
    let population = to_condition(&m.population, &fields);
    let signals = m
        .signals
        .iter()
        .map(|s| to_condition(&s.when, &fields))
        .collect();
    // Assignment is decided in the same read: each `when` is one more flag, each `by` field
    // one text column.
    let mut flags = Vec::new();
    let mut texts = Vec::new();
    for a in &m.assign {
        match a {
            Assign::When { when, .. } => flags.push(to_condition(when, &fields)),
            Assign::By { field } => texts.push(fields.field(field)),
            Assign::To(_) => {}
        }
    }
    let rows = store
        .monitor_scan(population, signals, flags, texts)
        .await?;

    let Some(tx) = store.begin_monitor_eval(&m.id, slot_at, now).await? else {
        return Ok(None);
    };
    let n_signals = m.signals.len();
    let mut readings: HashMap<i64, Reading> = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let raised: Vec<usize> = (0..n_signals).filter(|&s| r.flags[s]).collect();
        let score: u32 = raised.iter().map(|&s| m.signals[s].weight).sum();
        readings.insert(
            r.subscriber_id,
            Reading {
                score,
                level: m.level_of(score),
                signals: raised,
                row: i,
            },
        );
    }
    let names = |r: &Reading| {
        r.signals
            .iter()
            .map(|&s| m.signals[s].name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut counts = EvalCounts {
        watched: rows.len() as u64,
        ..EvalCounts::default()
    };

    let churned = tx.churned(&m.closes_on).await?;
    let open = tx.open_episodes().await?;
    let mut has_open = HashSet::with_capacity(open.len());
    for e in &open {
        has_open.insert(e.subscriber_id);
        let reading = readings.get(&e.subscriber_id);
        match reading.and_then(|r| r.level.map(|l| (r, l))) {
            _ if churned.contains(&e.subscriber_id) => {
                tx.close(e.id, CloseReason::Churned).await?;
                counts.closed += 1;
            }
            None => {
                tx.close(e.id, CloseReason::Recovered).await?;
                counts.closed += 1;
            }
            Some((r, level)) => {
                let rank = level as i32;
                if rank != e.level_rank {
                    tx.relevel(e.id, &m.levels[level].name, rank, r.score as i32, &names(r))
                        .await?;
                    if rank > e.level_rank {
                        counts.escalated += 1;
                    }
                } else if r.score as i32 != e.score {
                    tx.rescore(e.id, r.score as i32, &names(r)).await?;
                }
            }
        }
    }

    let recently_gone = tx
        .closing_events_since(&m.closes_on, now.saturating_sub(AFTER_CHURN_MS))
        .await?;
    let mut new: Vec<(&i64, &Reading)> = readings
        .iter()
        .filter(|(id, r)| {
            r.level.is_some() && !has_open.contains(id) && !recently_gone.contains(id)
        })
        .collect();
    new.sort_by_key(|(id, _)| **id);
    let episodes: Vec<NewEpisode<'_>> = new
        .into_iter()
        .filter_map(|(id, r)| {
            r.level.map(|level| NewEpisode {
                subscriber_id: *id,
                level: &m.levels[level].name,
                level_rank: level as i32,
                score: r.score as i32,
                signals: names(r),
                owner: assign(m, staff, &rows[r.row]),
            })
        })
        .collect();
    counts.opened = tx.open(&episodes).await?;

    let every = spec::duration_millis(m.digest_every);
    let mut pending: Vec<(String, Vec<PendingAlert>)> = tx.pending().await?.into_iter().collect();
    pending.sort_by(|a, b| a.0.cmp(&b.0));
    for (owner, alerts) in pending {
        // An owner dropped from the staff file since the episode opened: their alerts go to
        // whoever takes everyone left, rather than nowhere.
        let person = staff.get(&owner).or_else(|| match m.assign.last() {
            Some(Assign::To(id)) => staff.get(id),
            _ => None,
        });
        let Some(person) = person else { continue };
        let mail = digest_mail(m, person, &alerts, now, every);
        tx.digest(&mail, &owner).await?;
    }
    tx.commit(counts).await?;
    Ok(Some(counts))
}

/// The staff id the first matching rule gives: `flags` after the signals are the `when`
/// rules' in order, `texts` the `by` rules'.
fn assign<'m>(m: &'m Monitor, staff: &'m StaffDirectory, row: &store::alerts::ScanRow) -> &'m str {
    let mut flag = m.signals.len();
    let mut text = 0;
    for a in &m.assign {
        match a {
            Assign::When { to, .. } => {
                if row.flags[flag] {
                    return to;
                }
                flag += 1;
            }
            Assign::By { field } => {
                if let Some(s) = row.texts[text]
                    .as_deref()
                    .and_then(|v| staff.owner_of(field, v))
                {
                    return &s.id;
                }
                text += 1;
            }
            Assign::To(to) => return to,
        }
    }
    // The checker requires a last `to` rule.
    "unassigned"
}

fn digest_mail(
    m: &Monitor,
    person: &spec::monitor::Staff,
    alerts: &[PendingAlert],
    now: Millis,
    every: Millis,
) -> NewMail {
    let new = alerts.iter().filter(|a| a.notified_rank < 0).count();
    let escalated = alerts.len() - new;
    let who = addressee(person);
    let subject = format!(
        "[campaignd] {}: {new} new and {escalated} escalated churn alerts for {who}",
        m.id
    );
    let mut text = String::new();
    let mut html = page_start(&subject);
    let _ = writeln!(text, "{who},\n");
    let _ = writeln!(html, "<p>{},</p>", esc(who));
    if !m.description.is_empty() {
        let _ = writeln!(text, "{} ({}).\n", m.description, m.id);
        let _ = writeln!(html, "<p>{} ({}).</p>", esc(&m.description), esc(&m.id));
    }
    let _ = writeln!(
        text,
        "These subscribers show churn signals. Each alert is on your worklist (GET /alerts); \
         record what you did with POST /alerts/{{id}}/outcome.\n"
    );
    html.push_str(
        "<p>These subscribers show churn signals. Each alert is on your worklist \
         (GET /alerts); record what you did with POST /alerts/{id}/outcome.</p>\n<table>\n\
         <tr><th>alert</th><th>level</th><th>status</th><th>subscriber</th><th>customer</th>\
         <th>score</th><th>signals</th></tr>\n",
    );
    for a in alerts.iter().take(LISTED) {
        let number = masked_number(&a.msisdn);
        let status = if a.notified_rank < 0 {
            "new"
        } else {
            "escalated"
        };
        let _ = writeln!(
            text,
            "alert {}  {}  {}  {number}{}  score {}",
            a.id,
            a.level.to_uppercase(),
            status,
            a.external_id
                .as_deref()
                .map(|c| format!(" (customer {c})"))
                .unwrap_or_default(),
            a.score
        );
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td><td><ul>",
            a.id,
            esc(&a.level.to_uppercase()),
            esc(&number),
            esc(a.external_id.as_deref().unwrap_or("")),
            a.score
        );
        for name in a.signals.split(',').filter(|s| !s.is_empty()) {
            let says = m
                .signals
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.says.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(name);
            let _ = writeln!(text, "    - {says}");
            let _ = write!(html, "<li>{}</li>", esc(says));
        }
        html.push_str("</ul></td></tr>\n");
    }
    html.push_str("</table>\n");
    if alerts.len() > LISTED {
        let _ = writeln!(
            text,
            "\n... and {} more, lower in level or score, on your worklist (GET /alerts).",
            alerts.len() - LISTED
        );
        let _ = writeln!(
            html,
            "<p>&hellip; and {} more, lower in level or score, on your worklist (GET /alerts).</p>",
            alerts.len() - LISTED
        );
    }
    html.push_str(PAGE_END);
    NewMail {
        kind: MailKind::Digest,
        dedup_key: digest_key(&m.id, &person.id, now, every),
        recipients: vec![person.email.clone()],
        subject,
        text,
        html: Some(html),
        due_at: now,
    }
}
