//! Evaluation of a finished run: per-wave funnel and outcomes, and the goal compared between
//! treatment and control, overall and per stratum.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use evaluate::{Arm, Cell, Report, WaveCounts, uplift};
use spec::Workflow;
use store::Store;
use store::contacts::{Arm as ContactArm, ContactState};
use store::runs::RunRow;

use crate::EngineError;

const CONFIDENCE: f64 = 0.95;

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Builds the evaluation report of a run from the store.
pub async fn build_report(
    store: &Store,
    wf: &Workflow,
    run: &RunRow,
    now: i64,
    simulated: bool,
) -> Result<Report, EngineError> {
    let waves = store.wave_runs(run.id).await?;
    let mut wave_counts = Vec::with_capacity(waves.len());
    for w in &waves {
        let c = store.wave_counts(w.id).await?;
        let excluded: u64 = c
            .funnel
            .iter()
            .filter(|(r, _)| {
                r.starts_with("exclude:")
                    || r.starts_with("entry:")
                    || r == "opt_out"
                    || r == "frequency_cap"
            })
            .map(|(_, n)| n)
            .sum();
        let eligible = c
            .funnel
            .iter()
            .find(|(r, _)| r == "audience")
            .map(|(_, n)| *n)
            .unwrap_or(0);
        wave_counts.push(WaveCounts {
            wave: w.wave.clone(),
            channel: w.channel.clone(),
            eligible,
            excluded,
            control: c.count(ContactArm::Control, &[ContactState::Held]),
            targeted: c.count(ContactArm::Treatment, &ContactState::TARGETED),
            sent: c.count(ContactArm::Treatment, &ContactState::WENT_OUT),
            delivered: c.count(ContactArm::Treatment, &[ContactState::Delivered]),
            // Refused by the gateway, out of attempts, or reported undeliverable.
            failed: c.count(
                ContactArm::Treatment,
                &[ContactState::Failed, ContactState::Undelivered],
            ),
            expired: c.count(ContactArm::Treatment, &[ContactState::Expired]),
            unknown: c.count(ContactArm::Treatment, &[ContactState::Unknown]),
            responded: c.responded(ContactArm::Treatment),
        });
    }
    let population = match waves.first() {
        Some(w) => store.run_population(w.id).await?,
        None => Vec::new(),
    };
    let (goal_text, converted): (String, HashSet<i64>) = match &wf.evaluate.goal {
        Some(g) => (
            g.to_string(),
            store
                .converted(run.id, &g.kind, g.value.as_deref())
                .await?
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
        ),
        None => ("any response".to_owned(), HashSet::new()),
    };
    // Cells are by the declared breakdown; by default, by the stratum the control split used,
    // which the planner stored with each contact.
    let stratify_by = wf.control.as_ref().and_then(|c| c.stratify_by.clone());
    let breakdown = wf.evaluate.breakdown.clone().or(stratify_by.clone());
    let labels: Option<HashMap<i64, String>> = match &wf.evaluate.breakdown {
        Some(field) if Some(field) != stratify_by.as_ref() => {
            let ids: Vec<i64> = population.iter().map(|(sub, _, _)| *sub).collect();
            // Derived values as they were when the run started, like the planner saw them.
            let values = store
                .derived_values(&wf.catalogue, &ids, &[field.as_str()], run.started_at)
                .await?;
            Some(
                values
                    .into_iter()
                    .map(|(sub, v)| (sub, v.into_iter().next().unwrap_or_default()))
                    .collect(),
            )
        }
        _ => None,
    };
    let mut overall = (Arm { n: 0, converted: 0 }, Arm { n: 0, converted: 0 });
    let mut cells: BTreeMap<String, (Arm, Arm)> = BTreeMap::new();
    for (sub, arm, stratum) in &population {
        let hit = u64::from(converted.contains(sub));
        let label = match &labels {
            Some(l) => l.get(sub).filter(|v| !v.is_empty()).cloned(),
            None => Some(stratum.clone()),
        };
        let cell = cells
            .entry(label.unwrap_or_else(|| "unknown".to_owned()))
            .or_insert((Arm { n: 0, converted: 0 }, Arm { n: 0, converted: 0 }));
        let (o, c) = if arm == ContactArm::Control.as_str() {
            (&mut overall.1, &mut cell.1)
        } else {
            (&mut overall.0, &mut cell.0)
        };
        o.n += 1;
        o.converted += hit;
        c.n += 1;
        c.converted += hit;
    }
    let cell = |label: String, (t, c): (Arm, Arm)| Cell {
        label,
        treatment: t,
        control: c,
        uplift: uplift(t, c, CONFIDENCE),
    };
    Ok(Report {
        campaign: run.campaign.clone(),
        run_id: run.id,
        version: wf.short_hash().to_owned(),
        goal: goal_text,
        started_at: rfc3339(run.started_at),
        finished_at: rfc3339(now),
        waves: wave_counts,
        overall: cell("all".to_owned(), overall),
        breakdown,
        cells: cells.into_iter().map(|(k, v)| cell(k, v)).collect(),
        simulated,
    })
}
