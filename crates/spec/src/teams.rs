//! Call-centre teams (`workflows/teams.yaml`): who works an `outbound_call` wave's tasks,
//! how many a day and how fast, and when. The file format and its check into
//! [`TeamDirectory`] with every problem located.
//!
//! A separate file from `staff.yaml`: staff are people and desks told of alerts and tasks
//! by mail, while a call-centre team is a queue with agents, a daily capacity and a pace.
//! The file is read at daemon start (like monitors) and is not part of a workflow version,
//! so changing a team's capacity neither re-versions nor needs re-approval of the
//! campaigns that call through it; a workflow naming an undeclared team is still refused
//! when the folder is checked (`load_file`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use catalogue::{Catalogue, Kind};
use chrono::NaiveTime;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::compile::{name, parse_typed, schema_value};
use crate::diag::{Diagnostic, Sink};
use crate::keys;

/// The teams file's name, beside the workflows.
pub const TEAMS_FILE: &str = "teams.yaml";
/// Bounds of a team's `capacity_per_day`.
pub const MAX_CAPACITY_PER_DAY: u32 = 100_000;
/// Bounds of a team's `pacing_per_hour`.
pub const MAX_PACING_PER_HOUR: u32 = 10_000;

/// `workflows/teams.yaml`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct TeamsFile {
    /// The subscriber attribute that orders a team's queue, highest first (then the soonest
    /// due): a stored integer or decimal attribute of the catalogue, e.g. `arpu_3m`.
    #[schemars(with = "String")]
    value: Spanned<String>,
    /// The call-centre teams.
    #[schemars(with = "Vec<TeamFile>")]
    teams: Spanned<Vec<TeamFile>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct TeamFile {
    /// Team id, as an `outbound_call` wave's `team` names it and agent tokens are bound to
    /// (lowercase letters, digits, `_`, `-`).
    #[schemars(with = "String")]
    id: Spanned<String>,
    /// Name shown to supervisors.
    #[serde(default)]
    name: String,
    /// The agents (and dialers): the names of their agent tokens (`campaignd token create
    /// --role agent --team TEAM --name ID`). An agent is in one team.
    #[schemars(with = "Vec<String>")]
    agents: Spanned<Vec<Spanned<String>>>,
    /// How many tasks the team takes a day, across all campaigns: 1 to 100000. A day is the
    /// team's local day (`timezone`).
    #[schemars(with = "u32")]
    capacity_per_day: Spanned<u32>,
    /// How many tasks reach the team's queue in any hour: 1 to 10000.
    #[schemars(with = "u32")]
    pacing_per_hour: Spanned<u32>,
    /// IANA time zone of the team's day and hours, e.g. `Asia/Shanghai`.
    #[schemars(with = "String")]
    timezone: Spanned<String>,
    /// Working hours, local, as `HH:MM-HH:MM` (e.g. `09:00-21:00`; `22:00-06:00` runs past
    /// midnight). Tasks reach the queue only within them.
    #[schemars(with = "String")]
    hours: Spanned<String>,
}

/// Working hours: `[start, end)` local time, past midnight when `start > end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl WorkingHours {
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// One call-centre team, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub agents: Vec<String>,
    pub capacity_per_day: u32,
    pub pacing_per_hour: u32,
    pub timezone: chrono_tz::Tz,
    pub hours: WorkingHours,
}

/// `workflows/teams.yaml`, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeamDirectory {
    /// The attribute that orders the queues (a stored numeric catalogue attribute).
    pub value: String,
    pub teams: Vec<Team>,
}

impl TeamDirectory {
    pub fn get(&self, id: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.id == id)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.teams.iter().map(|t| t.id.as_str()).collect()
    }
}

fn hours(sink: &mut Sink<'_>, s: &Spanned<String>) -> Option<WorkingHours> {
    let parse = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").ok();
    match s.value.split_once('-').map(|(a, b)| (parse(a), parse(b))) {
        Some((Some(start), Some(end))) if start != end => Some(WorkingHours { start, end }),
        _ => {
            sink.at_spanned(
                s,
                format!(
                    "expected working hours as HH:MM-HH:MM, e.g. 09:00-21:00, found `{}`",
                    s.value.escape_debug()
                ),
            );
            None
        }
    }
}

fn bounded(sink: &mut Sink<'_>, v: &Spanned<u32>, key: &str, max: u32) -> Option<u32> {
    if (1..=max).contains(&v.value) {
        Some(v.value)
    } else {
        sink.at_spanned(
            v,
            format!("`{key}` {} is out of range: expected 1 to {max}", v.value),
        );
        None
    }
}

/// Checks the teams file `source` (shown as `file`) against the catalogue `cat`.
pub fn compile_teams(
    file: &str,
    source: &str,
    cat: &Catalogue,
) -> Result<TeamDirectory, Vec<Diagnostic>> {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(schema_value::<TeamsFile>);
    let parsed: TeamsFile = parse_typed(file, source, schema)?;
    let mut sink = Sink::new(file, source);
    sink.out = keys::unknown_keys(file, source, schema);
    match cat.get(&parsed.value.value) {
        Some(a) if matches!(a.kind, Kind::Integer | Kind::Decimal) => {}
        Some(a) => sink.at_spanned(
            &parsed.value,
            format!(
                "`value` needs an integer or decimal attribute; `{}` is {}",
                parsed.value.value,
                a.kind.name()
            ),
        ),
        None => sink.at_spanned(
            &parsed.value,
            format!(
                "unknown attribute `{}`: `value` names a stored integer or decimal attribute of the catalogue, e.g. arpu_3m",
                parsed.value.value.escape_debug()
            ),
        ),
    }
    if parsed.teams.value.is_empty() {
        sink.at_spanned(&parsed.teams, "expected at least one team in `teams`");
    }
    let mut teams = Vec::new();
    let mut ids: HashMap<String, ()> = HashMap::new();
    let mut agent_team: HashMap<String, String> = HashMap::new();
    for t in parsed.teams.value {
        let id_ok = name(&mut sink, &t.id, "team id");
        if id_ok && ids.insert(t.id.value.clone(), ()).is_some() {
            sink.at_spanned(&t.id, format!("team id `{}` is used twice", t.id.value));
        }
        if t.agents.value.is_empty() {
            sink.at_spanned(
                &t.agents,
                format!("team `{}` has no agents: expected at least one", t.id.value),
            );
        }
        let mut agents = Vec::new();
        for a in &t.agents.value {
            if !name(&mut sink, a, "agent id") {
                continue;
            }
            if let Some(other) = agent_team.insert(a.value.clone(), t.id.value.clone()) {
                sink.at_spanned(
                    a,
                    if other == t.id.value {
                        format!("agent `{}` is listed twice", a.value)
                    } else {
                        format!(
                            "agent `{}` is already in team `{other}`: an agent token is bound to one team",
                            a.value
                        )
                    },
                );
            }
            agents.push(a.value.clone());
        }
        let capacity = bounded(
            &mut sink,
            &t.capacity_per_day,
            "capacity_per_day",
            MAX_CAPACITY_PER_DAY,
        );
        let pacing = bounded(
            &mut sink,
            &t.pacing_per_hour,
            "pacing_per_hour",
            MAX_PACING_PER_HOUR,
        );
        let timezone = t.timezone.value.parse::<chrono_tz::Tz>().ok();
        if timezone.is_none() {
            sink.at_spanned(
                &t.timezone,
                format!(
                    "unknown time zone `{}`: expected an IANA name such as Asia/Shanghai",
                    t.timezone.value.escape_debug()
                ),
            );
        }
        let hours = hours(&mut sink, &t.hours);
        if let (Some(capacity_per_day), Some(pacing_per_hour), Some(timezone), Some(hours)) =
            (capacity, pacing, timezone, hours)
        {
            teams.push(Team {
                id: t.id.value,
                name: t.name,
                agents,
                capacity_per_day,
                pacing_per_hour,
                timezone,
                hours,
            });
        }
    }
    if sink.out.is_empty() {
        Ok(TeamDirectory {
            value: parsed.value.value,
            teams,
        })
    } else {
        Err(sink.out)
    }
}

/// The teams file of a workflows folder, checked against its catalogue: `Ok(None)` when
/// there is none (no team is paced then).
pub fn load_teams(dir: &Path) -> Result<Option<TeamDirectory>, Vec<Diagnostic>> {
    let path = dir.join(TEAMS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        vec![Diagnostic {
            file: shown.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        }]
    })?;
    let cat = crate::catalogue::load_catalogue(dir)?;
    compile_teams(&shown, &text, &cat).map(Some)
}

/// Where the waves of a workflow file (`source`, shown as `file`) with channel
/// `outbound_call` name a team `known` does not declare: one located error each.
pub(crate) fn undeclared_call_teams(file: &str, source: &str, known: &[&str]) -> Vec<Diagnostic> {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(schema_value::<crate::model::WorkflowFile>);
    // A file that does not parse has its own errors from `compile`.
    let Ok(parsed) = parse_typed::<crate::model::WorkflowFile>(file, source, schema) else {
        return Vec::new();
    };
    let mut sink = Sink::new(file, source);
    for w in &parsed.waves.value {
        let call = domain::ChannelKind::OutboundCall.as_str();
        // A preferred wave with a call message puts calls in its team's queue too.
        let calls = w.channel.value == call
            || (w.channel.value == crate::PREFERRED
                && w.templates
                    .as_ref()
                    .is_some_and(|t| t.value.contains_key(call)));
        if !calls {
            continue;
        }
        match &w.team {
            Some(team) if !known.contains(&team.value.as_str()) => sink.at_spanned(
                team,
                format!(
                    "unknown team `{}`: an outbound_call wave's team is declared in {TEAMS_FILE} ({})",
                    team.value.escape_debug(),
                    known.join(", ")
                ),
            ),
            // A task wave without a team is `compile`'s error.
            _ => {}
        }
    }
    sink.out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "value: arpu_3m\nteams:\n  - id: callcentre\n    name: Call centre\n    agents: [agent-1, agent-2]\n    capacity_per_day: 400\n    pacing_per_hour: 60\n    timezone: Asia/Shanghai\n    hours: 09:00-21:00\n";

    fn check(src: &str) -> Result<TeamDirectory, Vec<String>> {
        compile_teams("teams.yaml", src, &catalogue::shipped())
            .map_err(|d| d.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_good_file_compiles() {
        let d = check(GOOD).unwrap();
        assert_eq!(d.value, "arpu_3m");
        let t = d.get("callcentre").unwrap();
        assert_eq!((t.capacity_per_day, t.pacing_per_hour), (400, 60));
        assert_eq!(t.agents, vec!["agent-1", "agent-2"]);
        assert!(t.hours.contains(NaiveTime::from_hms_opt(9, 0, 0).unwrap()));
        assert!(!t.hours.contains(NaiveTime::from_hms_opt(21, 0, 0).unwrap()));
        let night = WorkingHours {
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
        };
        assert!(night.contains(NaiveTime::from_hms_opt(23, 0, 0).unwrap()));
        assert!(night.contains(NaiveTime::from_hms_opt(5, 59, 0).unwrap()));
        assert!(!night.contains(NaiveTime::from_hms_opt(12, 0, 0).unwrap()));
    }

    #[test]
    fn every_bad_value_is_a_located_error() {
        for (from, to, want) in [
            (
                "value: arpu_3m",
                "value: region",
                "teams.yaml:1:8: `value` needs an integer or decimal attribute; `region` is",
            ),
            (
                "value: arpu_3m",
                "value: nope",
                "teams.yaml:1:8: unknown attribute `nope`",
            ),
            (
                "capacity_per_day: 400",
                "capacity_per_day: 0",
                "teams.yaml:6:23: `capacity_per_day` 0 is out of range: expected 1 to 100000",
            ),
            (
                "capacity_per_day: 400",
                "capacity_per_day: lots",
                "teams.yaml:6:23:",
            ),
            (
                "pacing_per_hour: 60",
                "pacing_per_hour: 10001",
                "teams.yaml:7:22: `pacing_per_hour` 10001 is out of range: expected 1 to 10000",
            ),
            (
                "timezone: Asia/Shanghai",
                "timezone: Mars/Base",
                "teams.yaml:8:15: unknown time zone `Mars/Base`",
            ),
            (
                "hours: 09:00-21:00",
                "hours: 9 to 5",
                "teams.yaml:9:12: expected working hours as HH:MM-HH:MM",
            ),
            (
                "hours: 09:00-21:00",
                "hours: 09:00-09:00",
                "teams.yaml:9:12: expected working hours",
            ),
            (
                "agents: [agent-1, agent-2]",
                "agents: []",
                "teams.yaml:5:13: team `callcentre` has no agents",
            ),
            (
                "agents: [agent-1, agent-2]",
                "agents: [agent-1, agent-1]",
                "teams.yaml:5:23: agent `agent-1` is listed twice",
            ),
            (
                "agents: [agent-1, agent-2]",
                "agents: [Agent One]",
                "teams.yaml:5:14: expected a agent id",
            ),
            (
                "id: callcentre",
                "id: Call Centre",
                "teams.yaml:3:9: expected a team id",
            ),
            (
                "    hours: 09:00-21:00\n",
                "    hours: 09:00-21:00\n    shift: night\n",
                "teams.yaml:10:5: unknown field `shift`",
            ),
        ] {
            let src = GOOD.replacen(from, to, 1);
            let errs = check(&src).expect_err(&src);
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{to}: expected `{want}`, got {errs:?}"
            );
        }
        // The same team entry twice.
        let twice = format!("{GOOD}{}", &GOOD[GOOD.find("  - id").unwrap()..]);
        let errs = check(&twice).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.contains("team id `callcentre` is used twice")),
            "{errs:?}"
        );
        let other = twice.replacen("id: callcentre", "id: second", 1);
        let errs = check(&other).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.contains("agent `agent-1` is already in team `second`")),
            "{errs:?}"
        );
    }
}
