//! Evaluation of a finished run: per-wave funnel and outcomes, and the goal compared between
//! treatment and control, overall and per stratum.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use evaluate::{Arm, Cell, ReachRow, Report, VariantRow, WaveCounts, uplift};
use spec::{Goal, Workflow};
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

/// Who of a run's members reached its goal, as of `now`.
pub(crate) struct GoalOutcome {
    /// The goal as the report names it.
    pub goal: String,
    /// Members (either arm) who converted, or for a retention goal who are retained (so far).
    pub reached: HashSet<i64>,
    pub retention: bool,
    /// For a retention goal whose window had not ended at `now`: when it ends (ms).
    pub provisional_until: Option<i64>,
}

/// The goal's outcome for the members of `run` (the contacts of its first wave run, treated
/// and control). A conversion is a goal response attributed to the member within the run.
/// Retention is anchored at the run's start for every member, treated and control alike
/// (the first wave is planned then, so both arms are drawn at the anchor): a member is lost
/// with a `lost_on` event in `(start, start + within]`, and retained otherwise; while that
/// window is still running, retained means retained so far.
pub(crate) async fn goal_outcome(
    store: &Store,
    wf: &Workflow,
    run: &RunRow,
    first_wave_run: Option<i64>,
    now: i64,
) -> Result<GoalOutcome, EngineError> {
    Ok(match &wf.evaluate.goal {
        Some(Goal::Converted(g)) => GoalOutcome {
            goal: g.to_string(),
            reached: store
                .converted(run.id, &g.kind, g.value.as_deref())
                .await?
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
            retention: false,
            provisional_until: None,
        },
        Some(goal @ Goal::Retained { within, lost_on }) => {
            let end = run
                .started_at
                .saturating_add(spec::duration_millis(*within));
            let (reached, lost) = match first_wave_run {
                Some(w) => (
                    store.run_population(w).await?,
                    store.lost_members(w, lost_on, run.started_at, end).await?,
                ),
                None => (Vec::new(), HashSet::new()),
            };
            GoalOutcome {
                goal: goal.to_string(),
                reached: reached
                    .into_iter()
                    .map(|(s, _, _)| s)
                    .filter(|s| !lost.contains(s))
                    .collect(),
                retention: true,
                provisional_until: (now < end).then_some(end),
            }
        }
        None => GoalOutcome {
            goal: "any response".to_owned(),
            reached: HashSet::new(),
            retention: false,
            provisional_until: None,
        },
    })
}

/// How often a provisional report is built again while its retention window runs.
const PROVISIONAL_REBUILD_MS: i64 = 86_400_000;

/// Builds the evaluation report of a run from the store, as of `now`. A finished run's report
/// keeps the run's finish time; `now` decides only whether a retention goal is provisional.
pub async fn build_report(
    store: &Store,
    wf: &Workflow,
    run: &RunRow,
    now: i64,
    simulated: bool,
) -> Result<Report, EngineError> {
    Ok(build_report_due(store, wf, run, now, simulated).await?.0)
}

/// [`build_report`] and when the report is due to be built again: daily while a retention
/// goal's window is still running, and at its end, which makes it final; `None` when final.
pub(crate) async fn build_report_due(
    store: &Store,
    wf: &Workflow,
    run: &RunRow,
    now: i64,
    simulated: bool,
) -> Result<(Report, Option<i64>), EngineError> {
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
                    || r.starts_with("gate:")
                    || r == "opt_out"
                    || r == "frequency_cap"
                    || r == audience::NO_PREFERRED_CHANNEL
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
    let outcome = goal_outcome(store, wf, run, waves.first().map(|w| w.id), now).await?;
    let (goal_text, converted) = (outcome.goal, outcome.reached);
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
    // Each variant against the run's one control: its contacts, in the file's order of
    // variants, so the report reads as the workflow does.
    let mut variants = Vec::new();
    for w in &waves {
        let Some(spec_wave) = wf.wave(&w.wave).filter(|sw| !sw.variants.is_empty()) else {
            continue;
        };
        let mut arms: Vec<(Arm, u64)> =
            vec![(Arm { n: 0, converted: 0 }, 0); spec_wave.variants.len()];
        for (sub, name, responded) in store.variant_contacts(w.id).await? {
            let Some(i) = spec_wave.variants.iter().position(|v| v.name == name) else {
                continue;
            };
            let (arm, resp) = &mut arms[i];
            arm.n += 1;
            arm.converted += u64::from(converted.contains(&sub));
            *resp += u64::from(responded);
        }
        for (v, (t, responded)) in spec_wave.variants.iter().zip(arms) {
            variants.push(VariantRow {
                wave: w.wave.clone(),
                variant: v.name.clone(),
                responded,
                outcome: cell(v.name.clone(), (t, overall.1)),
            });
        }
    }
    // Reach per channel and choice: what `channel: preferred` is for.
    let mut reach = Vec::new();
    for w in waves.iter().filter(|w| w.channel == spec::PREFERRED) {
        for r in store.choice_reach(w.id).await? {
            reach.push(ReachRow {
                wave: w.wave.clone(),
                channel: r.channel.as_str().to_owned(),
                choice: r.choice.as_str().to_owned(),
                contacts: r.targeted,
                reached: r.reached,
                responded: r.responded,
            });
        }
    }
    let survey = match &wf.survey {
        Some(s) => Some(survey_scores(store, wf, s, run).await?),
        None => None,
    };
    let due = outcome
        .provisional_until
        .map(|end| end.min(now.saturating_add(PROVISIONAL_REBUILD_MS)));
    let report = Report {
        campaign: run.campaign.clone(),
        run_id: run.id,
        version: wf.short_hash().to_owned(),
        goal: goal_text,
        started_at: rfc3339(run.started_at),
        finished_at: rfc3339(run.finished_at.unwrap_or(now)),
        waves: wave_counts,
        overall: cell("all".to_owned(), overall),
        breakdown,
        cells: cells.into_iter().map(|(k, v)| cell(k, v)).collect(),
        retention: outcome.retention,
        provisional_until: outcome.provisional_until.map(rfc3339),
        survey,
        variants,
        reach,
        simulated,
    };
    Ok((report, due))
}

/// The survey's scores in `run` per group, over every wave that can collect an answer, with
/// group values as of the run's start (as the breakdown reads them).
async fn survey_scores(
    store: &Store,
    wf: &Workflow,
    survey: &spec::Survey,
    run: &RunRow,
) -> Result<evaluate::SurveyScores, EngineError> {
    let answers = survey.scored_answers();
    let waves = wf.survey_waves();
    let groups = store
        .survey_scores(
            &wf.catalogue,
            store::survey::SurveyQuery {
                run_id: run.id,
                waves: &waves,
                answers: &answers,
            },
            &survey.group_by,
            run.started_at,
        )
        .await?;
    Ok(evaluate::SurveyScores {
        group_by: survey.group_by.clone(),
        groups: groups
            .into_iter()
            .map(|g| {
                evaluate::SurveyGroup::new(
                    g.group.unwrap_or_else(|| "unknown".to_owned()),
                    g.respondents,
                    g.score_sum,
                )
            })
            .collect(),
    })
}

/// A campaign's finished runs rolled up by season (`campaignd report CAMPAIGN --by-season`).
///
/// The season of a run is `Workflow::holdout_period(Hold::Season, ..)` of the version it ran
/// when that version has a `schedule.season` or `windows`, else the calendar year (`Hold::Year`). Every
/// run is judged on the goal of the campaign's newest finished run, so a season's rates mean
/// one thing. A subscriber is one member per season: in the arm of their first run of the
/// season; a conversion in any of the season's runs counts, while retention is judged from
/// that first run's start (a member held in control across the season's runs, `control.hold:
/// season`, is one control member).
pub async fn season_report(
    store: &Store,
    campaign: &str,
    now: i64,
) -> Result<evaluate::SeasonReport, EngineError> {
    let runs: Vec<RunRow> = store
        .runs_of(campaign)
        .await?
        .into_iter()
        .filter(|r| r.finished_at.is_some())
        .collect();
    // Versions compiled from the bundles they were checked with.
    let catalog = crate::catalog::Catalog::default();
    let mut versions: HashMap<i64, std::sync::Arc<Workflow>> = HashMap::new();
    for r in &runs {
        // The catalog compiles each version once; the map only gives by-id access below.
        versions.insert(r.version_id, catalog.version(store, r.version_id).await?);
    }
    let Some(goal_wf) = runs.last().and_then(|r| versions.get(&r.version_id)) else {
        return Ok(evaluate::SeasonReport {
            campaign: campaign.to_owned(),
            goal: String::new(),
            retention: false,
            seasons: Vec::new(),
        });
    };
    struct Pool {
        runs: Vec<i64>,
        /// Member → (in control, reached the goal).
        members: HashMap<i64, (bool, bool)>,
        provisional_until: Option<i64>,
    }
    let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
    let mut goal_text = String::new();
    let mut retention = false;
    // Oldest first (by start, then id), so a member's first run of a season decides.
    let mut ordered: Vec<&RunRow> = runs.iter().collect();
    ordered.sort_by_key(|r| (r.started_at, r.id));
    for run in ordered {
        let wf = &versions[&run.version_id];
        let hold = if wf.schedule.as_ref().is_some_and(|s| s.season.is_some()) {
            spec::Hold::Season
        } else {
            spec::Hold::Year
        };
        let label = wf.holdout_period(hold, run.started_at, run.id);
        let first_wave = store.wave_runs(run.id).await?.first().map(|w| w.id);
        let outcome = goal_outcome(store, goal_wf, run, first_wave, now).await?;
        goal_text = outcome.goal;
        retention = outcome.retention;
        let population = match first_wave {
            Some(w) => store.run_population(w).await?,
            None => Vec::new(),
        };
        let pool = pools.entry(label).or_insert_with(|| Pool {
            runs: Vec::new(),
            members: HashMap::new(),
            provisional_until: None,
        });
        pool.runs.push(run.id);
        pool.provisional_until = pool.provisional_until.max(outcome.provisional_until);
        for (sub, arm, _) in population {
            let reached = outcome.reached.contains(&sub);
            let control = arm == ContactArm::Control.as_str();
            pool.members
                .entry(sub)
                .and_modify(|m| {
                    if !outcome.retention {
                        m.1 |= reached;
                    }
                })
                .or_insert((control, reached));
        }
    }
    let seasons = pools
        .into_iter()
        .map(|(label, pool)| {
            let mut t = Arm { n: 0, converted: 0 };
            let mut c = Arm { n: 0, converted: 0 };
            for (control, reached) in pool.members.values() {
                let arm = if *control { &mut c } else { &mut t };
                arm.n += 1;
                arm.converted += u64::from(*reached);
            }
            evaluate::Season {
                overall: Cell {
                    label: label.clone(),
                    treatment: t,
                    control: c,
                    uplift: uplift(t, c, CONFIDENCE),
                },
                season: label,
                runs: pool.runs,
                provisional_until: pool.provisional_until.map(rfc3339),
            }
        })
        .collect();
    Ok(evaluate::SeasonReport {
        campaign: campaign.to_owned(),
        goal: goal_text,
        retention,
        seasons,
    })
}
