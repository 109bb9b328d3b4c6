//! The workflow file as operators write it. These structs are the file format (and, through
//! schemars, its JSON Schema); `validate` turns them into the checked [`crate::Workflow`].
//! Doc comments here are user documentation: they appear in `campaignd schema`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A campaign workflow: who to reach, when, over which channels, in which waves, and how to
/// judge the result.
#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct WorkflowFile {
    /// Campaign id: lowercase letters, digits and dashes. Unique across `workflows/`.
    #[schemars(with = "String")]
    pub(crate) campaign: Spanned<String>,
    /// What the campaign is for, in a sentence.
    #[serde(default)]
    pub(crate) description: String,
    /// The team that owns the campaign.
    #[serde(default)]
    pub(crate) owner: String,
    /// IANA time zone the schedule, season and quiet hours are judged in, e.g. `Asia/Shanghai`.
    #[schemars(with = "String")]
    pub(crate) timezone: Spanned<String>,
    /// 0-100. When two campaigns want the same subscriber, the higher priority wins.
    #[serde(default)]
    #[schemars(with = "Option<u8>")]
    pub(crate) priority: Option<Spanned<u8>>,
    /// What the campaign is for: `marketing` (the default: opt-out and the frequency cap
    /// apply, and its contacts count towards the cap), `care` (service the subscriber is owed,
    /// such as a low-balance reminder: sent despite a marketing opt-out, outside the cap;
    /// quiet hours still apply) or `alert` (work for staff about the subscriber, who is not
    /// contacted).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) purpose: Option<Spanned<String>>,
    /// When runs start. Without a schedule the campaign only runs when triggered by hand.
    #[serde(default)]
    pub(crate) schedule: Option<ScheduleFile>,
    /// Per-subscriber entry: a subscriber enters when an event of theirs is recorded or when
    /// a condition on them becomes true, gathered at each schedule slot (so the schedule's
    /// cron is how often, e.g. every 15 minutes). Without it, each slot takes the audience.
    #[serde(default)]
    #[schemars(with = "Option<TriggerFile>")]
    pub(crate) trigger: Option<Spanned<TriggerFile>>,
    /// Who is targeted.
    pub(crate) audience: AudienceFile,
    /// Who may enter a run, given earlier runs of this campaign. Without it, everyone the
    /// audience selects enters every run.
    #[serde(default)]
    pub(crate) entry: Option<EntryFile>,
    /// The held-out control group, for evaluation.
    #[serde(default)]
    pub(crate) control: Option<ControlFile>,
    /// Contact policy: quiet hours and frequency cap.
    #[serde(default)]
    pub(crate) policy: PolicyFile,
    /// The waves, in order. The first wave targets the audience; later waves follow an
    /// earlier one (`after`).
    #[schemars(with = "Vec<WaveFile>")]
    pub(crate) waves: Spanned<Vec<WaveFile>>,
    /// What agents may record on this campaign's call and service tasks, e.g.
    /// `[accepted, refused, call_back_later, unreachable, wrong_number]`: 1 to 32 of a-z,
    /// 0-9 and `_` each. Default: accepted, refused, call_back_later, unreachable.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub(crate) outcomes: Option<Spanned<Vec<Spanned<String>>>>,
    /// A survey the campaign's waves collect: each answer (an SMS reply keyword or an
    /// agent's outcome) maps to a score between 0 and 1, e.g. for purchase intent
    /// `certainly buy` 1.0, `probably` 0.8, `undecided` 0.5, `probably not` 0.2,
    /// `certainly not` 0. A later wave's `gate` reads the mean score per group of
    /// respondents; the report shows it per group with the number of respondents.
    #[serde(default)]
    #[schemars(with = "Option<SurveyFile>")]
    pub(crate) survey: Option<Spanned<SurveyFile>>,
    /// How the campaign is judged.
    #[serde(default)]
    pub(crate) evaluate: Option<EvaluateFile>,
    /// Where `channel: preferred` waves read each subscriber's channel preference, when the
    /// catalogue names it otherwise than the shipped `first_channel`, `first_channel_slot`,
    /// `second_channel`, `second_channel_slot`: e.g. `{ first: channel_1, first_slot:
    /// slot_1, second: channel_2 }`. A subscriber's preference is one for every wave, so it
    /// is said once per campaign. Needs a `preferred` wave.
    #[serde(default)]
    #[schemars(with = "Option<PreferenceFile>")]
    pub(crate) preference: Option<Spanned<PreferenceFile>>,
}

/// The catalogue attributes of a subscriber's channel preference.
#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct PreferenceFile {
    /// The first-choice channel: an enum attribute whose values are channel names.
    #[schemars(with = "String")]
    pub(crate) first: Spanned<String>,
    /// Its usual time slot: a text attribute with `format: time_slot` (`HH:MM-HH:MM`).
    /// Without it, the first choice goes at any time quiet hours allow.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) first_slot: Option<Spanned<String>>,
    /// The second-choice channel: an enum attribute whose values are channel names.
    #[schemars(with = "String")]
    pub(crate) second: Spanned<String>,
    /// Its usual time slot, like `first_slot`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) second_slot: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct SurveyFile {
    /// The answers and their scores, e.g. `- { reply: "1", score: 1.0 }` or
    /// `- { outcome: certainly_buy, score: 1.0 }`. A respondent's latest answer in the run
    /// counts; any other reply or outcome is no answer.
    #[schemars(with = "Vec<AnswerFile>")]
    pub(crate) answers: Spanned<Vec<AnswerFile>>,
    /// The subscriber field (a text field such as `value_tier`) respondents are grouped by:
    /// the score is computed per group, and a gate opens per group.
    #[schemars(with = "String")]
    pub(crate) group_by: Spanned<String>,
}

/// One survey answer: exactly one of `reply` or `outcome`, with its `score`.
#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct AnswerFile {
    /// An SMS reply keyword (the reply's first word, case-insensitive), e.g. `"1"`. The SMS
    /// waves that list it among their `responses` (`reply: "1"`) collect it; a wave taking
    /// any reply (`*`) does not.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) reply: Option<Spanned<String>>,
    /// An agent's outcome on a call or service task, one of the workflow's `outcomes`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) outcome: Option<Spanned<String>>,
    /// The answer's score, 0 to 1 with at most three decimals (e.g. the probability of
    /// buying it stands for).
    #[schemars(with = "f64")]
    pub(crate) score: Spanned<f64>,
}

/// `gate`: conditions a following wave's groups must meet to be targeted.
#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct GateFile {
    /// The survey's mean score per group (`survey.group_by`), over the answers recorded for
    /// the waves this one follows in the same run: P = Σ score / respondents. Only the
    /// members of groups with P at least `min` (and enough respondents) are targeted; the
    /// others are left out with the reason `gate:purchase_intent`.
    #[schemars(with = "IntentGateFile")]
    pub(crate) purchase_intent: Spanned<IntentGateFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct IntentGateFile {
    /// The lowest mean score a group may have, 0 to 1 with at most three decimals, e.g. `0.4`.
    #[schemars(with = "f64")]
    pub(crate) min: Spanned<f64>,
    /// The fewest respondents a group needs before its score is trusted; a group with fewer
    /// is left out. Default 1; 1 to 1,000,000.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub(crate) min_respondents: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct ScheduleFile {
    /// Cron expression with 5 fields (`min hour day month weekday`) or 6 (seconds first),
    /// e.g. `0 0 10 * * Mon-Fri`. Judged in the campaign's time zone.
    #[schemars(with = "String")]
    pub(crate) cron: Spanned<String>,
    /// Yearly window outside which slots are skipped, e.g. `{ from: "08-15", to: "10-31" }`.
    #[serde(default)]
    pub(crate) season: Option<SeasonFile>,
    /// Several windows (instead of `season`), each a season of its own: yearly days
    /// `{ from: "07-01", to: "08-31" }`, a calendar's named period
    /// `{ period: campus/winter-vacation }` (dated per year in
    /// `workflows/calendars/campus/periods.yaml`), or the days before one
    /// `{ before: campus/winter-vacation, days: 21 }`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<WindowFile>>")]
    pub(crate) windows: Option<Spanned<Vec<WindowFile>>>,
    /// A calendar in `workflows/calendars/` whose public holidays are skipped, e.g. `cn-holidays`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) calendar: Option<Spanned<String>>,
    /// What to do with slots missed while the daemon was down: `skip` them all, or run the
    /// `last` one if it is still inside `catch_up_window`.
    #[serde(default)]
    pub(crate) catch_up: CatchUpFile,
    /// How late a missed slot may still run under `catch_up: last`. Default `1h`; 1m to 366d.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) catch_up_window: Option<Spanned<String>>,
    /// What a slot does while an earlier run of the campaign is still open: `skip` the slot
    /// (recorded, reason `previous_run_open`; the default), `queue` it until that run
    /// finishes (as late as the catch-up rules allow, then it is recorded `missed`), or
    /// `close` the earlier run (its unsent messages expire, its windows close now and its
    /// report is made) and start the new one, or run them in `parallel` (each run with its
    /// own entry rules, caps and control). A campaign with a `trigger` runs in `parallel`.
    #[serde(default)]
    #[schemars(with = "Option<OverlapFile>")]
    pub(crate) overlap: Option<Spanned<OverlapFile>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OverlapFile {
    #[default]
    Skip,
    Queue,
    Close,
    Parallel,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CatchUpFile {
    Skip,
    #[default]
    Last,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct SeasonFile {
    /// First day of the window, `MM-DD`.
    #[schemars(with = "String")]
    pub(crate) from: Spanned<String>,
    /// Last day of the window, `MM-DD`; may be earlier than `from` for a window over New Year.
    #[schemars(with = "String")]
    pub(crate) to: Spanned<String>,
}

/// One of `schedule.windows`: exactly one of `from`+`to`, `period`, or `before`+`days`.
#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct WindowFile {
    /// First day of a yearly window, `MM-DD`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) from: Option<Spanned<String>>,
    /// Last day of a yearly window, `MM-DD`; may be earlier than `from` (over New Year).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) to: Option<Spanned<String>>,
    /// A named period of a calendar, `CALENDAR/PERIOD`, e.g. `campus/summer-vacation`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) period: Option<Spanned<String>>,
    /// The days just before each occurrence of a named period, `CALENDAR/PERIOD`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) before: Option<Spanned<String>>,
    /// How many days before the period (with `before`), 1 to 120.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub(crate) days: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct AudienceFile {
    /// A named segment from `workflows/segments.yaml`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) segment: Option<Spanned<String>>,
    /// A filter over subscriber fields, e.g. `arpu_3m >= 10 and brand != 'gotone'`.
    #[serde(default, rename = "where")]
    #[schemars(with = "Option<String>")]
    pub(crate) filter: Option<Spanned<String>>,
    /// Named segments whose members are left out (each with the reason `exclude:<name>`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(crate) exclude: Vec<Spanned<String>>,
    /// Only subscribers with an open alert of a monitor (`workflows/monitors/`) at this level
    /// or above, e.g. `{ monitor: core-anomaly, level: high }`: a retention campaign on a
    /// monitor's warnings.
    #[serde(default)]
    pub(crate) alerts: Option<AlertsFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct AlertsFile {
    /// A monitor id: the file `workflows/monitors/<id>.yaml`.
    #[schemars(with = "String")]
    pub(crate) monitor: Spanned<String>,
    /// One of the monitor's levels; alerts at higher levels are included.
    #[schemars(with = "String")]
    pub(crate) level: Spanned<String>,
}

/// `trigger`: exactly one of `event` or `when`.
#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct TriggerFile {
    /// An event type (`complaint`, `top_up`, `activation`, `port_out_enquiry`): each such
    /// event recorded for a subscriber of the audience enters them once.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) event: Option<Spanned<String>>,
    /// With `event`: how old an event may be when it is gathered (by when it happened).
    /// Default `1d`; older ones, and those from before the campaign existed, never enter.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) within: Option<Spanned<String>>,
    /// A condition over subscriber attributes (derived ones included), e.g. `balance < 5`:
    /// a subscriber of the audience enters when it becomes true, once per episode (again
    /// only after a gather found it false).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) when: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct EntryFile {
    /// How often a subscriber may enter: `run` (every run), `campaign` (once, ever), `year`
    /// (once per calendar year in the campaign's time zone) or `season` (once per season of
    /// the schedule). Entering means being planned into the first wave, treated or control.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) once_per: Option<Spanned<String>>,
    /// Not again within this long of the last entry, e.g. `30d`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) cooldown: Option<Spanned<String>>,
    /// Leave out who reached the goal (`evaluate.goal`) in an earlier run. Default: true when
    /// the campaign has an event goal; not allowed with a retention goal (`retained`), which
    /// has no conversion.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub(crate) skip_converted: Option<Spanned<bool>>,
    /// Leave out who responded to any wave of an earlier run. Default: false.
    #[serde(default)]
    pub(crate) skip_responded: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct ControlFile {
    /// Share of the audience held out, between 0 and 0.5, e.g. `0.10`.
    #[schemars(with = "f64")]
    pub(crate) share: Spanned<f64>,
    /// A subscriber field to stratify by, so each stratum holds out the same share.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) stratify_by: Option<Spanned<String>>,
    /// Changes which subscribers fall in the control group; by default the campaign id, so
    /// the holdout is stable across runs.
    #[serde(default)]
    pub(crate) salt: Option<String>,
    /// How long a subscriber drawn into control stays there, across runs: `year` (the
    /// default: the calendar year in the campaign's time zone), `season` (the schedule's
    /// season a run falls in: an occurrence of `schedule.season` or of one of
    /// `schedule.windows`), a whole number of days such as
    /// `90d` (periods counted from 1970-01-01), or `run` (each run draws its own control
    /// group, and last run's control members may be treated). Members are stored in the
    /// `holdout` table and listed by `campaignd holdout CAMPAIGN`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) hold: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// Local hours in which nobody is contacted, `HH:MM-HH:MM`, e.g. `21:00-08:00`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) quiet_hours: Option<Spanned<String>>,
    /// Frequency cap over all campaigns, e.g. `{ count: 2, per: 7d }`.
    #[serde(default)]
    pub(crate) max_contacts: Option<CapFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct CapFile {
    pub(crate) count: u32,
    /// The period the count applies to, e.g. `7d`; 1m to 366d.
    #[schemars(with = "String")]
    pub(crate) per: Spanned<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct WaveFile {
    /// Wave id, unique in the file: 1 to 64 of a-z, 0-9, `_`, `-`.
    #[schemars(with = "String")]
    pub(crate) id: Spanned<String>,
    /// The wave this one follows; it is planned when that wave's response window closes, or
    /// a delay after it: `sms_offer + 2d` (1m to 366d).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) after: Option<Spanned<String>>,
    /// The local time of day (the campaign's zone) a following wave starts at, once it is
    /// due: `next 10:00` (or `10:00`): the first 10:00 at or after the window closed (plus
    /// the delay).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) at: Option<Spanned<String>>,
    /// Who a following wave targets among the treatment subscribers of `after`:
    /// `no_response` (the default), `all`, `delivered_silent`, `undelivered`,
    /// `{ replied: [KEYWORD, ...] }`, `{ outcome: [OUTCOME, ...] }` or
    /// `{ event: { type: TYPE, value: VALUE } }`.
    #[serde(default)]
    #[schemars(with = "Option<TargetsFile>")]
    pub(crate) targets: Option<Spanned<TargetsFile>>,
    /// Only for groups whose survey score passes, e.g.
    /// `{ purchase_intent: { min: 0.4, min_respondents: 20 } }` (needs `survey`, and a wave
    /// before this one that collects its answers).
    #[serde(default)]
    #[schemars(with = "Option<GateFile>")]
    pub(crate) gate: Option<Spanned<GateFile>>,
    /// An extra filter for this wave only.
    #[serde(default, rename = "where")]
    #[schemars(with = "Option<String>")]
    pub(crate) filter: Option<Spanned<String>>,
    /// `sms`, `outbound_call` (tasks for call-centre agents), `service` (tasks for service
    /// staff), `email` (a mail to the subscriber's `format: email` attribute), or
    /// `preferred`: each subscriber on their first-choice channel inside its usual slot, and
    /// on their second choice when the first did not reach them (needs `templates`).
    #[schemars(with = "String")]
    pub(crate) channel: Spanned<String>,
    /// For `channel: preferred`: the template per channel a subscriber may prefer, e.g.
    /// `{ sms: offer.txt, email: offer_mail.txt, outbound_call: offer_call.txt }` (`sms`,
    /// `email`, `outbound_call`, `service`; a call needs `team`, a service task
    /// `service_team`). A subscriber whose first choice has
    /// no template here is contacted on their second choice; one with neither is left out.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub(crate) templates: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Message or call-script template, a path relative to the workflow file. `{field}`
    /// inserts a subscriber field (see `campaignd schema --attributes` for the list). An
    /// `email` wave's template starts with `Subject: <subject>`, then a blank line, then
    /// the body.
    /// Required unless the wave has `variants` (and not allowed with them).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) template: Option<Spanned<String>>,
    /// Message or offer variants tested against each other: each treatment subscriber gets
    /// one, drawn by weight (the same one if the wave is planned again), and the report shows
    /// each variant's uplift against the run's shared control. 2 to 16 entries, instead of
    /// `template`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<VariantFile>>")]
    pub(crate) variants: Option<Spanned<Vec<VariantFile>>>,
    /// The agents' team, for `outbound_call` and `service` waves: 1 to 64 of a-z, 0-9, `_`, `-`.
    /// For a `service` wave it names a staff id (or team) of `staff.yaml`, when there is one:
    /// that entry receives the digest of the wave's new tasks.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) team: Option<Spanned<String>>,
    /// For `channel: preferred` with a `service` message: who works the tasks of the
    /// subscribers preferring `service` (the wave's `team` works its calls): 1 to 64 of
    /// a-z, 0-9, `_`, `-`, a staff id of `staff.yaml` when there is one.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) service_team: Option<Spanned<String>>,
    /// For `outbound_call` and `service` waves: how long staff have to work a task, e.g.
    /// `2d`; 1h to 30d. A task is due this long after it is opened; `GET /tasks` shows it
    /// overdue after that.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) sla: Option<Spanned<String>>,
    /// For waves with an `sla`: the staff id (`staff.yaml`) an overdue task is escalated to,
    /// once; it is in that person's next task digest. Not on a `preferred` wave, whose
    /// escalation is the fallback to the second choice.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) escalate_to: Option<Spanned<String>>,
    /// How long responses count for this wave, e.g. `3d`; 1m to 366d.
    #[schemars(with = "String")]
    pub(crate) respond_within: Spanned<String>,
    /// Latest time after a contact's planned send time that it may still go out; later it
    /// expires unsent. Default `12h` (or `respond_within` if shorter); 1m to 366d, and no
    /// longer than `respond_within`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) send_within: Option<Spanned<String>>,
    /// What counts as a response. Default: any reply for SMS, outcome `accepted` for tasks.
    #[serde(default)]
    pub(crate) responses: Vec<ResponseFile>,
    /// What happens to a message left in doubt (handed to the gateway, its answer never
    /// recorded because campaignd died, or a gateway that timed out). `at_least_once`
    /// (default): it waits for the gateway's report (Kannel's SMSC acknowledgement) and is
    /// sent again only if none comes, so nobody is missed and a repeat is rare.
    /// `at_most_once`: it is never sent again; without a report it is recorded `unknown`.
    #[serde(default)]
    pub(crate) delivery: DeliveryFile,
}

impl WaveFile {
    /// Every template path the wave names: its own and its variants' (each per channel too).
    pub(crate) fn template_paths(&self) -> impl Iterator<Item = &Spanned<String>> {
        self.template
            .iter()
            .chain(
                self.variants
                    .iter()
                    .flat_map(|v| v.value.iter())
                    .flat_map(|v| {
                        v.template
                            .iter()
                            .chain(v.templates.iter().flat_map(|t| t.value.values()))
                    }),
            )
            .chain(self.templates.iter().flat_map(|t| t.value.values()))
    }
}

/// One experiment arm of a wave.
#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct VariantFile {
    /// The variant's name in the report: 1 to 32 of a-z, 0-9, `_`; unique in the wave.
    #[schemars(with = "String")]
    pub(crate) name: Spanned<String>,
    /// Its message or call-script template, a path relative to the workflow file (like a
    /// wave's `template`). Required, except in a `channel: preferred` wave.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) template: Option<Spanned<String>>,
    /// In a `channel: preferred` wave, instead of `template`: the variant's template per
    /// channel (like the wave's `templates`), on the same channels as every other variant.
    /// A subscriber keeps their variant on the fallback to their second choice.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub(crate) templates: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Its share of the wave's treatment subscribers relative to the other variants: a whole
    /// number, 1 to 1000 (`weight: 1` each splits evenly).
    #[schemars(with = "i64")]
    pub(crate) weight: Spanned<i64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeliveryFile {
    #[default]
    AtLeastOnce,
    AtMostOnce,
}

/// Which of the earlier wave's treatment subscribers a following wave targets: its action
/// path.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum TargetsFile {
    /// Who did not respond (the default).
    #[default]
    NoResponse,
    /// Everyone the earlier wave targeted.
    All,
    /// SMS only: the message was delivered and nobody responded.
    DeliveredSilent,
    /// SMS only: the message never reached them (undelivered, rejected by the gateway, or
    /// expired unsent).
    Undelivered,
    /// SMS only: who replied with one of these keywords (the reply's first word,
    /// case-insensitive). The earlier wave must accept each of them as a response (`reply:`).
    Replied(#[schemars(with = "Vec<String>")] Vec<Spanned<String>>),
    /// Task waves only: whose recorded outcome is one of these (declared in `outcomes`).
    Outcome(#[schemars(with = "Vec<String>")] Vec<Spanned<String>>),
    /// Who had this business event while the earlier wave's window was open.
    Event(EventFile),
}

/// One kind of response.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ResponseFile {
    /// An SMS reply whose first word is this keyword (case-insensitive); `*` for any reply.
    /// SMS waves only; an opt-out word (td, stop, unsubscribe, 退订, n) is not allowed.
    Reply(#[schemars(with = "String")] Spanned<String>),
    /// A business event such as an order or a top-up.
    Event(EventFile),
    /// An agent's recorded outcome, one of the workflow's `outcomes` (by default accepted,
    /// refused, call_back_later or unreachable).
    /// Task waves (outbound_call, service) only.
    Outcome(#[schemars(with = "String")] Spanned<String>),
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct EventFile {
    /// Event type, e.g. `order` or `topup`: 1 to 64 of a-z, A-Z, 0-9, `_`, `-`, `.`, as the
    /// events API accepts them.
    #[serde(rename = "type")]
    #[schemars(with = "String")]
    pub(crate) kind: Spanned<String>,
    /// Event value to match, e.g. the offer id; any value when absent.
    #[serde(default)]
    pub(crate) value: Option<String>,
}

/// `evaluate.goal`: either an event (`type`, optionally `value`) or retention (`retained`,
/// optionally `lost_on`). One struct rather than an untagged enum, so a mistake in either
/// form gets a located error naming the keys of both.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct GoalFile {
    /// Event type that counts as a conversion, e.g. `order` or `topup`: 1 to 64 of a-z,
    /// A-Z, 0-9, `_`, `-`, `.`, as the events API accepts them.
    #[serde(rename = "type", default)]
    #[schemars(with = "Option<String>")]
    pub(crate) kind: Option<Spanned<String>>,
    /// Event value to match, e.g. the offer id; any value when absent.
    #[serde(default)]
    pub(crate) value: Option<String>,
    /// Retention goal: a member is retained when no `lost_on` event is recorded within this
    /// long after the run's start, e.g. `90d` (1m to 366d).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) retained: Option<Spanned<String>>,
    /// Event types that mean the subscriber was lost (default `[churn, port_out]`, as a
    /// monitor's `closes_on`). Only with `retained`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub(crate) lost_on: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct EvaluateFile {
    /// What counts as success, compared between treatment and control: a business event
    /// (`{ type: order, value: core-bundle }`: converted when it arrives) or retention
    /// (`{ retained: 90d }`: retained when no churn or port-out event comes within 90 days
    /// of the run's start).
    #[serde(default)]
    #[schemars(with = "Option<GoalFile>")]
    pub(crate) goal: Option<Spanned<GoalFile>>,
    /// Subscriber field to break the evaluation down by. Default: the control stratum.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(crate) breakdown: Option<Spanned<String>>,
    /// Staff addresses the report is e-mailed to when the run ends, plain `name@domain.tld`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(crate) email: Vec<Spanned<String>>,
}

/// `workflows/segments.yaml`: named audiences shared by workflows.
#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct SegmentsFile {
    pub(crate) segments: BTreeMap<String, SegmentFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct SegmentFile {
    /// What the segment is, for people reading the file.
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) description: String,
    /// The filter that defines the segment.
    #[serde(rename = "where")]
    #[schemars(with = "String")]
    pub(crate) filter: Spanned<String>,
}
