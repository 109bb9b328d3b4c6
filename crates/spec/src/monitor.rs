//! Churn-warning monitors (`workflows/monitors/*.yaml`) and the staff directory they assign
//! alerts to (`workflows/staff.yaml`): the file format, and its check into [`Monitor`] and
//! [`StaffDirectory`] with every problem located.
//!
//! A monitor watches a population every time its schedule fires: each subscriber's signals
//! (filters over attributes, history windows and event counts, through derived attributes)
//! add up to a risk score; a score at or above a level opens an alert episode for the
//! subscriber, assigned to the staff who own them. The episode logic is the engine's; this
//! module only says what a monitor is.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use catalogue::{Catalogue, Kind};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::compile::{
    Segments, check_expr, compile_segments, duration, name, parse_typed, schedule, schema_value,
};
use crate::diag::{Diagnostic, Sink};
use crate::expr::Expr;
use crate::keys;
use crate::model::ScheduleFile;
use crate::workflow::Schedule;

/// The staff directory's file name, beside the workflows.
pub const STAFF_FILE: &str = "staff.yaml";
/// The folder of monitor files, beside the workflows.
pub const MONITORS_DIR: &str = "monitors";
/// Event types that mean a subscriber was lost when none are named: they close a monitor's
/// episode as churned (`closes_on`) and end a retention goal's member (`lost_on`).
pub const DEFAULT_CLOSES_ON: [&str; 2] = ["churn", "port_out"];

/// A churn-warning monitor: who is watched, which signals count how much, the levels an
/// alert has, who gets it and how often they are told.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct MonitorFile {
    /// Monitor id: lowercase letters, digits and dashes. Unique across `workflows/monitors/`.
    #[schemars(with = "String")]
    monitor: Spanned<String>,
    /// What the monitor watches for, in a sentence.
    #[serde(default)]
    description: String,
    /// IANA time zone the schedule is judged in, e.g. `Asia/Shanghai`.
    #[schemars(with = "String")]
    timezone: Spanned<String>,
    /// When the monitor evaluates (daily, say: `0 0 7 * * *`). Slots missed while the
    /// daemon was down follow `catch_up`, as for campaigns.
    schedule: ScheduleFile,
    /// Who is watched: a segment, a filter, or both (both must hold).
    population: PopulationFile,
    /// What counts as a warning sign, each with its weight in the risk score.
    #[schemars(with = "Vec<SignalFile>")]
    signals: Spanned<Vec<SignalFile>>,
    /// The alert levels, lowest first: a subscriber whose score reaches a level's `score`
    /// has an alert at that level.
    #[schemars(with = "Vec<LevelFile>")]
    levels: Spanned<Vec<LevelFile>>,
    /// Event types that end an episode as churned (default `[churn, port_out]`).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    closes_on: Option<Vec<Spanned<String>>>,
    /// Who gets an alert, first rule that matches: `{ when: FILTER, to: STAFF }`, `{ by:
    /// FIELD }` (the staff whose `owns` lists the subscriber's value of FIELD), and a last
    /// `{ to: STAFF }` for everyone else.
    #[schemars(with = "Vec<AssignFile>")]
    assign: Spanned<Vec<AssignFile>>,
    /// How often each person gets a digest of their new and escalated alerts.
    #[serde(default)]
    digest: Option<DigestFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct PopulationFile {
    /// A named segment from `workflows/segments.yaml`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    segment: Option<Spanned<String>>,
    /// A filter over subscriber fields.
    #[serde(default, rename = "where")]
    #[schemars(with = "Option<String>")]
    filter: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct SignalFile {
    /// Signal name (lowercase letters, digits, `_`, `-`): shown in alerts.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// The filter that raises the signal, e.g. `arpu_change <= -0.3`.
    #[schemars(with = "String")]
    when: Spanned<String>,
    /// Points the signal adds to the risk score, 1 to 100.
    #[schemars(with = "u32")]
    weight: Spanned<u32>,
    /// What the signal means, for the staff who read the alert.
    #[serde(default)]
    says: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct LevelFile {
    /// Level name, e.g. `watch`, `high`.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// The lowest score at this level.
    #[schemars(with = "u32")]
    score: Spanned<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct AssignFile {
    /// Only subscribers matching this filter (with `to`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    when: Option<Spanned<String>>,
    /// A staff id from `workflows/staff.yaml`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    to: Option<Spanned<String>>,
    /// A text or enum field: the staff whose `owns` lists the subscriber's value.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    by: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct DigestFile {
    /// At most one digest per person per this long (default `1d`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    every: Option<Spanned<String>>,
}

/// The people and teams alerts go to.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct StaffFile {
    #[schemars(with = "Vec<StaffEntryFile>")]
    staff: Vec<StaffEntryFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct StaffEntryFile {
    /// Staff id, as monitors name it (lowercase letters, digits, `_`, `-`).
    #[schemars(with = "String")]
    id: Spanned<String>,
    /// Name shown in digests.
    #[serde(default)]
    name: String,
    /// Where digests go.
    #[schemars(with = "String")]
    email: Spanned<String>,
    /// Field → values this person owns, for `assign: { by: FIELD }`, e.g. `{ region:
    /// [Hangzhou] }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    owns: BTreeMap<String, Spanned<Vec<String>>>,
    /// IANA time zone the person's digests show times in (due, escalated), e.g.
    /// `Asia/Shanghai`; UTC when left out.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    timezone: Option<Spanned<String>>,
}

/// One person or team alerts can go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    pub id: String,
    pub name: String,
    pub email: String,
    /// Field → the values this person owns.
    pub owns: BTreeMap<String, Vec<String>>,
    /// The time zone their digests show times in (UTC unless the file names one).
    pub timezone: chrono_tz::Tz,
}

/// `workflows/staff.yaml`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaffDirectory {
    pub staff: Vec<Staff>,
}

impl StaffDirectory {
    pub fn get(&self, id: &str) -> Option<&Staff> {
        self.staff.iter().find(|s| s.id == id)
    }

    /// The first person who owns `value` of `field`.
    pub fn owner_of(&self, field: &str, value: &str) -> Option<&Staff> {
        self.staff.iter().find(|s| {
            s.owns
                .get(field)
                .is_some_and(|vs| vs.iter().any(|v| v == value))
        })
    }
}

/// A warning sign and its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub name: String,
    pub when: Expr,
    pub weight: u32,
    pub says: String,
}

/// An alert level: reached at `score` or more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub name: String,
    pub score: u32,
}

/// One assignment rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Assign {
    /// Subscribers matching the filter go to the staff member.
    When { when: Expr, to: String },
    /// The staff member who owns the subscriber's value of the field, if anyone does.
    By { field: String },
    /// Everyone left.
    To(String),
}

/// A checked monitor.
#[derive(Debug, Clone)]
pub struct Monitor {
    pub id: String,
    pub description: String,
    /// The file it came from, for messages.
    pub path: String,
    pub timezone: chrono_tz::Tz,
    pub schedule: Schedule,
    /// Segment and filter, both of which must hold.
    pub population: Expr,
    pub signals: Vec<Signal>,
    /// Lowest first, scores strictly rising.
    pub levels: Vec<Level>,
    pub closes_on: Vec<String>,
    /// Ends with an [`Assign::To`].
    pub assign: Vec<Assign>,
    pub digest_every: Duration,
    /// The catalogue its filters were checked against.
    pub catalogue: Arc<Catalogue>,
}

impl Monitor {
    /// The level a score reaches: its index in [`Monitor::levels`] (0 = lowest), or `None`
    /// below the lowest.
    pub fn level_of(&self, score: u32) -> Option<usize> {
        self.levels.iter().rposition(|l| score >= l.score)
    }
}

/// A plausible e-mail address: `local@domain`, no spaces or control characters. The mailer
/// parses it properly; this catches what would otherwise fail only at the first digest.
fn email_ok(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Parses and checks `staff.yaml`; `owns` keys are checked against `cat`.
pub fn compile_staff(
    file: &str,
    source: &str,
    cat: &Catalogue,
) -> Result<StaffDirectory, Vec<Diagnostic>> {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(schema_value::<StaffFile>);
    let parsed: StaffFile = parse_typed(file, source, schema)?;
    let mut sink = Sink::new(file, source);
    sink.out = keys::unknown_keys(file, source, schema);
    let mut seen = HashSet::new();
    let mut staff = Vec::new();
    for s in parsed.staff {
        name(&mut sink, &s.id, "staff id");
        if !seen.insert(s.id.value.clone()) {
            sink.at_spanned(&s.id, format!("staff id `{}` is used twice", s.id.value));
        }
        if !email_ok(&s.email.value) {
            sink.at_spanned(
                &s.email,
                format!(
                    "expected an e-mail address such as retention@example.com, found `{}`",
                    s.email.value.escape_debug()
                ),
            );
        }
        for (field, values) in &s.owns {
            match cat.field(field) {
                Some(a) if matches!(a.kind, Kind::Text | Kind::Enum { .. }) => {
                    if let Kind::Enum { values: allowed } = &a.kind
                        && let Some(v) = values.value.iter().find(|v| !allowed.contains(v))
                    {
                        sink.at_spanned(
                            values,
                            format!(
                                "`{v}` is not a value of `{field}`: expected one of {}",
                                allowed.join(", ")
                            ),
                        );
                    }
                }
                Some(a) => sink.at_spanned(
                    values,
                    format!(
                        "`owns` needs a text or enum field; `{field}` is {}",
                        a.kind.name()
                    ),
                ),
                None => sink.at_spanned(
                    values,
                    format!("unknown field `{field}` in `owns`: `campaignd schema` lists them"),
                ),
            }
        }
        let timezone = match &s.timezone {
            None => chrono_tz::UTC,
            Some(tz) => tz.value.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
                sink.at_spanned(
                    tz,
                    format!(
                        "unknown time zone `{}`: expected an IANA name such as Asia/Shanghai",
                        tz.value.escape_debug()
                    ),
                );
                chrono_tz::UTC
            }),
        };
        staff.push(Staff {
            id: s.id.value,
            name: s.name,
            email: s.email.value,
            owns: s.owns.into_iter().map(|(k, v)| (k, v.value)).collect(),
            timezone,
        });
    }
    if sink.out.is_empty() {
        Ok(StaffDirectory { staff })
    } else {
        Err(sink.out)
    }
}

/// Parses and checks one monitor file against the catalogue, segments, staff and calendars.
pub(crate) fn compile_monitor(
    file: &str,
    source: &str,
    cat: &Arc<Catalogue>,
    segments: Option<&Segments>,
    staff: &StaffDirectory,
    calendars: Option<&[String]>,
    periods: &crate::compile::PeriodTexts<'_>,
) -> Result<Monitor, Vec<Diagnostic>> {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(schema_value::<MonitorFile>);
    let f: MonitorFile = parse_typed(file, source, schema)?;
    let mut sink = Sink::new(file, source);
    sink.out = keys::unknown_keys(file, source, schema);

    let id_ok = !f.monitor.value.is_empty()
        && f.monitor
            .value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !id_ok {
        sink.at_spanned(
            &f.monitor,
            format!(
                "expected a monitor id of lowercase letters, digits and dashes, found `{}`",
                f.monitor.value
            ),
        );
    }
    let timezone = f.timezone.value.parse::<chrono_tz::Tz>().ok();
    if timezone.is_none() {
        sink.at_spanned(
            &f.timezone,
            format!(
                "unknown time zone `{}`: expected an IANA name such as Asia/Shanghai",
                f.timezone.value
            ),
        );
    }
    let sched = schedule(&mut sink, &f.schedule, calendars, periods);

    let mut population = Vec::new();
    if let Some(seg) = &f.population.segment {
        match segments.and_then(|s| s.by_name.get(&seg.value)) {
            Some(e) => population.push(e.clone()),
            None => sink.at_spanned(
                seg,
                format!(
                    "unknown segment `{}`: expected one of {}",
                    seg.value,
                    segments
                        .map(|s| s.by_name.keys().cloned().collect::<Vec<_>>().join(", "))
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "the segments of segments.yaml (none found)".into())
                ),
            ),
        }
    }
    if let Some(w) = &f.population.filter
        && let Some(e) = check_expr(&mut sink, w, cat)
    {
        population.push(e);
    }
    if f.population.segment.is_none() && f.population.filter.is_none() {
        sink.at_spanned(
            &f.monitor,
            "`population` needs a `segment`, a `where` filter, or both",
        );
    }

    let mut signals = Vec::new();
    let mut names = HashSet::new();
    if f.signals.value.is_empty() {
        sink.at_spanned(&f.signals, "a monitor needs at least one signal");
    }
    for s in &f.signals.value {
        name(&mut sink, &s.name, "signal name");
        if !names.insert(s.name.value.clone()) {
            sink.at_spanned(&s.name, format!("signal `{}` is named twice", s.name.value));
        }
        if !(1..=100).contains(&s.weight.value) {
            sink.at_spanned(
                &s.weight,
                format!(
                    "weight {} is out of range: expected 1 to 100",
                    s.weight.value
                ),
            );
        }
        if let Some(when) = check_expr(&mut sink, &s.when, cat) {
            signals.push(Signal {
                name: s.name.value.clone(),
                when,
                weight: s.weight.value,
                says: s.says.clone(),
            });
        }
    }

    let mut levels: Vec<Level> = Vec::new();
    if f.levels.value.is_empty() {
        sink.at_spanned(&f.levels, "a monitor needs at least one level");
    }
    let reachable: u32 = f.signals.value.iter().map(|s| s.weight.value).sum();
    for l in &f.levels.value {
        name(&mut sink, &l.name, "level name");
        if l.score.value == 0 {
            sink.at_spanned(
                &l.score,
                "a level's score must be at least 1: at 0 everyone watched would be alerted",
            );
        } else if let Some(prev) = levels.last()
            && l.score.value <= prev.score
        {
            sink.at_spanned(
                &l.score,
                format!(
                    "levels go lowest first: score {} must be above `{}`'s {}",
                    l.score.value, prev.name, prev.score
                ),
            );
        } else if l.score.value > reachable {
            sink.at_spanned(
                &l.score,
                format!(
                    "score {} is never reached: the signals' weights add up to {reachable}",
                    l.score.value
                ),
            );
        }
        if levels.iter().any(|p| p.name == l.name.value) {
            sink.at_spanned(&l.name, format!("level `{}` is named twice", l.name.value));
        }
        levels.push(Level {
            name: l.name.value.clone(),
            score: l.score.value,
        });
    }

    let closes_on = match &f.closes_on {
        None => DEFAULT_CLOSES_ON.iter().map(|s| s.to_string()).collect(),
        Some(types) => {
            for t in types {
                if let Some(problem) = crate::rules::event_type_problem(&t.value) {
                    sink.at_spanned(t, problem);
                }
            }
            types.iter().map(|t| t.value.clone()).collect()
        }
    };

    let mut assign = Vec::new();
    let staff_ref = |sink: &mut Sink<'_>, to: &Spanned<String>| {
        if staff.get(&to.value).is_none() {
            let known: Vec<&str> = staff.staff.iter().map(|s| s.id.as_str()).collect();
            sink.at_spanned(
                to,
                format!(
                    "unknown staff `{}`: expected an id from {STAFF_FILE} ({})",
                    to.value,
                    if known.is_empty() {
                        "none declared".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    };
    for (i, a) in f.assign.value.iter().enumerate() {
        let last = i + 1 == f.assign.value.len();
        match (&a.when, &a.to, &a.by) {
            (Some(when), Some(to), None) => {
                staff_ref(&mut sink, to);
                if let Some(when) = check_expr(&mut sink, when, cat) {
                    assign.push(Assign::When {
                        when,
                        to: to.value.clone(),
                    });
                }
            }
            (None, None, Some(by)) => {
                match cat.field(&by.value) {
                    Some(attr) if matches!(attr.kind, Kind::Text | Kind::Enum { .. }) => {}
                    Some(attr) => sink.at_spanned(
                        by,
                        format!(
                            "`by` needs a text or enum field; `{}` is {}",
                            by.value,
                            attr.kind.name()
                        ),
                    ),
                    None => sink.at_spanned(
                        by,
                        format!(
                            "unknown field `{}`: `campaignd schema` lists them",
                            by.value
                        ),
                    ),
                }
                if !staff.staff.iter().any(|s| s.owns.contains_key(&by.value)) {
                    sink.at_spanned(
                        by,
                        format!(
                            "nobody in {STAFF_FILE} owns any `{}`: add `owns: {{ {}: [...] }}` to the staff who do",
                            by.value, by.value
                        ),
                    );
                }
                assign.push(Assign::By {
                    field: by.value.clone(),
                });
            }
            (None, Some(to), None) => {
                staff_ref(&mut sink, to);
                if !last {
                    sink.at_spanned(
                        to,
                        "a rule without `when` takes everyone left: it must be the last one",
                    );
                }
                assign.push(Assign::To(to.value.clone()));
            }
            _ => sink.at_spanned(
                &f.assign,
                format!(
                    "assign rule {} must be `{{ when: FILTER, to: STAFF }}`, `{{ by: FIELD }}` or `{{ to: STAFF }}`",
                    i + 1
                ),
            ),
        }
    }
    if !matches!(
        f.assign.value.last(),
        Some(AssignFile {
            when: None,
            to: Some(_),
            by: None
        })
    ) {
        sink.at_spanned(
            &f.assign,
            "the last assign rule must be `{ to: STAFF }`, so every alert has an owner",
        );
    }

    let digest_every = match f.digest.as_ref().and_then(|d| d.every.as_ref()) {
        Some(e) => duration(&mut sink, e),
        None => Some(Duration::from_secs(86_400)),
    };

    if !sink.out.is_empty() {
        return Err(sink.out);
    }
    let (Some(timezone), Some(schedule), Some(digest_every)) = (timezone, sched, digest_every)
    else {
        return Err(sink.out);
    };
    let population = if population.len() == 1 {
        population.remove(0)
    } else {
        Expr::And(population)
    };
    Ok(Monitor {
        id: f.monitor.value,
        description: f.description,
        path: file.to_owned(),
        timezone,
        schedule,
        population,
        signals,
        levels,
        closes_on,
        assign,
        digest_every,
        catalogue: cat.clone(),
    })
}

/// The level names of a monitor file, lowest first, when its levels parse (the rest of the
/// file is checked by [`compile_monitor`]).
pub(crate) fn level_names(source: &str) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct Levels {
        levels: Vec<Level>,
    }
    #[derive(Deserialize)]
    struct Level {
        name: String,
    }
    serde_saphyr::from_str::<Levels>(source)
        .ok()
        .map(|l| l.levels.into_iter().map(|l| l.name).collect())
}

/// Reads a file, or says why it could not be read.
fn read(path: &Path) -> Result<String, Diagnostic> {
    std::fs::read_to_string(path).map_err(|e| Diagnostic {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    })
}

/// The monitors of a workflows folder (`monitors/*.yaml`) and its staff directory, checked
/// against its catalogue, segments and calendars; every problem, located. No monitors
/// folder means no monitors.
pub fn load_monitors(dir: &Path) -> (Vec<Monitor>, StaffDirectory, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mdir = dir.join(MONITORS_DIR);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&mdir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let cat = match crate::catalogue::load_catalogue(dir) {
        Ok(c) => c,
        Err(d) => {
            diags.extend(d);
            return (Vec::new(), StaffDirectory::default(), diags);
        }
    };
    let staff_path = dir.join(STAFF_FILE);
    let staff = if staff_path.exists() {
        match read(&staff_path) {
            Ok(text) => match compile_staff(&staff_path.display().to_string(), &text, &cat) {
                Ok(s) => s,
                Err(d) => {
                    diags.extend(d);
                    StaffDirectory::default()
                }
            },
            Err(d) => {
                diags.push(d);
                StaffDirectory::default()
            }
        }
    } else {
        StaffDirectory::default()
    };
    if files.is_empty() {
        return (Vec::new(), staff, diags);
    }
    let seg_path = dir.join("segments.yaml");
    let segments = if seg_path.exists() {
        match read(&seg_path)
            .map_err(|d| vec![d])
            .and_then(|t| compile_segments(&seg_path.display().to_string(), &t, &cat))
        {
            Ok(s) => Some(s),
            Err(d) => {
                diags.extend(d);
                None
            }
        }
    } else {
        None
    };
    let calendars = crate::load::calendar_names(dir);
    let period_texts = crate::periods::read_all(dir, &calendars);
    let periods = crate::compile::PeriodTexts {
        workflow_dir: dir,
        texts: &period_texts,
    };
    let mut monitors: Vec<Monitor> = Vec::new();
    for f in files {
        let shown = f.display().to_string();
        let text = match read(&f) {
            Ok(t) => t,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        match compile_monitor(
            &shown,
            &text,
            &cat,
            segments.as_ref(),
            &staff,
            Some(&calendars),
            &periods,
        ) {
            Ok(m) => {
                if let Some(other) = monitors.iter().find(|o| o.id == m.id) {
                    diags.push(Diagnostic {
                        file: shown,
                        line: 0,
                        column: 0,
                        message: format!("monitor id `{}` is already used by {}", m.id, other.path),
                    });
                } else {
                    monitors.push(m);
                }
            }
            Err(d) => diags.extend(d),
        }
    }
    (monitors, staff, diags)
}

/// The JSON Schema of the monitor file format.
pub fn monitor_schema_json() -> String {
    let schema = schemars::schema_for!(MonitorFile);
    serde_json::to_string_pretty(&schema).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAFF: &str = "staff:\n  - id: desk\n    email: desk@example.com\n  - id: west\n    email: west@example.com\n    owns: { region: [xian] }\n";

    const GOOD: &str = "monitor: watch\ntimezone: Asia/Shanghai\nschedule: { cron: \"0 0 7 * * *\" }\npopulation:\n  where: \"arpu_3m >= 120\"\nsignals:\n  - name: down\n    when: \"arpu_change <= -0.3\"\n    weight: 40\n  - name: queries\n    when: \"bill_queries_30d >= 3\"\n    weight: 20\nlevels:\n  - { name: watch, score: 40 }\n  - { name: high, score: 60 }\nassign:\n  - by: region\n  - to: desk\n";

    fn staff() -> StaffDirectory {
        compile_staff("staff.yaml", STAFF, &crate::catalogue::shipped()).unwrap()
    }

    fn compile(src: &str) -> Result<Monitor, Vec<Diagnostic>> {
        compile_monitor(
            "m.yaml",
            src,
            &crate::catalogue::shipped(),
            None,
            &staff(),
            None,
            &crate::compile::PeriodTexts {
                workflow_dir: std::path::Path::new(""),
                texts: &Default::default(),
            },
        )
    }

    fn messages(src: &str) -> Vec<String> {
        compile(src)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_good_monitor_compiles_with_its_levels_and_rules() {
        let m = compile(GOOD).unwrap();
        assert_eq!(m.id, "watch");
        assert_eq!(m.signals.len(), 2);
        assert_eq!(m.level_of(39), None);
        assert_eq!(m.level_of(40), Some(0));
        assert_eq!(m.level_of(60), Some(1));
        assert_eq!(m.level_of(100), Some(1));
        assert_eq!(m.closes_on, vec!["churn", "port_out"]);
        assert_eq!(m.digest_every, Duration::from_secs(86_400));
        assert_eq!(
            m.assign,
            vec![
                Assign::By {
                    field: "region".into()
                },
                Assign::To("desk".into())
            ]
        );
    }

    #[test]
    fn every_problem_is_located() {
        let bad = GOOD
            .replace("arpu_change <= -0.3", "arpu_chnage <= -0.3")
            .replace("weight: 20", "weight: 0")
            .replace("score: 60", "score: 30")
            .replace("  - to: desk\n", "  - to: nobody\n");
        let got = messages(&bad);
        let want = [
            "m.yaml:8:12: unknown field `arpu_chnage`",
            "m.yaml:12:13: weight 0 is out of range",
            "m.yaml:15:26: levels go lowest first",
            "m.yaml:18:9: unknown staff `nobody`",
        ];
        for w in want {
            assert!(got.iter().any(|g| g.starts_with(w)), "{w}\n{got:#?}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    #[test]
    fn every_alert_needs_an_owner_and_a_reachable_level() {
        let got = messages(
            &GOOD
                .replace("  - to: desk\n", "")
                .replace("score: 60", "score: 61"),
        );
        assert!(
            got.iter()
                .any(|g| g.contains("the last assign rule must be `{ to: STAFF }`")),
            "{got:#?}"
        );
        assert!(
            got.iter()
                .any(|g| g.contains("score 61 is never reached: the signals' weights add up to 60")),
            "{got:#?}"
        );
    }

    #[test]
    fn staff_problems_are_located() {
        let src = "staff:\n  - id: desk\n    email: not-an-address\n  - id: desk\n    email: d@example.com\n    owns: { arpu_3m: [x], brand: [nokia] }\n    timezone: Asia/Xian\n";
        let got: Vec<String> = compile_staff("staff.yaml", src, &crate::catalogue::shipped())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        for w in [
            "staff.yaml:3:12: expected an e-mail address",
            "staff.yaml:4:9: staff id `desk` is used twice",
            "`owns` needs a text or enum field; `arpu_3m` is decimal",
            "`nokia` is not a value of `brand`",
            "staff.yaml:7:15: unknown time zone `Asia/Xian`: expected an IANA name",
        ] {
            assert!(got.iter().any(|g| g.contains(w)), "{w}\n{got:#?}");
        }
    }

    #[test]
    fn the_shipped_monitors_and_staff_load_clean() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        let (monitors, staff, diags) = load_monitors(&dir);
        assert!(diags.is_empty(), "{diags:#?}");
        assert!(monitors.iter().any(|m| m.id == "core-anomaly"));
        assert!(staff.get("retention-desk").is_some());
        assert_eq!(
            staff.get("vip-club").map(|s| s.timezone),
            Some(chrono_tz::Asia::Shanghai)
        );
        let plain = compile_staff("staff.yaml", STAFF, &crate::catalogue::shipped()).unwrap();
        assert_eq!(
            plain.get("desk").map(|s| s.timezone),
            Some(chrono_tz::UTC),
            "UTC when the file names none"
        );
    }
}
