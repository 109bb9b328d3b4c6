//! Planning a wave: from the subscriber base to a decided set of contacts, in one transaction
//! (written as contact rows afterwards, batch by batch: `store::batches`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Utc};
use sea_orm::sea_query::Condition;
use spec::{OncePer, Targets, Trigger, Wave, Workflow};
use store::contacts::{Arm, NewContact, Route, WaveContacts};
use store::planning::{Path, PlanReader, earlier_wave_targets, open_alerts};
use store::triggers;
use store::{Millis, Store};

use crate::control::{GLOBAL_SCOPE, GlobalHoldout, split_holding};
use crate::filter_sql::to_condition;
use crate::policy::{next_allowed, next_in_slot};
use store::derived::FieldSql;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// The funnel stage and decision of a subscriber a preferred wave has no message for, on
/// either of their choices.
pub const NO_PREFERRED_CHANNEL: &str = "no_preferred_channel";

/// A subscriber's route in a `channel: preferred` wave from their preference
/// (the values of `spec::Preference::attributes`: first channel, its slot, second channel,
/// its slot): the first choice when the wave has a message on it, falling back to the second;
/// else the second, with no fallback; `None` when the wave has a message on neither. A
/// slot that is not read or does not parse means any time quiet hours allow.
pub fn preferred_route(wave: &Wave, prefs: &[Option<String>]) -> Option<Route> {
    let at = |i: usize| prefs.get(i).and_then(|v| v.as_deref());
    let choice = |c: usize, s: usize| {
        let channel = at(c)
            .and_then(spec::ChannelKind::parse)
            .filter(|k| wave.may_use(*k))?;
        Some((channel, at(s).and_then(spec::TimeSlot::parse)))
    };
    match (choice(0, 1), choice(2, 3)) {
        (Some((first, slot)), second) => Some(Route::new(first, slot, second)),
        (None, Some((second, slot))) => Some(Route::new(second, slot, None)),
        (None, None) => None,
    }
}

/// Counts by stage, in order: how the base narrowed to the contacts written.
pub type Funnel = Vec<(String, u64)>;

/// What planning one wave needs.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub workflow: &'a Workflow,
    pub wave: &'a Wave,
    pub run_id: i64,
    pub wave_run_id: i64,
    /// The wave run this wave follows (`after`), for later waves.
    pub previous_wave_run_id: Option<i64>,
    pub now: Millis,
    /// The base's global holdout, if the operator keeps one: never in a marketing wave.
    pub global_holdout: Option<&'a GlobalHoldout>,
    /// The other campaigns, for arbitration when the frequency cap binds.
    pub arbitration: Option<&'a Arbitration<'a>>,
}

/// What the frequency cap arbitrates between: a subscriber's contacts in a period go to the
/// higher-priority campaigns planned the same day, whatever order they are planned in.
#[derive(Debug, Clone, Default)]
pub struct Arbitration<'a> {
    /// Marketing campaigns that outrank this one (see [`outranks`]) and plan later today:
    /// each keeps a place in the cap of every subscriber its audience holds.
    pub rivals: Vec<&'a Workflow>,
    /// Every loaded campaign's priority, to name the campaign that used the cap.
    pub priorities: HashMap<String, u8>,
}

/// Whether campaign `a` (priority `pa`) wins a subscriber's last place in the cap from `b`:
/// the higher priority, and at equal priority the campaign id first in byte order, so the
/// order never depends on which was planned first.
pub fn outranks(a: &str, pa: u8, b: &str, pb: u8) -> bool {
    pa > pb || (pa == pb && a < b)
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanSummary {
    /// False when the wave had already been planned (by another replica or an earlier life of
    /// this daemon): nothing was written.
    pub opened: bool,
    pub funnel: Funnel,
    pub treatment: u64,
    pub control: u64,
    pub closes_at: Millis,
    /// The batches the contacts were recorded in; the first is written before
    /// [`plan_wave`] returns, the rest are left to [`Store::write_planned_batches`].
    pub batches: u64,
    /// When the planning transaction committed (the decision durable), for timing.
    pub decided_at: Option<std::time::Instant>,
}

struct Candidate {
    id: i64,
    opt_out: bool,
    timezone: Option<String>,
    stratum: String,
}

/// The plan before it is written.
struct Plan {
    funnel: Funnel,
    /// Control members drawn by this plan, to record in the campaign's holdout for `period`.
    holdout: Option<(String, Vec<i64>)>,
    /// Global holdout members this plan met that were not recorded yet.
    global_drawn: Vec<i64>,
    contacts: Vec<NewContact>,
    decisions: Vec<(i64, Cow<'static, str>)>,
    excluded_by: Vec<(String, Vec<i64>)>,
}

/// The PostgreSQL advisory-lock key planners serialize on (see [`store::planning`]).
pub use store::planning::PLANNER_LOCK;

/// Plans a wave: decides its contacts and writes them as batches, with the funnel,
/// decisions, window and close timer, in ONE transaction. The first statement moves the wave
/// from `pending` to `open`; that takes the write lock up front on SQLite and makes a
/// concurrent planner of the same wave a no-op. After the commit, the first batch is written
/// as contacts with their queue rows; the others are left pending (`store::batches`) for
/// the caller to write with [`Store::write_planned_batches`].
pub async fn plan_wave(store: &Store, input: PlanInput<'_>) -> Result<PlanSummary, PlanError> {
    plan_wave_in_batches(store, input, store::batches::BATCH_CONTACTS).await
}

/// [`plan_wave`] with `per_batch` contacts a batch (the engine's `planned_batch_contacts`).
pub async fn plan_wave_in_batches(
    store: &Store,
    input: PlanInput<'_>,
    per_batch: usize,
) -> Result<PlanSummary, PlanError> {
    let Some(tx) = store.begin_planning(input.wave_run_id).await? else {
        return Ok(PlanSummary {
            opened: false,
            funnel: Vec::new(),
            treatment: 0,
            control: 0,
            closes_at: input.now,
            batches: 0,
            decided_at: None,
        });
    };
    if input.previous_wave_run_id.is_none()
        && let Some(t) = &input.workflow.trigger
    {
        // The funnel's trigger stage reports who entered.
        gather(&tx, &input, t).await?;
    }
    let plan = compute(&tx.reader(), &input).await?;
    let treatment = plan
        .contacts
        .iter()
        .filter(|c| c.arm == Arm::Treatment)
        .count() as u64;
    let control = plan.contacts.len() as u64 - treatment;
    let first_due = plan
        .contacts
        .iter()
        .filter(|c| c.arm == Arm::Treatment)
        .map(|c| c.due_at)
        .min();
    // A wave with nobody to contact closes at once; otherwise its window starts when the
    // first message may go out (after quiet hours), not when it was planned.
    let closes_at = match first_due {
        Some(due) => due.saturating_add(spec::duration_millis(input.wave.respond_within)),
        None => input.now,
    };
    let batches = tx
        .insert_batches_of(
            &WaveContacts {
                run_id: input.run_id,
                wave_run_id: input.wave_run_id,
                wave: &input.wave.id,
                channel: input.wave.channel.as_str(),
                purpose: input.workflow.purpose,
                at_most_once: input.wave.delivery.is_at_most_once(),
            },
            &plan.contacts,
            per_batch,
        )
        .await?;
    let mut decisions: Vec<(i64, &str)> = plan
        .decisions
        .iter()
        .map(|(id, r)| (*id, r.as_ref()))
        .collect();
    for (reason, ids) in &plan.excluded_by {
        decisions.extend(ids.iter().map(|id| (*id, reason.as_str())));
    }
    tx.insert_decisions(input.wave_run_id, &decisions).await?;
    tx.insert_funnel(input.wave_run_id, &plan.funnel).await?;
    if let Some((period, drawn)) = &plan.holdout {
        tx.insert_holdout(
            &input.workflow.campaign,
            period,
            input.run_id,
            input.now,
            drawn,
        )
        .await?;
    }
    if let Some(g) = input
        .global_holdout
        .filter(|_| !plan.global_drawn.is_empty())
    {
        tx.insert_holdout(
            GLOBAL_SCOPE,
            g.salt(),
            input.run_id,
            input.now,
            &plan.global_drawn,
        )
        .await?;
    }
    tx.set_wave_window(input.wave_run_id, input.now, closes_at)
        .await?;
    tx.commit().await?;
    let decided_at = std::time::Instant::now();
    // The decision is durable; the contacts follow, one batch per transaction. The first
    // now, so the dispatcher can start; the rest by the caller (the engine's housekeeping,
    // or any reader that needs them all: see `store::batches`).
    if batches > 0 {
        store.write_planned_batch(Some(input.wave_run_id)).await?;
    }
    if treatment > 0 {
        store.refresh_queue_statistics().await?;
    }
    Ok(PlanSummary {
        opened: true,
        funnel: plan.funnel,
        treatment,
        control,
        closes_at,
        batches,
        decided_at: Some(decided_at),
    })
}

/// The funnel of the first wave as it would be planned now; writes nothing.
pub async fn preview(
    store: &Store,
    workflow: &Workflow,
    global_holdout: Option<&GlobalHoldout>,
    now: Millis,
) -> Result<Funnel, PlanError> {
    let wave = &workflow.waves[0];
    let input = PlanInput {
        workflow,
        wave,
        run_id: 0,
        wave_run_id: 0,
        previous_wave_run_id: None,
        now,
        global_holdout,
        arbitration: None,
    };
    Ok(compute(&store.plan_reader(), &input).await?.funnel)
}

/// Who the audience selects before entry rules and exclusions: segment, filter, alerts.
fn selected(wf: &Workflow, fields: &FieldSql<'_>) -> Condition {
    let mut cond = Condition::all();
    if let Some((_, seg)) = &wf.audience.segment {
        cond = cond.add(to_condition(seg, fields));
    }
    if let Some(f) = &wf.audience.filter {
        cond = cond.add(to_condition(f, fields));
    }
    if let Some(a) = &wf.audience.alerts {
        cond = cond.add(open_alerts(&a.monitor, a.min_rank));
    }
    cond
}

/// Who `trigger` lets in now, before a gather writes them: subscribers of the audience with
/// an unentered event in the window, or matching the condition with no open episode.
fn pending_entrants(wf: &Workflow, t: &Trigger, fields: &FieldSql<'_>, now: Millis) -> Condition {
    match t {
        Trigger::Event { kind, within } => {
            let since = now.saturating_sub(spec::duration_millis(*within));
            selected(wf, fields).add(triggers::pending_event_entrants(
                &wf.campaign,
                kind,
                since,
                now,
            ))
        }
        Trigger::Condition { when, .. } => triggers::pending_condition_entrants(
            &wf.campaign,
            selected(wf, fields).add(to_condition(when, fields)),
        ),
    }
}

/// A triggered campaign's gather for a run, inside its first wave's planning transaction:
/// events become entrants once each; condition episodes close where the condition (within
/// the audience) stopped holding and open where it started.
async fn gather(
    tx: &store::planning::PlanTx,
    input: &PlanInput<'_>,
    t: &Trigger,
) -> Result<triggers::Gathered, PlanError> {
    let wf = input.workflow;
    Ok(match t {
        Trigger::Event { kind, within } => {
            let since = input.now.saturating_sub(spec::duration_millis(*within));
            tx.enter_on_events(&wf.campaign, input.run_id, kind, since, input.now)
                .await?
        }
        Trigger::Condition { when, .. } => {
            let fields = tx.reader().field_sql(&wf.catalogue, input.now).await?;
            let cond = selected(wf, &fields).add(to_condition(when, &fields));
            tx.enter_on_condition(&wf.campaign, input.run_id, cond, input.now)
                .await?
        }
    })
}

/// How many subscribers a triggered campaign's gather would let in now (0 for a campaign
/// without a trigger), after closing the condition episodes that ended. The engine skips a
/// slot with none, rather than start an empty run.
pub async fn pending_trigger_entrants(
    store: &Store,
    wf: &Workflow,
    now: Millis,
) -> Result<u64, PlanError> {
    let Some(t) = &wf.trigger else { return Ok(0) };
    let c = store.plan_reader();
    let fields = c.field_sql(&wf.catalogue, now).await?;
    if let Trigger::Condition { when, .. } = t {
        let cond = selected(wf, &fields).add(to_condition(when, &fields));
        store
            .close_trigger_episodes(&wf.campaign, cond, now)
            .await?;
    }
    Ok(c.count_subscribers(pending_entrants(wf, t, &fields, now))
        .await?)
}

/// The store's form of a wave's action path.
fn path(t: &Targets) -> Path<'_> {
    match t {
        Targets::NoResponse => Path::NoResponse,
        Targets::All => Path::All,
        Targets::DeliveredSilent => Path::DeliveredSilent,
        Targets::Undelivered => Path::Undelivered,
        Targets::Replied(k) => Path::Replied(k),
        Targets::Outcome(o) => Path::Outcome(o),
        Targets::Event(m) => Path::Event {
            kind: &m.kind,
            value: m.value.as_deref(),
        },
    }
}

fn audience_condition(input: &PlanInput<'_>, fields: &FieldSql<'_>) -> Condition {
    let mut cond = Condition::all();
    if input.previous_wave_run_id.is_none() {
        cond = cond.add(selected(input.workflow, fields));
        if let Some(t) = &input.workflow.trigger {
            // A preview (run 0) shows who would enter now; a run plans over its gather.
            cond = cond.add(if input.run_id == 0 {
                pending_entrants(input.workflow, t, fields, input.now)
            } else {
                triggers::run_entrants(input.run_id)
            });
        }
    }
    if let Some(prev) = input.previous_wave_run_id {
        cond = cond.add(earlier_wave_targets(prev, path(&input.wave.targets)));
    }
    if let Some(f) = &input.wave.filter {
        cond = cond.add(to_condition(f, fields));
    }
    cond
}

async fn compute(c: &PlanReader<'_>, input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let wf = input.workflow;
    let first_wave = input.previous_wave_run_id.is_none();
    let mut funnel: Funnel = Vec::new();
    // Derived attributes' windows are fixed once, so every query of this plan agrees.
    let fields = c.field_sql(&wf.catalogue, input.now).await?;

    if let Some(prev) = input.previous_wave_run_id {
        let sub_cond = earlier_wave_targets(prev, path(&input.wave.targets));
        funnel.push((
            input.wave.targets.stage(),
            c.count_subscribers(sub_cond).await?,
        ));
    } else {
        funnel.push(("base".into(), c.count_subscribers(Condition::all()).await?));
        if let Some((name, seg)) = &wf.audience.segment {
            funnel.push((
                format!("segment:{name}"),
                c.count_subscribers(Condition::all().add(to_condition(seg, &fields)))
                    .await?,
            ));
        }
        if let Some(a) = &wf.audience.alerts {
            funnel.push((
                format!("alerts:{}:{}", a.monitor, a.level),
                c.count_subscribers(open_alerts(&a.monitor, a.min_rank))
                    .await?,
            ));
        }
        if let Some(t) = &wf.trigger {
            let entrants = if input.run_id == 0 {
                pending_entrants(wf, t, &fields, input.now)
            } else {
                triggers::run_entrants(input.run_id)
            };
            funnel.push((t.stage(), c.count_subscribers(entrants).await?));
        }
    }

    let cond = audience_condition(input, &fields);
    let stratify = wf.control.as_ref().and_then(|ct| ct.stratify_by.as_deref());
    let candidates: Vec<_> = c
        .candidates(cond.clone(), stratify.map(|f| fields.field(f)))
        .await?
        .into_iter()
        .map(|cand| Candidate {
            id: cand.id,
            opt_out: cand.opt_out,
            timezone: cand.timezone,
            stratum: cand.stratum.unwrap_or_else(|| "unknown".into()),
        })
        .collect();
    funnel.push(("audience".into(), candidates.len() as u64));

    let mut left_out: HashSet<i64> = HashSet::new();
    let mut excluded_by = Vec::new();
    if let (Some(gate), Some(survey)) = (&input.wave.gate, &wf.survey) {
        let shut = gated_out(c, input, gate, survey, cond.clone(), &fields).await?;
        let hit: Vec<i64> = candidates
            .iter()
            .map(|cand| cand.id)
            .filter(|id| shut.contains(id) && left_out.insert(*id))
            .collect();
        funnel.push((spec::IntentGate::REASON.to_owned(), hit.len() as u64));
        excluded_by.push((spec::IntentGate::REASON.to_owned(), hit));
    }
    if first_wave {
        entry_rules(
            c,
            input,
            &candidates,
            &mut left_out,
            &mut excluded_by,
            &mut funnel,
        )
        .await?;
    }
    // Exclusions, in the order written; a subscriber is counted under the first that applies.
    for (name, expr) in &wf.audience.exclude {
        let hit = c
            .subscriber_ids(cond.clone().add(to_condition(expr, &fields)))
            .await?;
        let new: Vec<i64> = hit.into_iter().filter(|id| left_out.insert(*id)).collect();
        funnel.push((format!("exclude:{name}"), new.len() as u64));
        excluded_by.push((format!("exclude:{name}"), new));
    }
    let mut decisions: Vec<(i64, Cow<'static, str>)> = Vec::new();
    let marketing = wf.purpose.is_marketing();
    // Before the opt-out: a held-out subscriber is counted as held out whatever else
    // applies, so the global group's size reads straight from the funnel.
    let mut global_drawn = Vec::new();
    if let Some(g) = input.global_holdout.filter(|_| marketing) {
        let recorded = c.holdout_members(GLOBAL_SCOPE, g.salt()).await?;
        let mut held = 0;
        for cand in &candidates {
            let recorded = recorded.contains(&cand.id);
            if (recorded || g.draws(cand.id)) && !left_out.contains(&cand.id) {
                left_out.insert(cand.id);
                decisions.push((cand.id, "global_holdout".into()));
                held += 1;
                if !recorded {
                    global_drawn.push(cand.id);
                }
            }
        }
        funnel.push(("global_holdout".into(), held));
    }
    let mut opt_outs = 0;
    for cand in &candidates {
        if marketing && !left_out.contains(&cand.id) && cand.opt_out {
            left_out.insert(cand.id);
            decisions.push((cand.id, "opt_out".into()));
            opt_outs += 1;
        }
    }
    if marketing {
        funnel.push(("opt_out".into(), opt_outs));
    }

    // The cap counts treatment contacts already planned or sent, across campaigns, and keeps
    // a place for each higher-priority campaign still to plan today whose audience holds the
    // subscriber: when it binds, the higher priority wins whichever plans first.
    let mut capped = 0;
    let mut arbitrated = 0;
    if let Some(cap) = wf.policy.max_contacts.filter(|_| marketing) {
        let since = input.now.saturating_sub(spec::duration_millis(cap.per));
        let recent = c.recent_contact_campaigns(since).await?;
        let mut reserved: HashMap<i64, Vec<&str>> = HashMap::new();
        let empty = Arbitration::default();
        let arb = input.arbitration.unwrap_or(&empty);
        for rival in &arb.rivals {
            for id in rival_audience(c, rival, input.now).await? {
                reserved.entry(id).or_default().push(&rival.campaign);
            }
        }
        // The campaign among `names` that outranks this one most, if any.
        let winner = |names: &mut dyn Iterator<Item = &str>| -> Option<String> {
            let mut best: Option<(&str, u8)> = None;
            for n in names {
                let Some(&p) = arb.priorities.get(n) else {
                    continue;
                };
                let beats_us = outranks(n, p, &wf.campaign, wf.priority);
                let beats_best = best.is_none_or(|(b, bp)| outranks(n, p, b, bp));
                if beats_us && beats_best {
                    best = Some((n, p));
                }
            }
            best.map(|(n, _)| n.to_owned())
        };
        for cand in &candidates {
            if left_out.contains(&cand.id) {
                continue;
            }
            let used = recent.get(&cand.id).map(Vec::as_slice).unwrap_or(&[]);
            let kept = reserved.get(&cand.id).map(Vec::as_slice).unwrap_or(&[]);
            let used_n = u32::try_from(used.len()).unwrap_or(u32::MAX);
            let kept_n = u32::try_from(kept.len()).unwrap_or(u32::MAX);
            let reason = if used_n >= cap.count {
                Some(winner(&mut used.iter().map(String::as_str)))
            } else if used_n.saturating_add(kept_n) >= cap.count {
                Some(winner(&mut kept.iter().copied()))
            } else {
                None
            };
            match reason {
                None => {}
                Some(Some(w)) => {
                    left_out.insert(cand.id);
                    decisions.push((cand.id, format!("arbitration:{w}").into()));
                    arbitrated += 1;
                }
                Some(None) => {
                    left_out.insert(cand.id);
                    decisions.push((cand.id, "frequency_cap".into()));
                    capped += 1;
                }
            }
        }
        funnel.push(("frequency_cap".into(), capped));
        if arbitrated > 0 {
            funnel.push(("arbitration".into(), arbitrated));
        }
    }

    // A preferred wave reaches each subscriber on a channel it has a message for (first
    // choice, else second); one with neither is left out before the control split, so
    // control and treatment come from the same population.
    let mut routes: HashMap<i64, Route> = HashMap::new();
    if input.wave.channel == spec::WaveChannel::Preferred {
        let ids: Vec<i64> = candidates
            .iter()
            .map(|cand| cand.id)
            .filter(|id| !left_out.contains(id))
            .collect();
        let prefs = c.text_attributes(&ids, &wf.preference.attributes()).await?;
        let mut unreachable = 0;
        for id in ids {
            match prefs.get(&id).and_then(|p| preferred_route(input.wave, p)) {
                Some(route) => {
                    routes.insert(id, route);
                }
                None => {
                    left_out.insert(id);
                    decisions.push((id, NO_PREFERRED_CHANNEL.into()));
                    unreachable += 1;
                }
            }
        }
        funnel.push((NO_PREFERRED_CHANNEL.into(), unreachable));
    }

    let kept: Vec<&Candidate> = candidates
        .iter()
        .filter(|cand| !left_out.contains(&cand.id))
        .collect();
    let by_id: HashMap<i64, &Candidate> = kept.iter().map(|cand| (cand.id, *cand)).collect();
    let mut holdout = None;
    let (treatment, control) = match (&wf.control, first_wave) {
        (Some(ct), true) => {
            let members: Vec<(i64, String)> = kept
                .iter()
                .map(|cand| (cand.id, cand.stratum.clone()))
                .collect();
            let period = wf.holdout_period(ct.hold, input.now, input.run_id);
            let held = c.holdout_members(&wf.campaign, &period).await?;
            let split = split_holding(&members, &held, ct.share, &ct.salt);
            holdout = Some((period, split.drawn));
            (split.treatment, split.control)
        }
        _ => (kept.iter().map(|cand| cand.id).collect(), Vec::new()),
    };
    if first_wave && wf.control.is_some() {
        funnel.push((Arm::Control.as_str().into(), control.len() as u64));
        for id in &control {
            decisions.push((*id, "control_group".into()));
        }
    }
    funnel.push((Arm::Treatment.as_str().into(), treatment.len() as u64));

    let now = DateTime::<Utc>::from_timestamp_millis(input.now).unwrap_or_else(Utc::now);
    let send_within = spec::duration_millis(input.wave.send_within);
    let mut out = Vec::with_capacity(treatment.len() + control.len());
    for id in &treatment {
        let cand = by_id[id];
        let tz = cand
            .timezone
            .as_deref()
            .and_then(|t| t.parse::<chrono_tz::Tz>().ok())
            .unwrap_or(wf.timezone);
        let route = routes.remove(id);
        let quiet = wf.policy.quiet_hours.as_ref();
        let due = match route.as_ref().and_then(|r| r.slot) {
            Some(slot) => next_in_slot(now, slot, quiet, tz),
            None => next_allowed(now, quiet, tz),
        }
        .timestamp_millis();
        out.push(NewContact {
            subscriber_id: *id,
            arm: Arm::Treatment,
            due_at: due,
            send_by: Some(due.saturating_add(send_within)),
            stratum: cand.stratum.clone(),
            variant: crate::control::pick_variant(
                &input.wave.variants,
                input.run_id,
                &input.wave.id,
                *id,
            )
            .map(|v| v.name.clone()),
            route,
        });
    }
    for id in &control {
        let cand = by_id[id];
        out.push(NewContact {
            subscriber_id: *id,
            arm: Arm::Control,
            due_at: input.now,
            send_by: None,
            stratum: cand.stratum.clone(),
            // Every variant is measured against the run's one control.
            variant: None,
            route: None,
        });
    }
    Ok(Plan {
        funnel,
        holdout,
        global_drawn,
        contacts: out,
        decisions,
        excluded_by,
    })
}

/// The subscribers matching `cond` whose group the gate keeps shut: the survey's answers in
/// this run (from the waves the gate reads) give each group its score, and a group passes
/// only with enough respondents and a mean score at its minimum (`IntentGate::passes`, in
/// integers). A group nobody answered for is shut.
async fn gated_out(
    c: &PlanReader<'_>,
    input: &PlanInput<'_>,
    gate: &spec::IntentGate,
    survey: &spec::Survey,
    cond: Condition,
    fields: &FieldSql<'_>,
) -> Result<HashSet<i64>, PlanError> {
    let answers = survey.scored_answers();
    let query = store::survey::SurveyQuery {
        run_id: input.run_id,
        waves: &gate.from_waves,
        answers: &answers,
    };
    let open: HashSet<Option<String>> = c
        .survey_scores(query, fields.field(&survey.group_by))
        .await?
        .into_iter()
        .filter(|g| gate.passes(g.score_sum, g.respondents))
        .map(|g| g.group)
        .collect();
    Ok(c.group_values(cond, fields.field(&survey.group_by))
        .await?
        .into_iter()
        .filter(|(_, group)| !open.contains(group))
        .map(|(id, _)| id)
        .collect())
}

/// Who a rival campaign's first wave would contact: its audience, less the opted-out and its
/// exclusions. Its own cap and control group are not applied, so a place is kept for some
/// subscribers it will not contact after all: the lower priority gives way, never the higher.
async fn rival_audience(
    c: &PlanReader<'_>,
    rival: &Workflow,
    now: Millis,
) -> Result<HashSet<i64>, PlanError> {
    let fields = c.field_sql(&rival.catalogue, now).await?;
    let mut cond = Condition::all().add(sea_orm::sea_query::ExprTrait::eq(
        fields.field("opt_out"),
        false,
    ));
    if let Some((_, seg)) = &rival.audience.segment {
        cond = cond.add(to_condition(seg, &fields));
    }
    if let Some(f) = &rival.audience.filter {
        cond = cond.add(to_condition(f, &fields));
    }
    if let Some(a) = &rival.audience.alerts {
        cond = cond.add(open_alerts(&a.monitor, a.min_rank));
    }
    if let Some(f) = &rival.waves[0].filter {
        cond = cond.add(to_condition(f, &fields));
    }
    let mut ids: HashSet<i64> = c.subscriber_ids(cond.clone()).await?.into_iter().collect();
    for (_, expr) in &rival.audience.exclude {
        for id in c
            .subscriber_ids(cond.clone().add(to_condition(expr, &fields)))
            .await?
        {
            ids.remove(&id);
        }
    }
    Ok(ids)
}

/// The campaign's memory of earlier runs (`entry:`): who reached the goal, who responded,
/// who entered too recently. Each is a funnel stage and a decision reason, counted under the
/// first that applies.
async fn entry_rules(
    c: &PlanReader<'_>,
    input: &PlanInput<'_>,
    candidates: &[Candidate],
    left_out: &mut HashSet<i64>,
    excluded_by: &mut Vec<(String, Vec<i64>)>,
    funnel: &mut Funnel,
) -> Result<(), PlanError> {
    let wf = input.workflow;
    let entry = &wf.entry;
    let campaign = wf.campaign.as_str();
    let mut rules: Vec<(&str, HashSet<i64>)> = Vec::new();
    // A retention goal has no conversion (compile refuses `skip_converted` with one).
    let conversion = wf.evaluate.goal.as_ref().and_then(spec::Goal::conversion);
    if let (true, Some(goal)) = (entry.skip_converted, conversion) {
        let ids = c
            .earlier_converters(campaign, input.run_id, &goal.kind, goal.value.as_deref())
            .await?;
        rules.push(("entry:converted", ids));
    }
    if entry.skip_responded {
        rules.push((
            "entry:responded",
            c.earlier_responders(campaign, input.run_id).await?,
        ));
    }
    if let Some(since) = entry_since(wf, input.now) {
        rules.push((
            "entry:entered",
            c.earlier_entrants(campaign, input.run_id, since).await?,
        ));
    }
    for (reason, ids) in rules {
        let hit: Vec<i64> = candidates
            .iter()
            .map(|cand| cand.id)
            .filter(|id| ids.contains(id) && left_out.insert(*id))
            .collect();
        funnel.push((reason.to_owned(), hit.len() as u64));
        excluded_by.push((reason.to_owned(), hit));
    }
    Ok(())
}

/// The earliest entry that keeps a subscriber out of this run: the start of the current
/// period (`once_per`) or the cool-down, whichever reaches further back.
fn entry_since(wf: &Workflow, now: Millis) -> Option<Millis> {
    let local = DateTime::<Utc>::from_timestamp_millis(now)?.with_timezone(&wf.timezone);
    let start_of = |date: chrono::NaiveDate| {
        date.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(wf.timezone).earliest())
            .map(|t| t.timestamp_millis())
    };
    let period = match wf.entry.once_per {
        OncePer::Run => None,
        OncePer::Campaign => Some(0),
        OncePer::Year => start_of(chrono::NaiveDate::from_ymd_opt(local.year(), 1, 1)?),
        OncePer::Season => {
            let seasons = wf.schedule.as_ref()?.season.as_ref()?;
            start_of(seasons.occurrence(local.date_naive())?.from)
        }
    };
    let cooldown = wf
        .entry
        .cooldown
        .map(|d| now.saturating_sub(spec::duration_millis(d)));
    match (period, cooldown) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
