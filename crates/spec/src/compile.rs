//! Turns a [`Bundle`] into a checked [`Workflow`], collecting every problem with its location.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use catalogue::Catalogue;
use std::time::Duration;

use chrono::NaiveTime;
use croner::parser::{CronParser, Seconds};
use serde_saphyr::Spanned;

use crate::bundle::Bundle;
use crate::catalogue::compile_catalogue;
use crate::diag::{Diagnostic, Sink, from_yaml_error};
use crate::duration::parse_duration;
use crate::expr::{self, Expr};
use crate::fields;
use crate::keys;
use crate::model::{
    self, CatchUpFile, DeliveryFile, OverlapFile, SegmentsFile, TargetsFile, WorkflowFile,
};
use crate::rules;
use crate::template::Template;
use crate::workflow::*;

pub(crate) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

pub(crate) fn schema_value<T: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema is JSON")
}

/// The typed parse. When it fails, the unknown keys are reported with its error (which may be
/// about one of them: an unknown response kind fails both), so one run shows them all.
pub(crate) fn parse_typed<T: serde::de::DeserializeOwned>(
    file: &str,
    source: &str,
    schema: &serde_json::Value,
) -> Result<T, Vec<Diagnostic>> {
    serde_saphyr::from_str_with_options(source, yaml_options()).map_err(|e| {
        let typed = from_yaml_error(file, &e);
        let mut out = keys::unknown_keys(file, source, schema);
        if !out.iter().any(|k| k.line == typed.line) {
            out.push(typed);
            out.sort_by_key(|d| (d.line, d.column));
        }
        out
    })
}

/// Named segments, checked.
#[derive(Debug, Clone, Default)]
pub struct Segments {
    pub by_name: BTreeMap<String, Expr>,
}

/// Parses and checks `segments.yaml`.
pub fn compile_segments(
    file: &str,
    source: &str,
    cat: &Catalogue,
) -> Result<Segments, Vec<Diagnostic>> {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(schema_value::<SegmentsFile>);
    let parsed: SegmentsFile = parse_typed(file, source, schema)?;
    let mut sink = Sink::new(file, source);
    sink.out = keys::unknown_keys(file, source, schema);
    let mut by_name = BTreeMap::new();
    for (name, seg) in parsed.segments {
        if let Some(e) = check_expr(&mut sink, &seg.filter, cat) {
            by_name.insert(name, e);
        }
    }
    if sink.out.is_empty() {
        Ok(Segments { by_name })
    } else {
        Err(sink.out)
    }
}

pub(crate) fn check_expr(
    sink: &mut Sink<'_>,
    s: &Spanned<String>,
    cat: &Catalogue,
) -> Option<Expr> {
    match expr::parse(&s.value) {
        Ok(e) => {
            let errs = expr::check(&e, cat);
            if errs.is_empty() {
                Some(e)
            } else {
                for err in errs {
                    sink.inside(s, err.span.start, err.message);
                }
                None
            }
        }
        Err(err) => {
            sink.inside(s, err.span.start, err.message);
            None
        }
    }
}

/// A duration within the language's bounds ([`rules::MIN_DURATION`] to
/// [`rules::MAX_DURATION`]): the engine adds these to instants, and an unbounded one once
/// overflowed there.
pub(crate) fn duration(sink: &mut Sink<'_>, s: &Spanned<String>) -> Option<Duration> {
    match parse_duration(&s.value) {
        Ok(d) if (rules::MIN_DURATION..=rules::MAX_DURATION).contains(&d) => Some(d),
        Ok(_) => {
            sink.at_spanned(
                s,
                format!(
                    "duration `{}` is out of range: expected 1m to 366d",
                    s.value.trim()
                ),
            );
            None
        }
        Err(msg) => {
            sink.at_spanned(s, msg);
            None
        }
    }
}

/// `control.hold`: `run`, `season` (only with a season to hold for), `year`, or whole days.
fn hold(sink: &mut Sink<'_>, s: &Spanned<String>, has_season: bool) -> Option<Hold> {
    let text = s.value.trim();
    match text {
        "run" => return Some(Hold::Run),
        "year" => return Some(Hold::Year),
        "season" if has_season => return Some(Hold::Season),
        "season" => {
            sink.at_spanned(
                s,
                "cannot hold control for the `season`: the schedule has no season (add \
                 `schedule.season` or `schedule.windows`, or hold for `year`)",
            );
            return None;
        }
        _ => {}
    }
    let expected = format!(
        "invalid hold `{text}`: expected run, season, year or a number of days such as 90d"
    );
    match parse_duration(text) {
        Ok(d) if d.as_secs() % 86_400 == 0 && (1..=3660).contains(&(d.as_secs() / 86_400)) => {
            u32::try_from(d.as_secs() / 86_400).ok().map(Hold::Days)
        }
        Ok(_) => {
            sink.at_spanned(
                s,
                format!("hold `{text}` is out of range: expected whole days, 1d to 3660d"),
            );
            None
        }
        Err(_) => {
            sink.at_spanned(s, expected);
            None
        }
    }
}

/// A wave id or team name: checked because they travel into URLs, task lists and logs.
pub(crate) fn name(sink: &mut Sink<'_>, s: &Spanned<String>, what: &str) -> bool {
    let ok = rules::is_name(&s.value);
    if !ok {
        sink.at_spanned(
            s,
            format!(
                "expected a {what} of 1 to {} lowercase letters, digits, `_` or `-`, found `{}`",
                rules::MAX_NAME_LEN,
                s.value.escape_debug()
            ),
        );
    }
    ok
}

/// A template path that stays inside the workflows folder: relative, no `..`. Symlinks that
/// lead out are caught when the file is read ([`Bundle::read`]).
fn template_path_ok(sink: &mut Sink<'_>, s: &Spanned<String>) -> bool {
    let p = std::path::Path::new(&s.value);
    let escapes = p.is_absolute()
        || s.value.starts_with('/')
        || s.value.starts_with('\\')
        || s.value.contains(':')
        || p.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
    if escapes || s.value.trim().is_empty() {
        sink.at_spanned(
            s,
            format!(
                "template path `{}` must be relative and stay inside the workflow's folder (no `..`, no absolute path)",
                s.value.escape_debug()
            ),
        );
        return false;
    }
    true
}

fn month_day(sink: &mut Sink<'_>, s: &Spanned<String>) -> Option<(u32, u32)> {
    let bad = |sink: &mut Sink<'_>| {
        sink.at_spanned(
            s,
            format!(
                "expected a day of the year as MM-DD, e.g. 08-15, found `{}`",
                s.value
            ),
        );
        None
    };
    let Some((m, d)) = s.value.split_once('-') else {
        return bad(sink);
    };
    let (Ok(m), Ok(d)) = (m.parse::<u32>(), d.parse::<u32>()) else {
        return bad(sink);
    };
    // 2024 is a leap year, so 02-29 is accepted.
    if chrono::NaiveDate::from_ymd_opt(2024, m, d).is_none() {
        return bad(sink);
    }
    Some((m, d))
}

fn quiet_hours(sink: &mut Sink<'_>, s: &Spanned<String>) -> Option<QuietHours> {
    let parse = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").ok();
    match s.value.split_once('-').map(|(a, b)| (parse(a), parse(b))) {
        Some((Some(start), Some(end))) if start != end => Some(QuietHours { start, end }),
        _ => {
            sink.at_spanned(
                s,
                format!(
                    "expected quiet hours as HH:MM-HH:MM, e.g. 21:00-08:00, found `{}`",
                    s.value
                ),
            );
            None
        }
    }
}

/// Compiles a bundle. `calendars` lists the calendar names available (from
/// `workflows/calendars/`); `None` skips that check.
pub fn compile(bundle: &Bundle, calendars: Option<&[String]>) -> Result<Workflow, Vec<Diagnostic>> {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(schema_value::<WorkflowFile>);
    let file = bundle.path.as_str();
    let parsed: WorkflowFile = parse_typed(file, &bundle.workflow, schema)?;
    let mut all = keys::unknown_keys(file, &bundle.workflow, schema);
    let cat = match &bundle.attributes {
        Some(src) => {
            let cat_file = std::path::Path::new(file)
                .with_file_name(crate::catalogue::FILE_NAME)
                .display()
                .to_string();
            match compile_catalogue(&cat_file, src) {
                Ok(c) => Arc::new(c),
                // Nothing can be checked against a catalogue that does not compile.
                Err(d) => {
                    all.extend(d);
                    return Err(all);
                }
            }
        }
        None => crate::catalogue::shipped(),
    };
    let segments = match &bundle.segments {
        Some(src) => {
            let seg_file = std::path::Path::new(file)
                .with_file_name("segments.yaml")
                .display()
                .to_string();
            match compile_segments(&seg_file, src, &cat) {
                Ok(s) => Some(s),
                Err(d) => {
                    all.extend(d);
                    None
                }
            }
        }
        None => None,
    };
    let mut sink = Sink::new(file, &bundle.workflow);
    let wf = check(
        &mut sink,
        &parsed,
        bundle,
        &cat,
        segments.as_ref(),
        calendars,
    );
    all.extend(sink.out);
    match wf {
        Some(wf) if all.is_empty() => Ok(wf),
        _ => Err(all),
    }
}

fn check(
    sink: &mut Sink<'_>,
    f: &WorkflowFile,
    bundle: &Bundle,
    cat: &Arc<Catalogue>,
    segments: Option<&Segments>,
    calendars: Option<&[String]>,
) -> Option<Workflow> {
    let id_ok = !f.campaign.value.is_empty()
        && f.campaign
            .value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !id_ok {
        sink.at_spanned(
            &f.campaign,
            format!(
                "expected a campaign id of lowercase letters, digits and dashes, found `{}`",
                f.campaign.value
            ),
        );
    }
    let timezone = match f.timezone.value.parse::<chrono_tz::Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            sink.at_spanned(
                &f.timezone,
                format!(
                    "unknown time zone `{}`: expected an IANA name such as Asia/Shanghai",
                    f.timezone.value
                ),
            );
            None
        }
    };
    // Default 50: between the campaigns that must win and those that may wait.
    let priority = f.priority.as_ref().map_or(50, |p| p.value);
    if let Some(p) = f.priority.as_ref().filter(|p| p.value > 100) {
        sink.at_spanned(
            p,
            format!("priority {} is out of range: expected 0 to 100", p.value),
        );
    }

    let purpose = match &f.purpose {
        None => Some(domain::Purpose::default()),
        Some(p) => {
            let parsed = domain::Purpose::parse(&p.value);
            if parsed.is_none() {
                sink.at_spanned(
                    p,
                    format!(
                        "unknown purpose `{}`: expected one of {}",
                        p.value,
                        domain::Purpose::ALL.map(domain::Purpose::as_str).join(", ")
                    ),
                );
            }
            parsed
        }
    };

    let schedule = f.schedule.as_ref().and_then(|s| {
        let dir = std::path::Path::new(&bundle.path)
            .parent()
            .unwrap_or(std::path::Path::new(""));
        let periods = PeriodTexts {
            workflow_dir: dir,
            texts: &bundle.periods,
        };
        schedule(sink, s, calendars, &periods)
    });

    // Audience.
    let lookup_segment = |sink: &mut Sink<'_>, name: &Spanned<String>| -> Option<Expr> {
        match segments.and_then(|s| s.by_name.get(&name.value)) {
            Some(e) => Some(e.clone()),
            None => {
                let known: Vec<&str> = segments
                    .map(|s| s.by_name.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let msg = if segments.is_none() {
                    format!(
                        "unknown segment `{}`: no segments.yaml beside this workflow",
                        name.value
                    )
                } else {
                    format!(
                        "unknown segment `{}`: expected one of {}",
                        name.value,
                        known.join(", ")
                    )
                };
                sink.at_spanned(name, msg);
                None
            }
        }
    };
    let segment = f
        .audience
        .segment
        .as_ref()
        .and_then(|s| lookup_segment(sink, s).map(|e| (s.value.clone(), e)));
    let filter = f
        .audience
        .filter
        .as_ref()
        .and_then(|s| check_expr(sink, s, cat));
    let alerts = f
        .audience
        .alerts
        .as_ref()
        .and_then(|a| alert_audience(sink, a, bundle));
    let mut exclude = Vec::new();
    for name in &f.audience.exclude {
        if let Some(e) = lookup_segment(sink, name) {
            exclude.push((name.value.clone(), e));
        }
    }

    let control = f.control.as_ref().and_then(|c| {
        let share = c.share.value;
        let share_ok = share > 0.0 && share <= 0.5;
        if !share_ok {
            sink.at_spanned(
                &c.share,
                format!(
                    "control share {share} is out of range: expected more than 0 and at most 0.5"
                ),
            );
        }
        let stratify_by = match &c.stratify_by {
            Some(s) => match cat.field(&s.value) {
                Some(fd) if fields::field_type(fd) == fields::FieldType::Text => {
                    Some(Some(fd.name.clone()))
                }
                Some(_) => {
                    sink.at_spanned(
                        s,
                        format!(
                            "cannot stratify by `{}`: expected a text field such as value_tier",
                            s.value
                        ),
                    );
                    None
                }
                None => {
                    sink.at_spanned(
                        s,
                        format!(
                            "`{}` is not a subscriber field; expected one of {}",
                            s.value,
                            cat.field_names().join(", ")
                        ),
                    );
                    None
                }
            },
            None => Some(None),
        };
        let has_season = f
            .schedule
            .as_ref()
            .is_some_and(|s| s.season.is_some() || s.windows.is_some());
        let hold = match &c.hold {
            Some(h) => hold(sink, h, has_season),
            None => Some(Hold::Year),
        };
        let stratify_by = stratify_by?;
        let hold = hold?;
        share_ok.then(|| Control {
            share,
            stratify_by,
            salt: c.salt.clone().unwrap_or_else(|| f.campaign.value.clone()),
            hold,
        })
    });
    let control_ok = f.control.is_none() || control.is_some();

    let mut policy = Policy::default();
    let mut policy_ok = true;
    if let Some(q) = &f.policy.quiet_hours {
        policy.quiet_hours = quiet_hours(sink, q);
        policy_ok &= policy.quiet_hours.is_some();
    }
    if let Some(cap) = &f.policy.max_contacts {
        if let Some(p) = purpose.filter(|p| !p.is_marketing()) {
            // Silently ignoring it would let an operator believe subscribers are protected.
            sink.at_spanned(
                &cap.per,
                format!(
                    "max_contacts applies to marketing campaigns only; this campaign's purpose \
                     is {}, whose contacts neither count towards nor are held by the cap",
                    p.as_str()
                ),
            );
            policy_ok = false;
        }
        match duration(sink, &cap.per) {
            Some(per) if cap.count > 0 => {
                policy.max_contacts = Some(Cap {
                    count: cap.count,
                    per,
                })
            }
            Some(_) => {
                sink.at_spanned(&cap.per, "max_contacts.count must be at least 1");
                policy_ok = false;
            }
            None => policy_ok = false,
        }
    }

    let (outcomes, outcomes_ok) = outcomes(sink, f);
    let survey = f.survey.as_ref().map(|s| survey(sink, s, cat, &outcomes));
    let survey_ok = survey.as_ref().is_none_or(Option::is_some);
    let preference = preference(sink, f, cat);
    let waves = waves(sink, f, bundle, cat, &outcomes).and_then(|mut w| {
        let known = survey.as_ref().map(Option::as_ref);
        gates(sink, f, known, &mut w).then_some(w)
    });

    let evaluate = f.evaluate.as_ref().map(|e| {
        let breakdown = e.breakdown.as_ref().and_then(|b| {
            let fd = cat.field(&b.value);
            match fd.map(fields::field_type) {
                None => sink.at_spanned(
                    b,
                    format!(
                        "evaluate.breakdown `{}` is not a subscriber field; expected one of {}",
                        b.value,
                        cat.field_names().join(", ")
                    ),
                ),
                // A cell per distinct value: a continuous field would give one per subscriber.
                Some(fields::FieldType::Number | fields::FieldType::Timestamp) => {
                    sink.at_spanned(
                        b,
                        format!(
                            "cannot break the evaluation down by `{}`: it is a continuous value; \
                             expected a text, enum, bool, integer or date field (declare a derived \
                             attribute that groups it, like value_tier)",
                            b.value
                        ),
                    );
                    return None;
                }
                Some(_) => {}
            }
            fd.map(|fd| fd.name.clone())
        });
        let goal = e.goal.as_ref().map(|g| goal(sink, g));
        let mut email = Vec::new();
        for addr in &e.email {
            match rules::email_problem(&addr.value) {
                None => email.push(addr.value.clone()),
                Some(problem) => sink.at_spanned(
                    addr,
                    format!("`{}` is not an e-mail address: {problem}", addr.value),
                ),
            }
        }
        let ok = goal.as_ref().is_none_or(Option::is_some) && email.len() == e.email.len();
        ok.then(|| Evaluate {
            goal: goal.flatten(),
            breakdown,
            email,
        })
    });
    let evaluate_ok = evaluate.as_ref().is_none_or(Option::is_some);

    // Only a conversion goal says who "converted"; a retention goal has no conversion.
    let has_goal = f
        .evaluate
        .as_ref()
        .and_then(|e| e.goal.as_ref())
        .is_some_and(|g| g.value.retained.is_none());
    let retention_goal = f
        .evaluate
        .as_ref()
        .and_then(|e| e.goal.as_ref())
        .is_some_and(|g| g.value.retained.is_some());
    let has_season = schedule.as_ref().is_some_and(|s| s.season.is_some());
    let entry = f.entry.as_ref().map_or(
        Some(Entry {
            skip_converted: has_goal,
            ..Entry::default()
        }),
        |e| entry(sink, e, has_goal, retention_goal, has_season),
    );

    let mut schedule = schedule;
    let trigger = match &f.trigger {
        Some(t) => trigger(sink, t, f.schedule.as_ref(), schedule.as_mut(), cat),
        None => Some(None),
    };

    let schedule_ok = f.schedule.is_none() || schedule.is_some();
    let audience_ok = f.audience.segment.is_none() || segment.is_some();
    let filter_ok = f.audience.filter.is_none() || filter.is_some();
    if !(id_ok
        && schedule_ok
        && audience_ok
        && filter_ok
        && control_ok
        && policy_ok
        && evaluate_ok
        && entry.is_some()
        && trigger.is_some()
        && outcomes_ok
        && survey_ok
        && preference.is_some())
        || exclude.len() != f.audience.exclude.len()
    {
        return None;
    }
    Some(Workflow {
        campaign: f.campaign.value.clone(),
        description: f.description.clone(),
        owner: f.owner.clone(),
        timezone: timezone?,
        priority,
        purpose: purpose?,
        schedule,
        trigger: trigger.flatten(),
        audience: Audience {
            segment,
            filter,
            exclude,
            alerts,
        },
        entry: entry?,
        control,
        policy,
        waves: waves?,
        outcomes,
        survey: survey.flatten(),
        evaluate: evaluate.flatten().unwrap_or_default(),
        preference: preference?,
        hash: bundle.hash(),
        catalogue: cat.clone(),
        bundle: bundle.clone(),
    })
}

/// Default and bounds of `trigger.within`.
const DEFAULT_TRIGGER_WITHIN: Duration = Duration::from_secs(86_400);
const MAX_TRIGGER_WITHIN: Duration = Duration::from_secs(30 * 86_400);

/// `trigger`: one of `event` (with `within`) or `when`. Gathered at schedule slots, so a
/// schedule is required, and its runs overlap by nature (`parallel`). `Some(None)` never.
fn trigger(
    sink: &mut Sink<'_>,
    spanned: &Spanned<model::TriggerFile>,
    sched_file: Option<&model::ScheduleFile>,
    schedule: Option<&mut Schedule>,
    cat: &Catalogue,
) -> Option<Option<Trigger>> {
    let t = &spanned.value;
    let Some(at) = t.event.as_ref().or(t.when.as_ref()).or(t.within.as_ref()) else {
        sink.at_spanned(
            spanned,
            "`trigger` needs `event: TYPE` or `when: CONDITION`",
        );
        return None;
    };
    let Some(sched_file) = sched_file else {
        sink.at_spanned(
            at,
            "a trigger is gathered at the schedule's slots: add `schedule.cron` (how often, \
             e.g. \"0 */15 * * * *\" for every 15 minutes)",
        );
        return None;
    };
    if let Some(o) = &sched_file.overlap
        && o.value != model::OverlapFile::Parallel
    {
        sink.at_spanned(
            o,
            "a triggered campaign's runs overlap by nature (each slot gathers new entrants \
             while earlier ones are still open): leave `overlap` out or write `parallel`",
        );
        return None;
    }
    let out = match (&t.event, &t.when) {
        (Some(e), None) => {
            if let Some(problem) = rules::event_type_problem(&e.value) {
                sink.at_spanned(e, problem);
                return None;
            }
            let within = match &t.within {
                Some(w) => {
                    let d = duration(sink, w)?;
                    if d > MAX_TRIGGER_WITHIN {
                        sink.at_spanned(w, "`within` is at most 30d");
                        return None;
                    }
                    d
                }
                None => DEFAULT_TRIGGER_WITHIN,
            };
            Trigger::Event {
                kind: e.value.clone(),
                within,
            }
        }
        (None, Some(w)) => {
            if let Some(within) = &t.within {
                sink.at_spanned(within, "`within` goes with `event`, not `when`");
                return None;
            }
            Trigger::Condition {
                when: check_expr(sink, w, cat)?,
                text: w.value.clone(),
            }
        }
        (Some(e), Some(_)) => {
            sink.at_spanned(e, "`trigger` takes `event` or `when`, not both");
            return None;
        }
        (None, None) => {
            sink.at_spanned(at, "`within` without `event`: write `event: TYPE`");
            return None;
        }
    };
    if let Some(s) = schedule {
        s.overlap = Overlap::Parallel;
    }
    Some(Some(out))
}

fn entry(
    sink: &mut Sink<'_>,
    e: &model::EntryFile,
    has_goal: bool,
    retention_goal: bool,
    has_season: bool,
) -> Option<Entry> {
    let mut ok = true;
    let once_per = match &e.once_per {
        None => OncePer::Run,
        Some(o) => match OncePer::ALL.into_iter().find(|p| p.as_str() == o.value) {
            Some(OncePer::Season) if !has_season => {
                sink.at_spanned(
                    o,
                    "entry.once_per: season needs a `schedule.season` or `schedule.windows` to know when a season starts",
                );
                ok = false;
                OncePer::Season
            }
            Some(p) => p,
            None => {
                sink.at_spanned(
                    o,
                    format!(
                        "unknown entry.once_per `{}`: expected one of {}",
                        o.value,
                        OncePer::ALL.map(OncePer::as_str).join(", ")
                    ),
                );
                ok = false;
                OncePer::Run
            }
        },
    };
    let cooldown = match &e.cooldown {
        None => None,
        Some(c) => {
            let d = duration(sink, c);
            ok &= d.is_some();
            d
        }
    };
    let skip_converted = match &e.skip_converted {
        None => has_goal,
        Some(b) if b.value && retention_goal => {
            sink.at_spanned(
                b,
                "entry.skip_converted does not apply to a retention goal (`evaluate.goal.retained`): \
                 nobody converts, and a subscriber who churned is no longer in the base to plan; \
                 remove it or use `cooldown` / `once_per`",
            );
            ok = false;
            false
        }
        Some(b) if b.value && !has_goal => {
            sink.at_spanned(
                b,
                "entry.skip_converted needs `evaluate.goal`: it is what converted means",
            );
            ok = false;
            false
        }
        Some(b) => b.value,
    };
    ok.then_some(Entry {
        once_per,
        cooldown,
        skip_converted,
        skip_responded: e.skip_responded,
    })
}

/// A schedule's named periods: the calendars' `periods.yaml` texts (from the bundle) and the
/// folder they were read from, for locating their problems.
pub(crate) struct PeriodTexts<'a> {
    pub(crate) workflow_dir: &'a std::path::Path,
    pub(crate) texts: &'a BTreeMap<String, String>,
}

pub(crate) fn schedule(
    sink: &mut Sink<'_>,
    s: &model::ScheduleFile,
    calendars: Option<&[String]>,
    periods: &PeriodTexts<'_>,
) -> Option<Schedule> {
    let text = s.cron.value.trim();
    let n_fields = text.split_whitespace().count();
    let cron = if !(5..=6).contains(&n_fields) {
        sink.at_spanned(&s.cron, format!("invalid cron expression `{text}`: expected 5 fields (min hour day month weekday) or 6 (seconds first), found {n_fields}"));
        None
    } else {
        match CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(text)
        {
            Ok(c) => Some(c),
            Err(e) => {
                sink.at_spanned(&s.cron, format!("invalid cron expression `{text}`: {e}"));
                None
            }
        }
    };
    let cron_text = if n_fields == 5 {
        format!("0 {text}")
    } else {
        text.to_owned()
    };
    let season = seasons(sink, s, periods);
    let calendar = match (&s.calendar, calendars) {
        (Some(c), Some(known)) if !known.contains(&c.value) => {
            sink.at_spanned(
                c,
                format!(
                    "unknown calendar `{}`: expected one of {} (folders in workflows/calendars/)",
                    c.value,
                    known.join(", ")
                ),
            );
            None
        }
        (c, _) => Some(c.as_ref().map(|c| c.value.clone())),
    };
    if let (Some(c), Some(Some(se))) = (&cron, &season) {
        // Reported where the windows are written: that is the usual thing to change.
        let place = match (&s.season, &s.windows) {
            (Some(f), _) => Some((
                &f.from.referenced,
                format!("between {} and {}", f.from.value, f.to.value),
            )),
            (None, Some(w)) => Some((&w.referenced, "in any of its windows".to_owned())),
            (None, None) => None,
        };
        if let Some((at, what)) = place {
            firing_problem(sink, &s.cron, c, se, at, &what);
        }
    }
    let catch_up_window = match &s.catch_up_window {
        Some(w) => duration(sink, w),
        None => Some(Duration::from_secs(3600)),
    };
    Some(Schedule {
        cron: cron?,
        cron_text,
        season: season?,
        calendar: calendar?,
        catch_up: match s.catch_up {
            CatchUpFile::Skip => CatchUp::Skip,
            CatchUpFile::Last => CatchUp::Last,
        },
        catch_up_window: catch_up_window?,
        overlap: match s.overlap.as_ref().map_or(OverlapFile::Skip, |o| o.value) {
            OverlapFile::Skip => Overlap::Skip,
            OverlapFile::Queue => Overlap::Queue,
            OverlapFile::Close => Overlap::Close,
            OverlapFile::Parallel => Overlap::Parallel,
        },
    })
}

/// `schedule.season` (one yearly window) or `schedule.windows` (several, of any kind).
/// `Some(None)`: all year; `None`: an error was reported.
fn seasons(
    sink: &mut Sink<'_>,
    s: &model::ScheduleFile,
    periods: &PeriodTexts<'_>,
) -> Option<Option<Seasons>> {
    match (&s.season, &s.windows) {
        (Some(_), Some(w)) => {
            sink.at_spanned(
                w,
                "`season` and `windows` both given: write one window as `season`, several as `windows`",
            );
            None
        }
        (Some(se), None) => {
            let from = month_day(sink, &se.from);
            let to = month_day(sink, &se.to);
            Some(Some(Seasons::yearly(Season {
                from: from?,
                to: to?,
            })))
        }
        (None, Some(ws)) => {
            if ws.value.is_empty() {
                sink.at_spanned(
                    ws,
                    "`windows` is empty: list at least one window, or leave it out to run all year",
                );
                return None;
            }
            let mut compiled = BTreeMap::new();
            let mut out = Vec::new();
            let mut ok = true;
            for w in &ws.value {
                match window(sink, w, periods, &mut compiled) {
                    Some(w) => out.push(w),
                    None => ok = false,
                }
            }
            ok.then(|| Some(Seasons::windows(out)))
        }
        (None, None) => Some(None),
    }
}

/// Longest lead a `before` window may have.
const MAX_BEFORE_DAYS: u32 = 120;

fn window(
    sink: &mut Sink<'_>,
    w: &model::WindowFile,
    periods: &PeriodTexts<'_>,
    compiled: &mut BTreeMap<String, Option<crate::periods::Periods>>,
) -> Option<Window> {
    let expected = "expected one of `{ from: MM-DD, to: MM-DD }`, `{ period: CALENDAR/PERIOD }` or `{ before: CALENDAR/PERIOD, days: N }`";
    match (&w.from, &w.to, &w.period, &w.before, &w.days) {
        (Some(from), Some(to), None, None, None) => {
            let from = month_day(sink, from);
            let to = month_day(sink, to);
            Some(Window::Yearly(Season {
                from: from?,
                to: to?,
            }))
        }
        (None, None, Some(p), None, None) => {
            named_period(sink, p, periods, compiled).map(Window::Dated)
        }
        (None, None, None, Some(p), Some(days)) => {
            if !(1..=MAX_BEFORE_DAYS).contains(&days.value) {
                sink.at_spanned(
                    days,
                    format!(
                        "`days` {} out of range: expected 1 to {MAX_BEFORE_DAYS}",
                        days.value
                    ),
                );
                return None;
            }
            let occ = named_period(sink, p, periods, compiled)?;
            let lead = chrono::Days::new(u64::from(days.value));
            let mut out = Vec::new();
            for o in occ {
                let (Some(from), Some(to)) = (o.from.checked_sub_days(lead), o.from.pred_opt())
                else {
                    continue;
                };
                out.push(Occurrence { from, to });
            }
            Some(Window::Dated(out))
        }
        _ => {
            let at = w
                .from
                .as_ref()
                .or(w.to.as_ref())
                .or(w.period.as_ref())
                .or(w.before.as_ref());
            match (at, &w.days) {
                (Some(at), _) => {
                    sink.at_spanned(at, format!("incomplete or mixed window: {expected}"))
                }
                (None, Some(d)) => {
                    sink.at_spanned(d, format!("`days` without `before`: {expected}"))
                }
                (None, None) => {}
            }
            None
        }
    }
}

/// The occurrences of `CALENDAR/PERIOD`, from the calendar's `periods.yaml` in the bundle.
fn named_period(
    sink: &mut Sink<'_>,
    p: &Spanned<String>,
    periods: &PeriodTexts<'_>,
    compiled: &mut BTreeMap<String, Option<crate::periods::Periods>>,
) -> Option<Vec<Occurrence>> {
    let Some((cal, name)) = p.value.split_once('/') else {
        sink.at_spanned(
            p,
            format!(
                "expected a period as CALENDAR/PERIOD, e.g. campus/winter-vacation, found `{}`",
                p.value.escape_debug()
            ),
        );
        return None;
    };
    let Some(text) = periods.texts.get(cal) else {
        sink.at_spanned(
            p,
            format!(
                "calendar `{}` has no periods: expected a file workflows/calendars/{}/{}",
                cal.escape_debug(),
                cal.escape_debug(),
                crate::periods::PERIODS_FILE
            ),
        );
        return None;
    };
    let checked = compiled.entry(cal.to_owned()).or_insert_with(|| {
        let file = crate::periods::periods_path(periods.workflow_dir, cal)
            .display()
            .to_string();
        match crate::periods::compile_periods(&file, text) {
            Ok(p) => Some(p),
            Err(d) => {
                sink.out.extend(d);
                None
            }
        }
    });
    // A periods file with errors was reported once, above.
    let checked = checked.as_ref()?;
    match checked.by_name.get(name) {
        Some(occ) => Some(occ.clone()),
        None => {
            sink.at_spanned(
                p,
                format!(
                    "unknown period `{}` of calendar `{cal}`: expected one of {}",
                    name.escape_debug(),
                    checked
                        .by_name
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            None
        }
    }
}

/// Reports a schedule that never starts a run: a cron naming a day that does not exist (Feb 30)
/// or windows the cron never fires in. Judged on the naive calendar (UTC), which is where
/// cron fields and seasons live.
fn firing_problem(
    sink: &mut Sink<'_>,
    cron_text: &Spanned<String>,
    cron: &croner::Cron,
    seasons: &Seasons,
    windows_at: &serde_saphyr::Location,
    windows_text: &str,
) {
    use chrono::{Datelike, TimeZone, Utc};
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single();
    let Some(start) = start else { return };
    let horizon = 2024 + rules::CRON_HORIZON_YEARS;
    let never = |t: &Result<chrono::DateTime<Utc>, _>| match t {
        Ok(t) => t.year() >= horizon,
        Err(_) => true,
    };
    let first = cron.find_next_occurrence(&start, true);
    if never(&first) {
        sink.at_spanned(
            cron_text,
            format!(
                "cron `{}` never fires: no time matches it in {} years",
                cron_text.value.trim(),
                rules::CRON_HORIZON_YEARS
            ),
        );
        return;
    }
    // Four years cover every weekday pattern of every yearly window, leap day included;
    // dated periods are tried on every occurrence listed.
    let fires_in = |o: &Occurrence| {
        let (Some(a), Some(b)) = (o.from.and_hms_opt(0, 0, 0), o.to.and_hms_opt(23, 59, 59)) else {
            return false;
        };
        match cron.find_next_occurrence(&Utc.from_utc_datetime(&a), true) {
            Ok(t) => t.naive_utc() <= b,
            Err(_) => false,
        }
    };
    if seasons.occurrences_in(2024, 2027).iter().any(fires_in) {
        return;
    }
    sink.at(
        windows_at,
        format!(
            "cron `{}` never fires {windows_text}: this schedule would never start a run",
            cron_text.value.trim(),
        ),
    );
}

const DEFAULT_SEND_WITHIN: Duration = Duration::from_secs(12 * 3600);

/// `evaluate.goal`: an event (`type`, `value`) or retention (`retained`, `lost_on`), not both.
fn goal(sink: &mut Sink<'_>, g: &Spanned<model::GoalFile>) -> Option<Goal> {
    let f = &g.value;
    match (&f.kind, &f.retained) {
        (Some(kind), None) => {
            if let Some(lost_on) = &f.lost_on {
                sink.at_spanned(
                    lost_on,
                    "evaluate.goal.lost_on goes with `retained`; an event goal (`type`) converts on its event",
                );
                return None;
            }
            event_match(
                sink,
                &model::EventFile {
                    kind: kind.clone(),
                    value: f.value.clone(),
                },
            )
            .map(Goal::Converted)
        }
        (None, Some(within)) => {
            let mut ok = true;
            if f.value.is_some() {
                sink.at_spanned(
                    within,
                    "evaluate.goal.value goes with `type`; a retention goal names no value",
                );
                ok = false;
            }
            let within = duration(sink, within);
            let lost_on = match &f.lost_on {
                None => crate::monitor::DEFAULT_CLOSES_ON
                    .iter()
                    .map(|t| (*t).to_owned())
                    .collect(),
                Some(list) if list.value.is_empty() => {
                    sink.at_spanned(
                        list,
                        format!(
                            "evaluate.goal.lost_on is empty: expected the event types that mean a subscriber was lost (omit it for the default [{}])",
                            crate::monitor::DEFAULT_CLOSES_ON.join(", ")
                        ),
                    );
                    return None;
                }
                Some(list) => {
                    let mut out: Vec<String> = Vec::new();
                    for t in &list.value {
                        if let Some(problem) = rules::event_type_problem(&t.value) {
                            sink.at_spanned(t, problem);
                            ok = false;
                        } else if !out.contains(&t.value) {
                            out.push(t.value.clone());
                        }
                    }
                    out
                }
            };
            let within = within?;
            ok.then_some(Goal::Retained { within, lost_on })
        }
        (Some(kind), Some(_)) => {
            sink.at_spanned(
                kind,
                "evaluate.goal has both `type` and `retained`: expected an event goal ({ type: order, value: ... }) or a retention goal ({ retained: 90d }), not both",
            );
            None
        }
        (None, None) => {
            sink.at_spanned(
                g,
                "evaluate.goal names no goal: expected `type` (an event, e.g. { type: order }) or `retained` (e.g. { retained: 90d })",
            );
            None
        }
    }
}

/// An event a goal or response names, checked against what the events API can deliver.
fn event_match(sink: &mut Sink<'_>, e: &model::EventFile) -> Option<EventMatch> {
    if let Some(problem) = rules::event_type_problem(&e.kind.value) {
        sink.at_spanned(&e.kind, problem);
        return None;
    }
    Some(EventMatch {
        kind: e.kind.value.clone(),
        value: e.value.clone(),
    })
}

/// `after: ID` or `after: ID + DURATION`: the wave followed, and the written delay.
fn after_parts(a: &Spanned<String>) -> (&str, Option<&str>) {
    match a.value.split_once('+') {
        Some((id, delay)) => (id.trim(), Some(delay.trim())),
        None => (a.value.trim(), None),
    }
}

/// A reply keyword as tracking compares it (the reply's first word, lowercase), or an error
/// when no reply could ever match it or it is an opt-out word.
fn reply_keyword(sink: &mut Sink<'_>, k: &Spanned<String>) -> Option<String> {
    let word = k.value.trim().to_lowercase();
    if rules::OPT_OUT_KEYWORDS.contains(&word.as_str()) {
        sink.at_spanned(
            k,
            format!(
                "reply keyword `{}` is an opt-out word ({}): such a reply opts the subscriber out and must not count as a response",
                k.value.trim(),
                rules::OPT_OUT_KEYWORDS.join(", ")
            ),
        );
        None
    } else if word.is_empty() || word.split_whitespace().count() != 1 {
        sink.at_spanned(
            k,
            format!(
                "reply keyword `{}` can never match: a reply matches on its first word, so expected one word or `*`",
                k.value
            ),
        );
        None
    } else {
        Some(word)
    }
}

/// An outcome named by a response rule or an action path: one the workflow declares.
fn declared_outcome(sink: &mut Sink<'_>, o: &Spanned<String>, outcomes: &[String]) -> bool {
    if outcomes.contains(&o.value) {
        return true;
    }
    sink.at_spanned(
        o,
        format!(
            "outcome `{}` can never be recorded: expected one of the workflow's `outcomes`: {}",
            o.value,
            outcomes.join(", ")
        ),
    );
    false
}

/// `outcomes`: what agents may record on this campaign's tasks, and whether the list is
/// sound. Every name listed is returned, sound or not, so waves naming one are not also
/// reported: the list's own error is the one to fix.
fn outcomes(sink: &mut Sink<'_>, f: &WorkflowFile) -> (Vec<String>, bool) {
    let Some(list) = &f.outcomes else {
        return (
            rules::OUTCOMES.iter().map(|o| (*o).to_owned()).collect(),
            true,
        );
    };
    if list.value.is_empty() {
        sink.at_spanned(list, "expected at least one outcome in `outcomes`");
        return (Vec::new(), false);
    }
    let mut out: Vec<String> = Vec::with_capacity(list.value.len());
    let mut ok = true;
    for o in &list.value {
        if let Some(problem) = rules::outcome_problem(&o.value) {
            sink.at_spanned(
                o,
                format!("outcome `{}`: {problem}", o.value.escape_debug()),
            );
            ok = false;
        } else if out.contains(&o.value) {
            sink.at_spanned(o, format!("duplicate outcome `{}`", o.value));
            ok = false;
            continue;
        }
        out.push(o.value.clone());
    }
    (out, ok)
}

/// A wave's action path, checked on its own; [`paths_reachable`] then checks it against the
/// wave it follows.
fn targets(sink: &mut Sink<'_>, t: &TargetsFile, outcomes: &[String]) -> Option<Targets> {
    Some(match t {
        TargetsFile::NoResponse => Targets::NoResponse,
        TargetsFile::All => Targets::All,
        TargetsFile::DeliveredSilent => Targets::DeliveredSilent,
        TargetsFile::Undelivered => Targets::Undelivered,
        TargetsFile::Replied(ks) => {
            let words: Vec<Option<String>> = ks
                .iter()
                .map(|k| {
                    if k.value.trim() == "*" {
                        sink.at_spanned(k, "`*` is not a keyword here: to target everyone who replied, list the keywords the earlier wave accepts, or use `targets: all`");
                        None
                    } else {
                        reply_keyword(sink, k)
                    }
                })
                .collect();
            if ks.is_empty() {
                return None;
            }
            Targets::Replied(words.into_iter().collect::<Option<Vec<_>>>()?)
        }
        TargetsFile::Outcome(os) => {
            let ok = os
                .iter()
                .map(|o| declared_outcome(sink, o, outcomes))
                .fold(true, |a, b| a & b);
            if !ok || os.is_empty() {
                return None;
            }
            Targets::Outcome(os.iter().map(|o| o.value.clone()).collect())
        }
        TargetsFile::Event(e) => Targets::Event(event_match(sink, e)?),
    })
}

/// An action path must wait for something the wave it follows can produce: replies and
/// delivery reports come only to SMS, outcomes only from agents working tasks, and a keyword
/// only when that wave accepts it as a response (a reply it does not accept is not
/// attributed to it).
fn paths_reachable(sink: &mut Sink<'_>, f: &WorkflowFile, compiled: &[Wave]) -> bool {
    let mut ok = true;
    for w in &f.waves.value {
        let (Some(t), Some(after)) = (&w.targets, &w.after) else {
            continue;
        };
        let (after, _) = after_parts(after);
        let Some(prev) = compiled.iter().find(|c| c.id == after) else {
            continue;
        };
        let Some(me) = compiled.iter().find(|c| c.id == w.id.value) else {
            continue;
        };
        let on = prev.channel.as_str();
        // A preferred wave produces what any of its channels can.
        let sms = prev.may_use(ChannelKind::Sms);
        let tasks = prev.channels().into_iter().any(ChannelKind::is_task);
        let problem = match &me.targets {
            Targets::DeliveredSilent | Targets::Undelivered | Targets::Replied(_)
                if !sms && tasks =>
            {
                Some(format!(
                    "wave `{}` waits for what only an SMS can produce, but `{}` is a `{on}` wave: agents record outcomes (`targets: {{ outcome: [...] }}`)",
                    me.id, prev.id
                ))
            }
            Targets::DeliveredSilent | Targets::Undelivered if !sms => Some(format!(
                "wave `{}` waits for a delivery report, but `{}` is an `email` wave: mail has none (an accepted mail is `sent`); use `no_response`",
                me.id, prev.id
            )),
            Targets::Outcome(_) if !tasks => Some(format!(
                "wave `{}` waits for an agent's outcome, but `{}` is a `{on}` wave, which has no agents: use `replied`, `delivered_silent`, `undelivered` or `no_response`",
                me.id, prev.id
            )),
            Targets::Replied(words) => {
                let accepted: Vec<&str> = prev
                    .responses
                    .iter()
                    .filter_map(|r| match r {
                        ResponseRule::Reply(k) => Some(k.as_str()),
                        _ => None,
                    })
                    .collect();
                words
                    .iter()
                    .find(|k| !accepted.iter().any(|a| *a == "*" || a == k))
                    .map(|k| {
                        format!(
                            "wave `{}` waits for the reply `{k}`, which `{}` does not accept as a response (it accepts: {}); add `- reply: \"{k}\"` to its `responses`",
                            me.id,
                            prev.id,
                            if accepted.is_empty() {
                                "no reply".to_owned()
                            } else {
                                accepted.join(", ")
                            }
                        )
                    })
            }
            _ => None,
        };
        if let Some(p) = problem {
            sink.at_spanned(t, p);
            ok = false;
        }
    }
    ok
}

/// A wave's responses, each checked against what its channel can produce: replies come only
/// to SMS, outcomes only from agents working tasks (and declared in `outcomes`).
fn response_rules(
    sink: &mut Sink<'_>,
    responses: &[model::ResponseFile],
    channel: Option<ChannelKind>,
    outcomes: &[String],
) -> (Vec<ResponseRule>, bool) {
    let mut ok = true;
    let mut out = Vec::new();
    for r in responses {
        match r {
            model::ResponseFile::Reply(k) => {
                if channel == Some(ChannelKind::Email) {
                    sink.at_spanned(
                        k,
                        "a `reply` response can never happen on an `email` wave: replies come only to SMS (campaignd reads no mailbox); use `event:` for what the mail asks the subscriber to do",
                    );
                    ok = false;
                } else if channel.is_some_and(ChannelKind::is_task) {
                    sink.at_spanned(
                        k,
                        format!(
                            "a `reply` response can never happen on a `{}` wave: replies come only to SMS; use `outcome:` for what the agent records",
                            channel.map_or("", ChannelKind::as_str)
                        ),
                    );
                    ok = false;
                } else if let Some(word) = reply_keyword(sink, k) {
                    out.push(ResponseRule::Reply(word));
                } else {
                    ok = false;
                }
            }
            model::ResponseFile::Event(e) => match event_match(sink, e) {
                Some(m) => out.push(ResponseRule::Event(m)),
                None => ok = false,
            },
            model::ResponseFile::Outcome(o) => {
                if channel.is_some_and(|c| !c.is_task()) {
                    sink.at_spanned(
                        o,
                        format!(
                            "an `outcome` response can never happen on an `{}` wave: outcomes are recorded by agents on task waves; use {}`event:`",
                            channel.map_or("", ChannelKind::as_str),
                            if channel == Some(ChannelKind::Sms) { "`reply:` or " } else { "" }
                        ),
                    );
                    ok = false;
                } else if !declared_outcome(sink, o, outcomes) {
                    ok = false;
                } else {
                    out.push(ResponseRule::Outcome(o.value.clone()));
                }
            }
        }
    }
    (out, ok)
}

/// A task's SLA: at least an hour (staff work in hours), at most 30 days.
const MIN_SLA: Duration = Duration::from_secs(3_600);
const MAX_SLA: Duration = Duration::from_secs(30 * 86_400);

/// A wave's service terms: `sla` (task waves only, 1h to 30d), `escalate_to` (needs an
/// `sla`; a staff id of `staff.yaml`) and, for a `service` wave, its team checked against
/// the staff directory when the workflow has one. `staff` is `None` without `staff.yaml`.
fn service_terms(
    sink: &mut Sink<'_>,
    w: &crate::model::WaveFile,
    channel: Option<ChannelKind>,
    staff: Option<&Result<crate::monitor::StaffDirectory, Vec<Diagnostic>>>,
) -> (Option<Duration>, Option<String>, bool) {
    let mut ok = true;
    let is_task = channel.is_some_and(ChannelKind::is_task);
    let known = |dir: &crate::monitor::StaffDirectory| {
        let ids: Vec<&str> = dir.staff.iter().map(|s| s.id.as_str()).collect();
        if ids.is_empty() {
            "none declared".to_owned()
        } else {
            ids.join(", ")
        }
    };
    let sla = match &w.sla {
        None => None,
        Some(s) if channel.is_some() && !is_task => {
            sink.at_spanned(
                s,
                format!(
                    "`sla` is for task waves (outbound_call, service), not `{}`",
                    w.channel.value
                ),
            );
            ok = false;
            None
        }
        Some(s) => match parse_duration(&s.value) {
            Ok(d) if (MIN_SLA..=MAX_SLA).contains(&d) => Some(d),
            Ok(_) => {
                sink.at_spanned(
                    s,
                    format!(
                        "sla `{}` is out of range: expected 1h to 30d",
                        s.value.trim()
                    ),
                );
                ok = false;
                None
            }
            Err(msg) => {
                sink.at_spanned(s, msg);
                ok = false;
                None
            }
        },
    };
    let escalate_to = match &w.escalate_to {
        None => None,
        Some(e) if !name(sink, e, "staff id") => {
            ok = false;
            None
        }
        Some(e) if w.sla.is_none() => {
            sink.at_spanned(
                e,
                "`escalate_to` needs `sla`: a task is escalated when it is overdue",
            );
            ok = false;
            None
        }
        Some(e) => match staff {
            None => {
                sink.at_spanned(
                    e,
                    format!(
                        "unknown staff `{}`: there is no {} beside the workflow",
                        e.value,
                        crate::monitor::STAFF_FILE
                    ),
                );
                ok = false;
                None
            }
            // Its own errors are reported already.
            Some(Err(_)) => None,
            Some(Ok(dir)) if dir.get(&e.value).is_none() => {
                sink.at_spanned(
                    e,
                    format!(
                        "unknown staff `{}`: expected an id from {} ({})",
                        e.value,
                        crate::monitor::STAFF_FILE,
                        known(dir)
                    ),
                );
                ok = false;
                None
            }
            Some(Ok(_)) => Some(e.value.clone()),
        },
    };
    if channel == Some(ChannelKind::Service)
        && let (Some(team), Some(Ok(dir))) = (&w.team, staff)
        && rules::is_name(&team.value)
        && dir.get(&team.value).is_none()
    {
        sink.at_spanned(
            team,
            format!(
                "unknown staff `{}`: a service wave's team is a staff id from {} ({}), who gets the digest of its new tasks",
                team.value,
                crate::monitor::STAFF_FILE,
                known(dir)
            ),
        );
        ok = false;
    }
    (sla, escalate_to, ok)
}

/// A wave's `service_team` and, on a preferred wave, its refused `escalate_to`:
/// `service_team` is for a preferred wave with a `service` message (`kinds`, `None` after
/// its errors), a staff id of `staff.yaml` when there is one, as a service wave's `team`;
/// a preferred wave escalates by falling back to the second choice, so it names nobody to
/// escalate to. Whether all is well.
fn preferred_service_terms(
    sink: &mut Sink<'_>,
    w: &crate::model::WaveFile,
    preferred: bool,
    kinds: Option<&[ChannelKind]>,
    staff: Option<&Result<crate::monitor::StaffDirectory, Vec<Diagnostic>>>,
) -> bool {
    let mut ok = true;
    if preferred && let Some(e) = &w.escalate_to {
        sink.at_spanned(
            e,
            format!(
                "a `{}` wave has no `escalate_to`: a task nobody worked by its deadline falls back to the subscriber's second choice",
                crate::PREFERRED
            ),
        );
        ok = false;
    }
    let Some(team) = &w.service_team else {
        return ok;
    };
    if !preferred {
        sink.at_spanned(
            team,
            format!(
                "`service_team` is for `channel: {}` (who works its `service` tasks); a `{}` wave's agents are its `team`",
                crate::PREFERRED,
                w.channel.value
            ),
        );
        return false;
    }
    if kinds.is_some_and(|k| !k.contains(&ChannelKind::Service)) {
        sink.at_spanned(
            team,
            "`service_team` works the wave's `service` tasks, but `templates` has no `service` message",
        );
        ok = false;
    }
    if let Some(Ok(dir)) = staff
        && rules::is_name(&team.value)
        && dir.get(&team.value).is_none()
    {
        let ids: Vec<&str> = dir.staff.iter().map(|s| s.id.as_str()).collect();
        sink.at_spanned(
            team,
            format!(
                "unknown staff `{}`: a preferred wave's service_team is a staff id from {} ({}), who gets the digest of its new tasks",
                team.value,
                crate::monitor::STAFF_FILE,
                if ids.is_empty() {
                    "none declared".to_owned()
                } else {
                    ids.join(", ")
                }
            ),
        );
        ok = false;
    }
    ok
}

/// The channels a `preferred` wave may send on: every channel (a `service` message is a
/// task on the wave's `service_team`'s worklist, an `outbound_call` one on its `team`'s).
const PREFERABLE: [ChannelKind; 4] = [
    ChannelKind::Sms,
    ChannelKind::Email,
    ChannelKind::OutboundCall,
    ChannelKind::Service,
];

/// A `channel: preferred` wave's messages: one per channel of its `templates`, or, with
/// `variants`, each variant's per channel (the same channels in every variant). `None`
/// after its errors.
fn preferred_messages(
    sink: &mut Sink<'_>,
    w: &model::WaveFile,
    bundle: &Bundle,
    cat: &Catalogue,
) -> Option<(ByChannel, Vec<Variant>)> {
    let mut ok = true;
    if let Some(t) = &w.template {
        sink.at_spanned(
            t,
            "a `preferred` wave names its message per channel in `templates`, not one `template`",
        );
        ok = false;
    }
    let out = match (&w.templates, &w.variants) {
        (Some(_), Some(vs)) => {
            sink.at_spanned(
                vs,
                "a `preferred` wave with `variants` names each variant's messages in the variant's `templates`, so the wave has no `templates` of its own",
            );
            None
        }
        (None, None) => {
            sink.at_spanned(
                &w.channel,
                format!(
                    "a `{}` wave needs `templates`: its message per channel, e.g. `{{ sms: offer.txt, email: offer_mail.txt }}` (or `variants`, each with its `templates`)",
                    crate::PREFERRED
                ),
            );
            None
        }
        (Some(t), None) => channel_templates(sink, w, t, bundle, cat).map(|t| (t, Vec::new())),
        (None, Some(vs)) => variants(sink, w, vs, bundle, cat, None, true).map(|v| (Vec::new(), v)),
    };
    out.filter(|_| ok)
}

/// A `templates` map of a preferred wave (or of one of its variants): a message per
/// channel, each channel's own rules applied (a call needs `team`, an e-mail the
/// catalogue's address). Where the preference is read is checked once for the campaign
/// ([`preference`]). `None` after its errors.
fn channel_templates(
    sink: &mut Sink<'_>,
    w: &model::WaveFile,
    templates: &Spanned<BTreeMap<String, Spanned<String>>>,
    bundle: &Bundle,
    cat: &Catalogue,
) -> Option<Vec<(ChannelKind, Template)>> {
    if templates.value.is_empty() {
        sink.at_spanned(
            templates,
            "`templates` names no channel: expected at least one of sms, email, outbound_call, service",
        );
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for (name, path) in &templates.value {
        let Some(kind) = ChannelKind::parse(name).filter(|k| PREFERABLE.contains(k)) else {
            sink.at_spanned(
                path,
                format!(
                    "`{name}` in `templates` is not a channel a preferred wave sends on: expected sms, email, outbound_call or service"
                ),
            );
            ok = false;
            continue;
        };
        if kind == ChannelKind::OutboundCall && w.team.is_none() {
            sink.at_spanned(
                path,
                format!(
                    "the `{name}` message needs the wave's `team`: the agents who work its tasks"
                ),
            );
            ok = false;
        }
        if kind == ChannelKind::Service && w.service_team.is_none() {
            sink.at_spanned(
                path,
                "the `service` message needs the wave's `service_team`: the staff who work its tasks (`team` works the calls)",
            );
            ok = false;
        }
        if kind == ChannelKind::Email && cat.email_address().is_none() {
            sink.at_spanned(
                path,
                "the `email` message sends to the subscriber's address, but the attribute catalogue declares none: add a text attribute with `format: email`",
            );
            ok = false;
        }
        match load_template(sink, bundle, cat, path, Some(kind)) {
            Some(t) => out.push((kind, t)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// What is wrong with `name` as a preference attribute of `cat`: a channel choice must be an
/// enum whose values are all channel names, a slot a text with `format: time_slot`.
fn preference_problem(cat: &Catalogue, name: &str, is_slot: bool) -> Option<String> {
    let expected = if is_slot {
        "a text attribute with `format: time_slot`"
    } else {
        "an enum attribute whose values are channel names"
    };
    let Some(a) = cat.get(name) else {
        return Some(format!(
            "the catalogue declares no attribute `{name}`: expected {expected}"
        ));
    };
    let fits = if is_slot {
        a.format == Some(catalogue::TextFormat::TimeSlot)
    } else {
        matches!(&a.kind, catalogue::Kind::Enum { values }
            if values.iter().all(|v| ChannelKind::parse(v).is_some()))
    };
    (!fits).then(|| match &a.kind {
        catalogue::Kind::Enum { values } if !is_slot => format!(
            "`{name}` has values that are no channel ({}): expected {expected}",
            values
                .iter()
                .filter(|v| ChannelKind::parse(v).is_none())
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        kind => format!(
            "`{name}` is {} {}{}: expected {expected}",
            if matches!(
                kind,
                catalogue::Kind::Integer | catalogue::Kind::Enum { .. }
            ) {
                "an"
            } else {
                "a"
            },
            kind.name(),
            if is_slot && matches!(kind, catalogue::Kind::Text) {
                " without `format: time_slot`"
            } else {
                " attribute"
            }
        ),
    })
}

/// Where the campaign's `preferred` waves read each subscriber's preference: its
/// `preference` block, each name checked against the catalogue where it is written, or the
/// shipped names ([`crate::PREFERENCE_ATTRIBUTES`]), checked at each `preferred` wave when
/// there is one. `None` after its errors.
fn preference(sink: &mut Sink<'_>, f: &WorkflowFile, cat: &Catalogue) -> Option<Preference> {
    let preferred: Vec<&Spanned<String>> = f
        .waves
        .value
        .iter()
        .map(|w| &w.channel)
        .filter(|c| c.value == crate::PREFERRED)
        .collect();
    let Some(p) = &f.preference else {
        let shipped = Preference::default();
        let mut ok = true;
        for (i, name) in shipped.attributes().into_iter().enumerate() {
            let Some(name) = name else { continue };
            if preference_problem(cat, name, i % 2 == 1).is_none() {
                continue;
            }
            for channel in &preferred {
                sink.at_spanned(
                    *channel,
                    format!(
                        "`channel: {}` reads each subscriber's preference from the catalogue attribute `{name}`, which must be declared as {} (or name the catalogue's own attributes in the campaign's `preference`)",
                        crate::PREFERRED,
                        if i % 2 == 1 {
                            "a text with `format: time_slot`"
                        } else {
                            "an enum whose values are channel names"
                        }
                    ),
                );
                ok = false;
            }
        }
        return ok.then_some(shipped);
    };
    let mut ok = true;
    if preferred.is_empty() {
        sink.at_spanned(
            p,
            format!(
                "`preference` is read by `channel: {}` waves only, and this campaign has none",
                crate::PREFERRED
            ),
        );
        ok = false;
    }
    let v = &p.value;
    let named = [
        ("first", Some(&v.first), false),
        ("first_slot", v.first_slot.as_ref(), true),
        ("second", Some(&v.second), false),
        ("second_slot", v.second_slot.as_ref(), true),
    ];
    for (key, name, is_slot) in named {
        let Some(name) = name else { continue };
        if let Some(problem) = preference_problem(cat, &name.value, is_slot) {
            sink.at_spanned(name, format!("preference.{key}: {problem}"));
            ok = false;
        }
    }
    ok.then(|| Preference {
        first: v.first.value.clone(),
        first_slot: v.first_slot.as_ref().map(|s| s.value.clone()),
        second: v.second.value.clone(),
        second_slot: v.second_slot.as_ref().map(|s| s.value.clone()),
    })
}

/// A `preferred` wave's responses against the channels it has messages for: a reply needs
/// `sms` among them, an outcome a call.
fn preferred_responses_ok(
    sink: &mut Sink<'_>,
    responses: &[model::ResponseFile],
    kinds: &[ChannelKind],
) -> bool {
    let mut ok = true;
    for r in responses {
        match r {
            model::ResponseFile::Reply(k) if !kinds.contains(&ChannelKind::Sms) => {
                sink.at_spanned(
                    k,
                    "a `reply` response needs an `sms` message among the wave's `templates`: replies come only to SMS",
                );
                ok = false;
            }
            model::ResponseFile::Outcome(o) if !kinds.iter().any(|k| k.is_task()) => {
                sink.at_spanned(
                    o,
                    "an `outcome` response needs an `outbound_call` message among the wave's `templates`: outcomes are recorded by agents",
                );
                ok = false;
            }
            _ => {}
        }
    }
    ok
}

/// A template file named at `t`, parsed against the catalogue (as an e-mail template, with
/// its subject line, for `channel`'s `email`); `None` after its errors.
fn load_template(
    sink: &mut Sink<'_>,
    bundle: &Bundle,
    cat: &Catalogue,
    t: &Spanned<String>,
    channel: Option<ChannelKind>,
) -> Option<Template> {
    let parse = if channel == Some(ChannelKind::Email) {
        Template::parse_mail
    } else {
        Template::parse
    };
    match bundle.templates.get(&t.value) {
        _ if !template_path_ok(sink, t) => None,
        None => {
            sink.at_spanned(
                t,
                format!(
                    "template file `{}` not found (paths are relative to the workflow file)",
                    t.value
                ),
            );
            None
        }
        Some(text) => match parse(&t.value, text, cat) {
            Ok(t) => Some(t),
            Err(errs) => {
                let tfile = std::path::Path::new(&bundle.path)
                    .with_file_name(&t.value)
                    .display()
                    .to_string();
                for e in errs {
                    sink.out.push(Diagnostic {
                        file: tfile.clone(),
                        line: e.line,
                        column: e.column,
                        message: e.message,
                    });
                }
                None
            }
        },
    }
}

/// Variants per wave: at least two (one is a plain `template`), at most this many arms.
const MAX_VARIANTS: usize = 16;
/// The largest weight: enough for shares to a tenth of a percent; the weights' sum is
/// hashed against, so it stays far from any overflow.
const MAX_VARIANT_WEIGHT: i64 = 1000;

/// A wave's message: its `template`, or its `variants` (exactly one of the two). `None`
/// in the first place when the wave's message has errors (reported).
fn messages(
    sink: &mut Sink<'_>,
    w: &model::WaveFile,
    bundle: &Bundle,
    cat: &Catalogue,
    channel: Option<ChannelKind>,
) -> (Option<Option<Template>>, Vec<Variant>) {
    match (&w.template, &w.variants) {
        (Some(t), None) => (
            load_template(sink, bundle, cat, t, channel).map(Some),
            Vec::new(),
        ),
        (None, None) => {
            sink.at_spanned(
                &w.id,
                format!(
                    "wave `{}` needs `template` (or `variants`): the message or call script it sends",
                    w.id.value
                ),
            );
            (None, Vec::new())
        }
        (Some(t), Some(_)) => {
            sink.at_spanned(
                t,
                format!(
                    "wave `{}` has `variants`: each variant names its template, so the wave has no `template` of its own",
                    w.id.value
                ),
            );
            (None, Vec::new())
        }
        (None, Some(vs)) => match variants(sink, w, vs, bundle, cat, channel, false) {
            Some(out) => (Some(None), out),
            None => (None, Vec::new()),
        },
    }
}

/// A wave's `variants`: 2 to [`MAX_VARIANTS`] named, weighted arms, each with its message:
/// one `template` on a one-channel wave; on a `preferred` wave its own `templates`, on the
/// same channels as every other variant (so an arm differs from another by its message
/// only, not by whom it can reach). `None` after their errors.
fn variants(
    sink: &mut Sink<'_>,
    w: &model::WaveFile,
    vs: &Spanned<Vec<model::VariantFile>>,
    bundle: &Bundle,
    cat: &Catalogue,
    channel: Option<ChannelKind>,
    preferred: bool,
) -> Option<Vec<Variant>> {
    let mut ok = true;
    // The run's control is drawn beside the first wave, from its whole audience; a
    // later wave's variants reach only those an earlier wave passed on, whom that
    // control does not stand for, so an uplift against it would mislead.
    if let Some(a) = &w.after {
        sink.at_spanned(
            vs,
            format!(
                "`variants` are for the first wave only: wave `{}` comes after `{}`, and the run's control stands for the first wave's audience, not for who a later wave reaches",
                w.id.value,
                after_parts(a).0
            ),
        );
        ok = false;
    }
    if !(2..=MAX_VARIANTS).contains(&vs.value.len()) {
        sink.at_spanned(
            vs,
            format!(
                "expected 2 to {MAX_VARIANTS} variants, found {}: one message is a plain `template`",
                vs.value.len()
            ),
        );
        ok = false;
    }
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(vs.value.len());
    for v in &vs.value {
        let n = &v.name.value;
        let name_ok = !n.is_empty()
            && n.len() <= 32
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            sink.at_spanned(
                &v.name,
                format!(
                    "variant name `{}` is not valid: expected 1 to 32 of a-z, 0-9, `_`",
                    n.escape_debug()
                ),
            );
            ok = false;
        } else if !seen.insert(n.as_str()) {
            sink.at_spanned(&v.name, format!("duplicate variant name `{n}`"));
            ok = false;
        }
        let weight = v.weight.value;
        let weight = match u32::try_from(weight) {
            Ok(w) if (1..=MAX_VARIANT_WEIGHT).contains(&weight) => Some(w),
            _ => {
                sink.at_spanned(
                    &v.weight,
                    format!(
                        "variant weight {weight} is out of range: expected a whole number from 1 to {MAX_VARIANT_WEIGHT}"
                    ),
                );
                None
            }
        };
        let message = variant_message(sink, w, v, bundle, cat, channel, preferred);
        match (weight, message) {
            (Some(weight), Some((template, preferred))) if name_ok => out.push(Variant {
                name: n.clone(),
                weight,
                template,
                preferred,
            }),
            _ => ok = false,
        }
    }
    // Same channels in every arm: an arm with a channel another lacks would reach other
    // subscribers on their first choice, and its uplift would mix message and channel.
    if preferred && ok {
        // In PREFERABLE's order, so that a message lists them as the docs do.
        let union: Vec<ChannelKind> = PREFERABLE
            .into_iter()
            .filter(|c| out.iter().any(|v| v.preferred.iter().any(|(k, _)| k == c)))
            .collect();
        for (v, file) in out.iter().zip(&vs.value) {
            let missing: Vec<&str> = union
                .iter()
                .filter(|c| !v.preferred.iter().any(|(k, _)| k == *c))
                .map(|c| c.as_str())
                .collect();
            let Some(at) = file.templates.as_ref().filter(|_| !missing.is_empty()) else {
                continue;
            };
            sink.at_spanned(
                at,
                format!(
                    "variant `{}` has no message on {}, which another variant has: every variant of a `preferred` wave sends on the same channels, so that the arms differ by their message only",
                    v.name,
                    missing.join(", ")
                ),
            );
            ok = false;
        }
    }
    ok.then_some(out)
}

/// A message per channel (a preferred wave's or variant's `templates`).
type ByChannel = Vec<(ChannelKind, Template)>;

/// One variant's message: its `template` (a one-channel wave), or its `templates` (a
/// `preferred` wave); the other key is an error. `None` after its errors.
type VariantMessage = (Option<Template>, ByChannel);
fn variant_message(
    sink: &mut Sink<'_>,
    w: &model::WaveFile,
    v: &model::VariantFile,
    bundle: &Bundle,
    cat: &Catalogue,
    channel: Option<ChannelKind>,
    preferred: bool,
) -> Option<VariantMessage> {
    let n = &v.name.value;
    match (&v.template, &v.templates, preferred) {
        (Some(t), _, true) => {
            sink.at_spanned(
                t,
                "a variant of a `preferred` wave names its message per channel in `templates`, not one `template`",
            );
            None
        }
        (None, None, true) => {
            sink.at_spanned(
                &v.name,
                format!(
                    "variant `{n}` of a `preferred` wave needs `templates`: its message per channel, e.g. `{{ sms: offer_a.txt, email: offer_a_mail.txt }}`"
                ),
            );
            None
        }
        (None, Some(ts), true) => channel_templates(sink, w, ts, bundle, cat).map(|by| (None, by)),
        (_, Some(ts), false) => {
            sink.at_spanned(
                ts,
                format!(
                    "`templates` is for the variants of a `channel: {}` wave (a message per channel); a variant of a `{}` wave has one `template`",
                    crate::PREFERRED,
                    w.channel.value
                ),
            );
            None
        }
        (None, None, false) => {
            sink.at_spanned(
                &v.name,
                format!("variant `{n}` needs `template`: its message or call script"),
            );
            None
        }
        (Some(t), None, false) => {
            load_template(sink, bundle, cat, t, channel).map(|t| (Some(t), Vec::new()))
        }
    }
}

fn waves(
    sink: &mut Sink<'_>,
    f: &WorkflowFile,
    bundle: &Bundle,
    cat: &Catalogue,
    outcomes: &[String],
) -> Option<Vec<Wave>> {
    let mut ok = true;
    if f.waves.value.is_empty() {
        sink.at_spanned(&f.waves, "expected at least one wave in `waves`");
        return None;
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, w) in f.waves.value.iter().enumerate() {
        if seen.insert(w.id.value.as_str(), i).is_some() {
            sink.at_spanned(&w.id, format!("duplicate wave id `{}`", w.id.value));
            ok = false;
        }
    }
    for w in &f.waves.value {
        ok &= name(sink, &w.id, "wave id");
        if let Some(team) = &w.team {
            ok &= name(sink, team, "team name");
        }
        if let Some(team) = &w.service_team {
            ok &= name(sink, team, "staff id");
        }
    }
    let ids: Vec<&str> = f.waves.value.iter().map(|w| w.id.value.as_str()).collect();
    // The staff directory a service wave's team and an escalation name; read with the
    // workflow (`Bundle::staff`), so a stored version is checked as it was loaded.
    let staff = bundle.staff.as_ref().map(|text| {
        let file = std::path::Path::new(&bundle.path)
            .with_file_name(crate::monitor::STAFF_FILE)
            .display()
            .to_string();
        crate::monitor::compile_staff(&file, text, cat)
    });
    if let Some(Err(diags)) = &staff {
        sink.out.extend(diags.iter().cloned());
        ok = false;
    }
    let mut out = Vec::new();
    for (i, w) in f.waves.value.iter().enumerate() {
        let mut delay = Some(Duration::ZERO);
        let after = match &w.after {
            Some(a) if !seen.contains_key(after_parts(a).0) => {
                sink.at_spanned(
                    a,
                    format!(
                        "wave `{}` follows unknown wave `{}`: expected one of {} (optionally `+ DELAY`, e.g. `{} + 2d`)",
                        w.id.value,
                        after_parts(a).0,
                        ids.join(", "),
                        ids[0]
                    ),
                );
                ok = false;
                None
            }
            Some(a) if after_parts(a).0 == w.id.value => {
                sink.at_spanned(a, format!("wave `{}` cannot follow itself", w.id.value));
                ok = false;
                None
            }
            Some(a) => {
                let (id, written) = after_parts(a);
                if let Some(d) = written {
                    delay = match parse_duration(d) {
                        Ok(d) if d <= rules::MAX_DURATION && !d.is_zero() => Some(d),
                        Ok(_) => {
                            sink.at_spanned(
                                a,
                                format!(
                                    "delay `{d}` is out of range: expected 1m to 366d after `{id}`"
                                ),
                            );
                            None
                        }
                        Err(msg) => {
                            sink.at_spanned(
                                a,
                                format!(
                                    "`after: {}`: {msg}; expected `WAVE + DELAY`, e.g. `{id} + 2d`",
                                    a.value.trim()
                                ),
                            );
                            None
                        }
                    };
                }
                Some(id.to_owned())
            }
            None => {
                if i > 0 {
                    sink.at_spanned(&w.id, format!("wave `{}` needs `after`: only the first wave targets the audience directly", w.id.value));
                    ok = false;
                }
                None
            }
        };
        let at = match &w.at {
            None => Some(None),
            Some(t) if w.after.is_none() => {
                sink.at_spanned(t, format!("the first wave `{}` starts with its run: `at` times a wave that comes `after` another", w.id.value));
                None
            }
            Some(t) => match NaiveTime::parse_from_str(
                t.value
                    .trim()
                    .strip_prefix("next")
                    .unwrap_or(&t.value)
                    .trim(),
                "%H:%M",
            ) {
                Ok(time) => Some(Some(time)),
                Err(_) => {
                    sink.at_spanned(t, format!("`{}` is not a time of day: expected HH:MM, e.g. `next 10:00` or `10:00`", t.value.trim()));
                    None
                }
            },
        };
        if i == 0 && w.after.is_some() {
            if let Some(a) = &w.after {
                sink.at_spanned(
                    a,
                    "the first wave targets the audience and cannot have `after`",
                );
            }
            ok = false;
        }
        let preferred = w.channel.value == crate::PREFERRED;
        let channel = ChannelKind::parse(&w.channel.value);
        if channel.is_none() && !preferred {
            sink.at_spanned(
                &w.channel,
                format!(
                    "unknown channel `{}`: expected one of {}, or {}",
                    w.channel.value,
                    ChannelKind::names(),
                    crate::PREFERRED
                ),
            );
            ok = false;
        }
        let mut preferred_variants = Vec::new();
        let by_channel = if preferred {
            preferred_messages(sink, w, bundle, cat)
        } else {
            if let Some(t) = &w.templates {
                sink.at_spanned(
                    t,
                    format!(
                        "`templates` is for `channel: {}` (a message per channel); a `{}` wave has one `template`",
                        crate::PREFERRED,
                        w.channel.value
                    ),
                );
                ok = false;
            }
            Some((Vec::new(), Vec::new()))
        };
        // The channels a preferred wave has messages on (its own or, alike, its variants').
        let by_channel: Option<Vec<(ChannelKind, Template)>> = by_channel.map(|(own, vs)| {
            preferred_variants = vs;
            own
        });
        let kinds: Option<Vec<ChannelKind>> = by_channel.as_ref().map(|own| {
            own.iter()
                .chain(preferred_variants.first().map_or(&[][..], |v| &v.preferred))
                .map(|(c, _)| *c)
                .collect()
        });
        ok &= preferred_service_terms(sink, w, preferred, kinds.as_deref(), staff.as_ref());
        if channel.is_some_and(ChannelKind::is_task) && w.team.is_none() {
            sink.at_spanned(
                &w.channel,
                format!(
                    "a `{}` wave needs `team`: the agents who work its tasks",
                    w.channel.value
                ),
            );
            ok = false;
        }
        if channel == Some(ChannelKind::Email) && cat.email_address().is_none() {
            sink.at_spanned(
                &w.channel,
                "an `email` wave sends to the subscriber's address, but the attribute catalogue declares none: add a text attribute with `format: email`",
            );
            ok = false;
        }
        let (sla, escalate_to, service_ok) = service_terms(sink, w, channel, staff.as_ref());
        ok &= service_ok;
        let (template, variants) = if preferred {
            (Some(None), std::mem::take(&mut preferred_variants))
        } else {
            messages(sink, w, bundle, cat, channel)
        };
        let respond_within = duration(sink, &w.respond_within);
        let send_within = match (&w.send_within, respond_within) {
            (Some(s), respond) => match (duration(sink, s), respond) {
                (Some(send), Some(respond)) if send > respond => {
                    sink.at_spanned(
                        s,
                        format!(
                            "send_within {} is longer than respond_within {}: a contact sent that late would be sent after its wave's window closed",
                            s.value.trim(),
                            w.respond_within.value.trim()
                        ),
                    );
                    None
                }
                (send, _) => send,
            },
            // A contact sent after its window closed could never count as responding.
            (None, respond) => {
                Some(respond.map_or(DEFAULT_SEND_WITHIN, |r| r.min(DEFAULT_SEND_WITHIN)))
            }
        };
        let filter = w.filter.as_ref().and_then(|s| check_expr(sink, s, cat));
        let filter_ok = w.filter.is_none() || filter.is_some();
        let gate = w
            .gate
            .as_ref()
            .map(|g| intent_gate(sink, &g.value.purchase_intent));
        let gate_ok = gate.as_ref().is_none_or(Option::is_some);
        let (mut responses, mut responses_ok) =
            response_rules(sink, &w.responses, channel, outcomes);
        if let Some(kinds) = kinds.as_ref().filter(|_| preferred) {
            responses_ok &= preferred_responses_ok(sink, &w.responses, kinds);
        }
        let path = match &w.targets {
            None => Some(Targets::NoResponse),
            Some(t) if w.after.is_none() => {
                sink.at_spanned(t, format!("the first wave `{}` targets the audience: `targets` chooses among the subscribers of the wave a following wave comes `after`", w.id.value));
                None
            }
            Some(t) => targets(sink, &t.value, outcomes),
        };
        ok &= responses_ok;
        // An e-mail wave has no default: no answer comes back by mail, only the events
        // it lists (or the goal, which counts for every contact).
        if responses.is_empty() {
            match (channel, &kinds) {
                (Some(ChannelKind::Email), _) => {}
                (Some(c), _) if c.is_task() => {
                    responses.push(ResponseRule::Outcome("accepted".into()))
                }
                // A preferred wave takes what each of its channels would by default.
                (None, Some(kinds)) if preferred => {
                    if kinds.contains(&ChannelKind::Sms) {
                        responses.push(ResponseRule::Reply("*".into()));
                    }
                    if kinds.iter().any(|c| c.is_task()) {
                        responses.push(ResponseRule::Outcome("accepted".into()));
                    }
                }
                _ => responses.push(ResponseRule::Reply("*".into())),
            }
        }
        let wave_channel = if preferred {
            by_channel.as_ref().map(|_| WaveChannel::Preferred)
        } else {
            channel.map(WaveChannel::One)
        };
        match (
            wave_channel,
            template,
            respond_within,
            send_within,
            path,
            delay,
            at,
        ) {
            (
                Some(channel),
                Some(template),
                Some(respond_within),
                Some(send_within),
                Some(path),
                Some(delay),
                Some(at),
            ) if filter_ok && gate_ok => out.push(Wave {
                id: w.id.value.clone(),
                after,
                delay,
                at,
                targets: path,
                filter,
                channel,
                template,
                preferred: by_channel.unwrap_or_default(),
                variants,
                team: w.team.as_ref().map(|t| t.value.clone()),
                service_team: w.service_team.as_ref().map(|t| t.value.clone()),
                sla,
                escalate_to,
                respond_within,
                send_within,
                responses,
                delivery: match w.delivery {
                    DeliveryFile::AtLeastOnce => Delivery::AtLeastOnce,
                    DeliveryFile::AtMostOnce => Delivery::AtMostOnce,
                },
                gate: gate.flatten(),
            }),
            _ => ok = false,
        }
    }
    // Cycles: follow `after` links from every wave; a chain longer than the number of waves loops.
    let links: HashMap<&str, &str> = f
        .waves
        .value
        .iter()
        .filter_map(|w| {
            w.after
                .as_ref()
                .map(|a| (w.id.value.as_str(), after_parts(a).0))
        })
        .collect();
    let mut reported = HashSet::new();
    for w in &f.waves.value {
        let mut cur = w.id.value.as_str();
        let mut path = vec![cur];
        while let Some(next) = links.get(cur) {
            if path.contains(next) {
                if reported.insert(w.id.value.as_str()) && w.after.is_some() {
                    path.push(next);
                    if let Some(a) = &w.after {
                        sink.at_spanned(a, format!("waves form a cycle: {}", path.join(" -> ")));
                    }
                    ok = false;
                }
                break;
            }
            path.push(next);
            cur = next;
        }
    }
    ok &= paths_reachable(sink, f, &out);
    ok.then_some(out)
}

/// A score or threshold between 0 and 1 in thousandths. More decimals are refused rather
/// than rounded: a threshold of 0.4005 silently read as 0.401 (or 0.4) would gate a group the
/// operator meant to let through.
fn permille(sink: &mut Sink<'_>, v: &Spanned<f64>, what: &str) -> Option<Permille> {
    let x = v.value;
    if !(0.0..=1.0).contains(&x) {
        sink.at_spanned(v, format!("{what} {x} is out of range: expected 0 to 1"));
        return None;
    }
    let thousandths = (x * 1000.0).round();
    // The YAML number is the nearest double to what was written; three decimals or fewer
    // put it within a hair of a whole number of thousandths.
    if (x * 1000.0 - thousandths).abs() > 1e-6 {
        sink.at_spanned(
            v,
            format!("{what} {x} has more than three decimals: expected e.g. 0.4 or 0.125"),
        );
        return None;
    }
    Some(thousandths as Permille)
}

/// The most respondents a gate may ask for.
const MAX_MIN_RESPONDENTS: u32 = 1_000_000;

/// `survey`: answers (each a declared outcome or a reply keyword, once, scored 0 to 1) and
/// the text field respondents are grouped by.
fn survey(
    sink: &mut Sink<'_>,
    s: &Spanned<model::SurveyFile>,
    cat: &Catalogue,
    outcomes: &[String],
) -> Option<Survey> {
    let mut ok = true;
    let file = &s.value;
    if file.answers.value.is_empty() {
        sink.at_spanned(
            &file.answers,
            "expected at least one answer in `survey.answers`",
        );
        ok = false;
    }
    let mut answers: Vec<Answer> = Vec::new();
    for a in &file.answers.value {
        let score = permille(sink, &a.score, "score");
        let kind = match (&a.reply, &a.outcome) {
            (Some(k), None) if k.value.trim() == "*" => {
                sink.at_spanned(
                    k,
                    "`*` is not an answer: list each reply keyword with its own score",
                );
                None
            }
            (Some(k), None) => reply_keyword(sink, k).map(AnswerKind::Reply),
            (None, Some(o)) => {
                declared_outcome(sink, o, outcomes).then(|| AnswerKind::Outcome(o.value.clone()))
            }
            (Some(_), Some(o)) => {
                sink.at_spanned(
                    o,
                    "a survey answer is a `reply` or an `outcome`, not both: write two answers",
                );
                None
            }
            (None, None) => {
                sink.at_spanned(
                    &a.score,
                    "a survey answer needs a `reply` keyword or an `outcome` beside its `score`",
                );
                None
            }
        };
        match (kind, score) {
            (Some(kind), Some(score)) => {
                if answers.iter().any(|b| b.kind == kind) {
                    let (k, v) = kind.response();
                    let at = a
                        .reply
                        .as_ref()
                        .or(a.outcome.as_ref())
                        .unwrap_or(&file.group_by);
                    sink.at_spanned(at, format!("duplicate survey answer `{k}: {v}`"));
                    ok = false;
                } else {
                    answers.push(Answer { kind, score });
                }
            }
            _ => ok = false,
        }
    }
    let group_by = match cat.field(&file.group_by.value) {
        Some(fd) if fields::field_type(fd) == fields::FieldType::Text => Some(fd.name.clone()),
        Some(_) => {
            sink.at_spanned(
                &file.group_by,
                format!(
                    "cannot group survey respondents by `{}`: expected a text field such as value_tier",
                    file.group_by.value
                ),
            );
            None
        }
        None => {
            sink.at_spanned(
                &file.group_by,
                format!(
                    "`{}` is not a subscriber field; expected one of {}",
                    file.group_by.value,
                    cat.field_names().join(", ")
                ),
            );
            None
        }
    };
    let group_by = group_by?;
    ok.then_some(Survey { answers, group_by })
}

/// `gate.purchase_intent`, on its own; [`gates`] then finds the waves it reads.
fn intent_gate(sink: &mut Sink<'_>, g: &Spanned<model::IntentGateFile>) -> Option<IntentGate> {
    let min = permille(sink, &g.value.min, "gate minimum");
    let min_respondents = match &g.value.min_respondents {
        None => Some(1),
        Some(n) if (1..=MAX_MIN_RESPONDENTS).contains(&n.value) => Some(n.value),
        Some(n) => {
            sink.at_spanned(
                n,
                format!(
                    "min_respondents {} is out of range: expected 1 to {MAX_MIN_RESPONDENTS}",
                    n.value
                ),
            );
            None
        }
    };
    Some(IntentGate {
        min: min?,
        min_respondents: min_respondents?,
        from_waves: Vec::new(),
    })
}

/// The survey against the compiled waves: every answer can be collected by some wave, and a
/// gated wave follows (through `after`) at least one wave that collects an answer; those are
/// its `from_waves`. `survey` is `None` without a `survey` key, `Some(None)` when it had
/// errors of its own (reported already).
fn gates(
    sink: &mut Sink<'_>,
    f: &WorkflowFile,
    survey: Option<Option<&Survey>>,
    waves: &mut [Wave],
) -> bool {
    let mut ok = true;
    if let (Some(Some(s)), Some(sf)) = (survey, &f.survey) {
        for (a, file) in s.answers.iter().zip(&sf.value.answers.value) {
            if waves.iter().any(|w| w.collects(&a.kind)) {
                continue;
            }
            let (k, v) = a.kind.response();
            let why = match &a.kind {
                AnswerKind::Reply(_) => format!(
                    "no sms wave lists it among its responses (one taking any reply, `*`, asked something else); add `- reply: \"{v}\"` to the survey wave's `responses`"
                ),
                AnswerKind::Outcome(_) => {
                    "there is no outbound_call or service wave whose agents could record it"
                        .to_owned()
                }
            };
            let at = file
                .reply
                .as_ref()
                .or(file.outcome.as_ref())
                .unwrap_or(&sf.value.group_by);
            sink.at_spanned(
                at,
                format!("survey answer `{k}: {v}` can never be collected: {why}"),
            );
            ok = false;
        }
    }
    for w in &f.waves.value {
        let Some(g) = &w.gate else { continue };
        let Some(survey) = survey else {
            sink.at_spanned(
                g,
                format!(
                    "wave `{}` is gated on a survey score, but the workflow declares no `survey`",
                    w.id.value
                ),
            );
            ok = false;
            continue;
        };
        if w.after.is_none() {
            sink.at_spanned(
                g,
                format!(
                    "the first wave `{}` cannot be gated: a gate reads the answers collected by the waves a wave comes `after`",
                    w.id.value
                ),
            );
            ok = false;
            continue;
        }
        // The survey's own errors are reported; its answers are unknown.
        let Some(survey) = survey else { continue };
        let mut from = Vec::new();
        let mut cur = w.after.as_ref().map(|a| after_parts(a).0.to_owned());
        while let Some(id) = cur {
            let Some(prev) = waves.iter().find(|c| c.id == id) else {
                break;
            };
            if from.contains(&prev.id) {
                break;
            }
            if survey.answers.iter().any(|a| prev.collects(&a.kind)) {
                from.push(prev.id.clone());
            }
            cur = prev.after.clone();
        }
        if from.is_empty() {
            sink.at_spanned(
                g,
                format!(
                    "wave `{}` is gated on the survey, but no wave before it collects an answer: expected an sms wave accepting one of the survey's reply keywords, or an outbound_call or service wave for its outcomes, among the waves it follows",
                    w.id.value
                ),
            );
            ok = false;
            continue;
        }
        from.reverse();
        if let Some(me) = waves.iter_mut().find(|c| c.id == w.id.value)
            && let Some(gate) = me.gate.as_mut()
        {
            gate.from_waves = from;
        }
    }
    ok
}

/// `audience.alerts`: the monitor must be in the bundle (read from `monitors/<id>.yaml`) and
/// the level one of its levels, whose rank is what episodes store.
fn alert_audience(
    sink: &mut Sink<'_>,
    a: &model::AlertsFile,
    bundle: &Bundle,
) -> Option<AlertAudience> {
    let Some(text) = bundle.monitors.get(&a.monitor.value) else {
        sink.at_spanned(
            &a.monitor,
            format!(
                "unknown monitor `{}`: expected a file workflows/{}/{}.yaml beside this workflow",
                a.monitor.value.escape_debug(),
                crate::monitor::MONITORS_DIR,
                a.monitor.value.escape_debug()
            ),
        );
        return None;
    };
    let Some(levels) = crate::monitor::level_names(text) else {
        sink.at_spanned(
            &a.monitor,
            format!(
                "monitor `{}` does not parse: `campaignd validate` shows its errors",
                a.monitor.value
            ),
        );
        return None;
    };
    match levels.iter().position(|l| *l == a.level.value) {
        Some(rank) => Some(AlertAudience {
            monitor: a.monitor.value.clone(),
            level: a.level.value.clone(),
            min_rank: rank as i32,
        }),
        None => {
            sink.at_spanned(
                &a.level,
                format!(
                    "unknown level `{}` of monitor `{}`: expected one of {}",
                    a.level.value.escape_debug(),
                    a.monitor.value,
                    levels.join(", ")
                ),
            );
            None
        }
    }
}
