//! A deterministic text picture of campaign state (feature `test-util`), for snapshot tests
//! that step the engine: runs, waves, contacts, the dispatch queue, timers, slots, inbound
//! events and responses.
//!
//! The same state renders the same text on SQLite and PostgreSQL: row ids become ordinals
//! (`run#1`, `v1`), instants become offsets from an origin the test chooses (`+1d02:00:00`),
//! lease tokens become "leased until", and rows are grouped and ordered by what they mean,
//! never by insertion order or id.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use crate::{Millis, Result, Store, query};

/// `at` as an offset from `origin`: `+0s`, `+1h30m00s`, `+2d00:00:00`, `-5m00s`, with
/// milliseconds when there are any.
pub fn offset(at: Millis, origin: Millis) -> String {
    let d = at - origin;
    let (sign, d) = if d < 0 { ('-', -d) } else { ('+', d) };
    let (ms, s) = (d % 1000, d / 1000);
    let (days, h, m, s) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    out.push(sign);
    if days > 0 {
        let _ = write!(out, "{days}d{h:02}:{m:02}:{s:02}");
    } else if h > 0 {
        let _ = write!(out, "{h}h{m:02}m{s:02}s");
    } else if m > 0 {
        let _ = write!(out, "{m}m{s:02}s");
    } else {
        let _ = write!(out, "{s}s");
    }
    if ms > 0 {
        let _ = write!(out, ".{ms:03}");
    }
    out
}

fn opt_offset(at: Option<Millis>, origin: Millis) -> String {
    at.map_or_else(|| "-".to_owned(), |t| offset(t, origin))
}

/// Renders every campaign's state; instants relative to `origin`.
pub async fn render(store: &Store, origin: Millis) -> Result<String> {
    let db = store.db();
    let mut out = String::new();

    // Versions: ordinal per campaign, by load order (id order is load order on both).
    let mut version_name: HashMap<i64, String> = HashMap::new();
    let mut per_campaign: BTreeMap<String, u32> = BTreeMap::new();
    for r in query(
        db,
        "SELECT id, campaign FROM workflow_version ORDER BY id",
        [],
    )
    .await?
    {
        let id: i64 = r.try_get("", "id")?;
        let campaign: String = r.try_get("", "campaign")?;
        let n = per_campaign.entry(campaign).or_insert(0);
        *n += 1;
        version_name.insert(id, format!("v{n}"));
    }

    let runs = query(
        db,
        "SELECT id, campaign, version_id, slot_id, trigger, state, started_at, finished_at \
         FROM run ORDER BY started_at, id",
        [],
    )
    .await?;
    let mut run_name: HashMap<i64, String> = HashMap::new();
    for (i, r) in runs.iter().enumerate() {
        run_name.insert(r.try_get("", "id")?, format!("run#{}", i + 1));
    }
    let mut wave_name: HashMap<i64, String> = HashMap::new();
    for r in query(db, "SELECT id, run_id, wave FROM wave_run", []).await? {
        let run: i64 = r.try_get("", "run_id")?;
        let wave: String = r.try_get("", "wave")?;
        wave_name.insert(
            r.try_get("", "id")?,
            format!("{}/{wave}", run_name.get(&run).map_or("run#?", |s| s)),
        );
    }

    out.push_str("runs:\n");
    for r in &runs {
        let id: i64 = r.try_get("", "id")?;
        let version: i64 = r.try_get("", "version_id")?;
        let slot: Option<i64> = r.try_get("", "slot_id")?;
        let _ = writeln!(
            out,
            "  {} {} {} trigger={} state={} slot={} started={} finished={}",
            run_name[&id],
            r.try_get::<String>("", "campaign")?,
            version_name.get(&version).map_or("v?", |s| s),
            r.try_get::<String>("", "trigger")?,
            r.try_get::<String>("", "state")?,
            if slot.is_some() { "yes" } else { "no" },
            offset(r.try_get("", "started_at")?, origin),
            opt_offset(r.try_get("", "finished_at")?, origin),
        );
        for w in query(
            db,
            "SELECT id, wave, channel, state, planned_at, closes_at FROM wave_run \
             WHERE run_id = ? ORDER BY ordinal",
            [id.into()],
        )
        .await?
        {
            let wid: i64 = w.try_get("", "id")?;
            let _ = writeln!(
                out,
                "    wave {} ({}) state={} planned={} closes={}",
                w.try_get::<String>("", "wave")?,
                w.try_get::<String>("", "channel")?,
                w.try_get::<String>("", "state")?,
                opt_offset(w.try_get("", "planned_at")?, origin),
                opt_offset(w.try_get("", "closes_at")?, origin),
            );
            for f in query(
                db,
                "SELECT reason, count FROM funnel WHERE wave_run_id = ? ORDER BY id",
                [wid.into()],
            )
            .await?
            {
                let _ = writeln!(
                    out,
                    "      funnel {} {}",
                    f.try_get::<String>("", "reason")?,
                    f.try_get::<i64>("", "count")?
                );
            }
            for c in query(
                db,
                "SELECT c.arm, CASE WHEN d.lease_token IS NULL THEN c.state ELSE 'sending' END AS state, \
                 c.attempt, CASE WHEN c.responded_at IS NULL THEN 0 ELSE 1 END AS responded, \
                 c.last_error, COUNT(*) AS n FROM contact c LEFT JOIN dispatch d ON d.contact_id = c.id \
                 WHERE c.wave_run_id = ? GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
                [wid.into()],
            )
            .await?
            {
                let mut line = format!(
                    "      {} {} attempt={}",
                    c.try_get::<String>("", "arm")?,
                    c.try_get::<String>("", "state")?,
                    c.try_get::<i32>("", "attempt")?,
                );
                if c.try_get::<i32>("", "responded")? == 1 {
                    line.push_str(" responded");
                }
                if let Some(e) = c.try_get::<Option<String>>("", "last_error")? {
                    let _ = write!(line, " error={e:?}");
                }
                let _ = writeln!(out, "{line}: {}", c.try_get::<i64>("", "n")?);
            }
        }
    }

    out.push_str("dispatch:\n");
    let mut queue = Vec::new();
    for r in query(
        db,
        "SELECT c.wave_run_id, d.channel, d.attempt, d.due_at, d.send_by, d.lease_until, \
         CASE WHEN d.lease_token IS NULL THEN 0 ELSE 1 END AS leased, COUNT(*) AS n \
         FROM dispatch d JOIN contact c ON c.id = d.contact_id GROUP BY 1, 2, 3, 4, 5, 6, 7",
        [],
    )
    .await?
    {
        let wave: i64 = r.try_get("", "wave_run_id")?;
        let leased = r.try_get::<i32>("", "leased")? == 1;
        let lease_until: Option<i64> = r.try_get("", "lease_until")?;
        queue.push(format!(
            "  {} {} attempt={} due={} send_by={} {}: {}",
            wave_name.get(&wave).map_or("?", |s| s),
            r.try_get::<String>("", "channel")?,
            r.try_get::<i32>("", "attempt")?,
            offset(r.try_get("", "due_at")?, origin),
            opt_offset(r.try_get("", "send_by")?, origin),
            if leased {
                format!("leased until {}", opt_offset(lease_until, origin))
            } else {
                "unleased".to_owned()
            },
            r.try_get::<i64>("", "n")?,
        ));
    }
    queue.sort();
    for q in queue {
        let _ = writeln!(out, "{q}");
    }

    out.push_str("timers:\n");
    let mut timers = Vec::new();
    for r in query(
        db,
        "SELECT kind, wave_run_id, fire_at, state FROM timer",
        [],
    )
    .await?
    {
        let wave: i64 = r.try_get("", "wave_run_id")?;
        timers.push(format!(
            "  {} {} fire={} state={}",
            r.try_get::<String>("", "kind")?,
            wave_name.get(&wave).map_or("?", |s| s),
            offset(r.try_get("", "fire_at")?, origin),
            r.try_get::<String>("", "state")?,
        ));
    }
    timers.sort();
    for t in timers {
        let _ = writeln!(out, "{t}");
    }

    out.push_str("slots:\n");
    for r in query(
        db,
        "SELECT s.campaign, s.version_id, s.slot_at, s.state, s.reason, \
         (SELECT COUNT(*) FROM run r WHERE r.slot_id = s.id) AS runs \
         FROM schedule_slot s ORDER BY s.campaign, s.slot_at",
        [],
    )
    .await?
    {
        let version: i64 = r.try_get("", "version_id")?;
        let _ = writeln!(
            out,
            "  {} {} at={} state={} reason={} runs={}",
            r.try_get::<String>("", "campaign")?,
            version_name.get(&version).map_or("v?", |s| s),
            offset(r.try_get("", "slot_at")?, origin),
            r.try_get::<String>("", "state")?,
            r.try_get::<Option<String>>("", "reason")?
                .as_deref()
                .unwrap_or("-"),
            r.try_get::<i64>("", "runs")?,
        );
    }

    out.push_str("inbound:\n");
    for r in query(
        db,
        "SELECT source, kind, CASE WHEN processed THEN 1 ELSE 0 END AS done, COUNT(*) AS n \
         FROM inbound GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        [],
    )
    .await?
    {
        let _ = writeln!(
            out,
            "  {} {} {}: {}",
            r.try_get::<String>("", "source")?,
            r.try_get::<String>("", "kind")?,
            if r.try_get::<i32>("", "done")? == 1 {
                "processed"
            } else {
                "unprocessed"
            },
            r.try_get::<i64>("", "n")?,
        );
    }

    out.push_str("responses:\n");
    let mut responses = Vec::new();
    for r in query(
        db,
        "SELECT wave_run_id, arm, kind, value, COUNT(*) AS n FROM response GROUP BY 1, 2, 3, 4",
        [],
    )
    .await?
    {
        let wave: i64 = r.try_get("", "wave_run_id")?;
        responses.push(format!(
            "  {} {} {}={}: {}",
            wave_name.get(&wave).map_or("?", |s| s),
            r.try_get::<String>("", "arm")?,
            r.try_get::<String>("", "kind")?,
            r.try_get::<Option<String>>("", "value")?
                .as_deref()
                .unwrap_or("-"),
            r.try_get::<i64>("", "n")?,
        ));
    }
    responses.sort();
    for r in responses {
        let _ = writeln!(out, "{r}");
    }

    out.push_str("tasks:\n");
    for r in query(
        db,
        "SELECT team, kind, state, COUNT(*) AS n FROM agent_task GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        [],
    )
    .await?
    {
        let _ = writeln!(
            out,
            "  {} {} {}: {}",
            r.try_get::<String>("", "team")?,
            r.try_get::<String>("", "kind")?,
            r.try_get::<String>("", "state")?,
            r.try_get::<i64>("", "n")?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::offset;

    #[test]
    fn offsets_read_as_durations() {
        assert_eq!(offset(0, 0), "+0s");
        assert_eq!(offset(90_000, 0), "+1m30s");
        assert_eq!(offset(3_600_000 + 5, 0), "+1h00m00s.005");
        assert_eq!(offset(2 * 86_400_000 + 3_600_000, 0), "+2d01:00:00");
        assert_eq!(offset(0, 300_000), "-5m00s");
    }
}
