//! The checked workflow: what the engine runs. Built only by [`crate::compile`], so every
//! value here has passed validation (parse, don't validate).

use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveTime};
/// A wave's channel: one list, in `domain` (the store and the channels name it too).
pub use domain::{ChannelKind, TimeSlot};

use crate::bundle::Bundle;
use crate::expr::Expr;
use crate::template::Template;

#[derive(Debug, Clone)]
pub struct Workflow {
    pub campaign: String,
    pub description: String,
    pub owner: String,
    pub timezone: chrono_tz::Tz,
    pub priority: u8,
    /// Marketing unless the file says otherwise; decides whether opt-out and cap apply.
    pub purpose: domain::Purpose,
    pub schedule: Option<Schedule>,
    /// Per-subscriber entry, gathered at each slot; `None`: each slot takes the audience.
    pub trigger: Option<Trigger>,
    pub audience: Audience,
    pub entry: Entry,
    pub control: Option<Control>,
    pub policy: Policy,
    pub waves: Vec<Wave>,
    /// What agents may record on this campaign's tasks (`outcomes`, or
    /// [`crate::rules::OUTCOMES`]).
    pub outcomes: Vec<String>,
    /// The answers the waves collect and how they score (`survey`).
    pub survey: Option<Survey>,
    pub evaluate: Evaluate,
    /// Where `channel: preferred` waves read each subscriber's preference (`preference`,
    /// or the shipped names).
    pub preference: Preference,
    /// The subscriber attributes this workflow was checked against (the bundle's
    /// `attributes.yaml`, or the shipped catalogue).
    pub catalogue: std::sync::Arc<catalogue::Catalogue>,
    /// The exact inputs this workflow was compiled from; stored as the version.
    pub bundle: Bundle,
    /// Content hash of the bundle (hex SHA-256): the version id.
    pub hash: String,
}

impl Workflow {
    pub fn wave(&self, id: &str) -> Option<&Wave> {
        self.waves.iter().find(|w| w.id == id)
    }

    /// The waves that can collect an answer of the survey (none without one): where a
    /// run's answers are read from for its report.
    pub fn survey_waves(&self) -> Vec<String> {
        let Some(s) = &self.survey else {
            return Vec::new();
        };
        self.waves
            .iter()
            .filter(|w| s.answers.iter().any(|a| w.collects(&a.kind)))
            .map(|w| w.id.clone())
            .collect()
    }

    /// The first 12 hex digits of the content hash, for display.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12]
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: croner::Cron,
    /// The six-field form of the expression (seconds first), as tokio-cron-scheduler wants it.
    pub cron_text: String,
    /// The windows slots run in (`schedule.season` or `schedule.windows`); `None`: all year.
    pub season: Option<Seasons>,
    pub calendar: Option<String>,
    pub catch_up: CatchUp,
    pub catch_up_window: Duration,
    pub overlap: Overlap,
}

/// What enters a subscriber into a triggered campaign's run.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// An event of this type recorded for them, at most `within` old when gathered.
    Event { kind: String, within: Duration },
    /// `when` becoming true for them: one entry per episode.
    Condition { when: Expr, text: String },
}

impl Trigger {
    /// The funnel stage that counts a run's entrants.
    pub fn stage(&self) -> String {
        match self {
            Trigger::Event { kind, .. } => format!("trigger:event:{kind}"),
            Trigger::Condition { .. } => "trigger:when".to_owned(),
        }
    }
}

/// What a schedule slot does while an earlier run of the campaign is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// The slot is recorded skipped (`previous_run_open`).
    Skip,
    /// The slot waits for the open run to finish, within the catch-up rules.
    Queue,
    /// The open run is closed now (unsent messages expire, windows close) and the slot runs.
    Close,
    /// The slot runs beside the open run.
    Parallel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    Skip,
    Last,
}

/// A yearly window of days, inclusive at both ends; may wrap over New Year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Season {
    pub from: (u32, u32),
    pub to: (u32, u32),
}

impl Season {
    pub fn contains(&self, date: NaiveDate) -> bool {
        let d = (date.month(), date.day());
        if self.from <= self.to {
            self.from <= d && d <= self.to
        } else {
            d >= self.from || d <= self.to
        }
    }

    /// The occurrence that starts in `year` (it ends the next year when it wraps New Year).
    fn in_year(&self, year: i32) -> Option<Occurrence> {
        let from = NaiveDate::from_ymd_opt(year, self.from.0, self.from.1)?;
        let end_year = if self.from <= self.to { year } else { year + 1 };
        // 02-29 ends on 02-28 in a common year, and starts on 03-01.
        let to = NaiveDate::from_ymd_opt(end_year, self.to.0, self.to.1)
            .or_else(|| NaiveDate::from_ymd_opt(end_year, self.to.0, self.to.1 - 1))?;
        Some(Occurrence { from, to })
    }
}

/// One window of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// The same days every year (`{ from: "08-15", to: "10-31" }`).
    Yearly(Season),
    /// The dated occurrences of a calendar's named period (`{ period: campus/winter-vacation }`),
    /// already shifted for `before`; sorted, none overlapping.
    Dated(Vec<Occurrence>),
}

/// The dates of one occurrence of a window, inclusive at both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Occurrence {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Occurrence {
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.from <= date && date <= self.to
    }
}

/// The windows a schedule runs in. Each occurrence of a window is a season:
/// `entry.once_per: season` and `control.hold: season` count from the start of the
/// occurrence a run falls in (the latest one begun on or before its day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seasons {
    windows: Vec<Window>,
    /// Written as the single `schedule.season`: seasons are then named by their year, as
    /// they were before there could be several, so stored holdouts keep their label.
    by_year: bool,
}

impl Seasons {
    /// One yearly window, as `schedule.season` writes it.
    pub fn yearly(season: Season) -> Seasons {
        Seasons {
            windows: vec![Window::Yearly(season)],
            by_year: true,
        }
    }

    /// Several windows, as `schedule.windows` writes them.
    pub fn windows(windows: Vec<Window>) -> Seasons {
        Seasons {
            windows,
            by_year: false,
        }
    }

    pub fn contains(&self, date: NaiveDate) -> bool {
        self.windows.iter().any(|w| match w {
            Window::Yearly(s) => s.contains(date),
            Window::Dated(occ) => occ.iter().any(|o| o.contains(date)),
        })
    }

    /// The season `date` belongs to: the occurrence of any window that began last on or
    /// before `date` (a day between seasons belongs to the one just ended). `None` before
    /// the first dated occurrence.
    pub fn occurrence(&self, date: NaiveDate) -> Option<Occurrence> {
        let mut best: Option<Occurrence> = None;
        let mut consider = |o: Occurrence| {
            if o.from <= date && best.is_none_or(|b| o.from > b.from) {
                best = Some(o);
            }
        };
        for w in &self.windows {
            match w {
                Window::Yearly(s) => {
                    for year in [date.year() - 1, date.year()] {
                        if let Some(o) = s.in_year(year) {
                            consider(o);
                        }
                    }
                }
                Window::Dated(occ) => occ.iter().copied().for_each(&mut consider),
            }
        }
        best
    }

    /// The name of the season `date` belongs to, as holdouts store it.
    pub fn label(&self, date: NaiveDate) -> String {
        match self.occurrence(date) {
            Some(o) if self.by_year => format!("season-{}", o.from.year()),
            Some(o) => format!("season-{}", o.from),
            None => "before-first-season".to_owned(),
        }
    }

    /// Every occurrence that overlaps the years `from..=to`, for checks over a horizon.
    pub(crate) fn occurrences_in(&self, from: i32, to: i32) -> Vec<Occurrence> {
        let mut out = Vec::new();
        for w in &self.windows {
            match w {
                Window::Yearly(s) => out.extend((from - 1..=to).filter_map(|y| s.in_year(y))),
                Window::Dated(occ) => out.extend(occ.iter().copied()),
            }
        }
        out.sort();
        out
    }
}

#[derive(Debug, Clone)]
pub struct Audience {
    pub segment: Option<(String, Expr)>,
    pub filter: Option<Expr>,
    pub exclude: Vec<(String, Expr)>,
    /// Only subscribers with an open alert of this monitor at this level or above.
    pub alerts: Option<AlertAudience>,
}

/// `audience.alerts`: a monitor's open alerts at a level or above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertAudience {
    pub monitor: String,
    pub level: String,
    /// The level's position in the monitor's list (0 = lowest), as stored on episodes.
    pub min_rank: i32,
}

#[derive(Debug, Clone)]
pub struct Control {
    pub share: f64,
    pub stratify_by: Option<String>,
    pub salt: String,
    pub hold: Hold,
}

/// How long a control member stays in control (`control.hold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Each run draws its own control group.
    Run,
    /// The schedule's season window: a checked workflow with this hold has a season.
    Season,
    /// The calendar year in the campaign's time zone.
    Year,
    /// Fixed periods of this many days, counted from 1970-01-01 (UTC).
    Days(u32),
}

impl Workflow {
    /// The label of the holdout period (under `hold`, this workflow's `control.hold`) that a
    /// run planned at `now` (Unix milliseconds) falls in: control members drawn under one
    /// label stay in control for every run with that label.
    pub fn holdout_period(&self, hold: Hold, now: i64, run_id: i64) -> String {
        let local = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now)
            .unwrap_or_default()
            .with_timezone(&self.timezone)
            .date_naive();
        match hold {
            Hold::Run => format!("run-{run_id}"),
            Hold::Year => local.year().to_string(),
            Hold::Season => match self.schedule.as_ref().and_then(|s| s.season.as_ref()) {
                Some(seasons) => seasons.label(local),
                // A checked workflow holding for the season has one.
                None => format!("season-{}", local.year()),
            },
            Hold::Days(days) => {
                let day_ms = 86_400_000_i64;
                let span = i64::from(days) * day_ms;
                let start = now.div_euclid(span) * span;
                let date = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(start)
                    .unwrap_or_default()
                    .date_naive();
                format!("{days}d-{date}")
            }
        }
    }
}

/// Who may enter a run, given the campaign's earlier runs (`entry:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    pub once_per: OncePer,
    pub cooldown: Option<Duration>,
    pub skip_converted: bool,
    pub skip_responded: bool,
}

/// How often a subscriber may enter the campaign's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OncePer {
    /// Every run: no memory of earlier runs.
    #[default]
    Run,
    /// Once, ever.
    Campaign,
    /// Once per calendar year in the campaign's time zone.
    Year,
    /// Once per season of the schedule (the campaign has one).
    Season,
}

impl OncePer {
    pub const ALL: [OncePer; 4] = [
        OncePer::Run,
        OncePer::Campaign,
        OncePer::Year,
        OncePer::Season,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            OncePer::Run => "run",
            OncePer::Campaign => "campaign",
            OncePer::Year => "year",
            OncePer::Season => "season",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub quiet_hours: Option<QuietHours>,
    pub max_contacts: Option<Cap>,
}

/// Local hours in which nobody is contacted: `[start, end)`, wrapping over midnight when
/// `start > end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug, Clone)]
pub struct Wave {
    pub id: String,
    pub after: Option<String>,
    /// How long after `after`'s window closes this wave is due (`after: W + 2d`).
    pub delay: Duration,
    /// The local time of day it starts at once due (`at: next 10:00`).
    pub at: Option<chrono::NaiveTime>,
    pub targets: Targets,
    pub filter: Option<Expr>,
    pub channel: WaveChannel,
    /// The wave's one message; `None` exactly when it has `variants` or is `preferred`.
    pub template: Option<Template>,
    /// `channel: preferred`: the message on each channel a subscriber may prefer (at least
    /// one; empty for a one-channel wave, and for a preferred wave with `variants`, whose
    /// variants each have theirs on the same channels).
    pub preferred: Vec<(ChannelKind, Template)>,
    /// Experiment arms, each with its own message (empty without `variants`).
    pub variants: Vec<Variant>,
    pub team: Option<String>,
    /// A preferred wave's staff who work its `service` tasks (`team` works its calls).
    pub service_team: Option<String>,
    /// Task waves: how long after a task opens it is due.
    pub sla: Option<Duration>,
    /// Task waves with an `sla`: the staff id an overdue task is escalated to.
    pub escalate_to: Option<String>,
    pub respond_within: Duration,
    pub send_within: Duration,
    pub responses: Vec<ResponseRule>,
    pub delivery: Delivery,
    /// Only groups whose survey score passes (`gate.purchase_intent`).
    pub gate: Option<IntentGate>,
}

/// What a wave sends on: one channel for everyone, or each subscriber's preferred one
/// (`channel: preferred`: the first choice in its usual slot, the second when the first
/// did not reach them). Stored as [`WaveChannel::as_str`] (`wave_run.channel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveChannel {
    One(ChannelKind),
    Preferred,
}

impl WaveChannel {
    /// The text a workflow writes and the store keeps: the channel's, or `preferred`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WaveChannel::One(c) => c.as_str(),
            WaveChannel::Preferred => PREFERRED,
        }
    }

    /// The one channel of a one-channel wave.
    pub fn single(self) -> Option<ChannelKind> {
        match self {
            WaveChannel::One(c) => Some(c),
            WaveChannel::Preferred => None,
        }
    }
}

/// `channel: preferred` as written.
pub const PREFERRED: &str = "preferred";

/// The shipped catalogue's names of a subscriber's channel preference (first choice, its
/// slot, second choice, its slot): what [`Preference::default`] reads, written nowhere else.
pub const PREFERENCE_ATTRIBUTES: [&str; 4] = [
    "first_channel",
    "first_channel_slot",
    "second_channel",
    "second_channel_slot",
];

/// Where a `channel: preferred` wave reads a subscriber's preference (`preference:`): the
/// catalogue attributes naming the first and second choice (enums of channel names) and
/// their usual slots (text with `format: time_slot`; none: any time quiet hours allow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preference {
    pub first: String,
    pub first_slot: Option<String>,
    pub second: String,
    pub second_slot: Option<String>,
}

impl Default for Preference {
    fn default() -> Self {
        let [first, first_slot, second, second_slot] = PREFERENCE_ATTRIBUTES;
        Preference {
            first: first.into(),
            first_slot: Some(first_slot.into()),
            second: second.into(),
            second_slot: Some(second_slot.into()),
        }
    }
}

impl Preference {
    /// The attributes in the order a route is read (first, its slot, second, its slot);
    /// `None` for a slot the campaign does not read.
    pub fn attributes(&self) -> [Option<&str>; 4] {
        [
            Some(self.first.as_str()),
            self.first_slot.as_deref(),
            Some(self.second.as_str()),
            self.second_slot.as_deref(),
        ]
    }
}

/// One experiment arm of a wave (`variants`): its name in the report, its whole-number
/// weight among the wave's variants, and its message.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub weight: u32,
    /// Its message on a one-channel wave (`None` exactly in a preferred wave).
    pub template: Option<Template>,
    /// In a preferred wave: its message per channel, on the wave's channels (empty
    /// otherwise).
    pub preferred: Vec<(ChannelKind, Template)>,
}

impl Wave {
    /// The message a contact of this wave gets: its variant's (the planner stored it on the
    /// contact), or the wave's one template. `None` for a variant the wave does not have.
    pub fn template_for(&self, variant: Option<&str>) -> Option<&Template> {
        if !self.preferred.is_empty() {
            return None;
        }
        match variant {
            None => self.template.as_ref(),
            Some(name) => self
                .variants
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.template.as_ref()),
        }
    }

    /// The message of a contact on `channel` (a preferred wave's template for that
    /// channel, its variant's when it has one), else as [`Wave::template_for`]. `None` for
    /// a channel or variant the wave does not have.
    pub fn template_on(&self, channel: ChannelKind, variant: Option<&str>) -> Option<&Template> {
        fn on(by: &[(ChannelKind, Template)], channel: ChannelKind) -> Option<&Template> {
            by.iter().find(|(c, _)| *c == channel).map(|(_, t)| t)
        }
        match (self.channel, variant) {
            (WaveChannel::Preferred, None) => on(&self.preferred, channel),
            (WaveChannel::Preferred, Some(name)) => self
                .variants
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| on(&v.preferred, channel)),
            (WaveChannel::One(_), _) => self.template_for(variant),
        }
    }

    /// Whose worklist a task of this wave on `channel` goes on: a preferred wave's
    /// `service_team` for a service task, else its `team`.
    pub fn team_on(&self, channel: ChannelKind) -> Option<&str> {
        match (self.channel, channel) {
            (WaveChannel::Preferred, ChannelKind::Service) => self.service_team.as_deref(),
            _ => self.team.as_deref(),
        }
    }

    /// Every channel the wave may send on (a preferred wave's variants all have the same).
    pub fn channels(&self) -> Vec<ChannelKind> {
        match self.channel {
            WaveChannel::One(c) => vec![c],
            WaveChannel::Preferred => self
                .variants
                .first()
                .map_or(&self.preferred, |v| &v.preferred)
                .iter()
                .map(|(c, _)| *c)
                .collect(),
        }
    }

    /// Whether it may send on `channel`.
    pub fn may_use(&self, channel: ChannelKind) -> bool {
        self.channels().contains(&channel)
    }

    /// Every message the wave may send.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.template
            .iter()
            .chain(
                self.variants
                    .iter()
                    .flat_map(|v| v.template.iter().chain(v.preferred.iter().map(|(_, t)| t))),
            )
            .chain(self.preferred.iter().map(|(_, t)| t))
    }

    /// Whether this wave collects `answer`: a reply only on an SMS wave that lists its
    /// keyword among its responses (tracking records no reply a wave does not accept, and a
    /// wave taking any reply, `*`, asked something else: "reply 1 to accept" is no survey
    /// answer), an outcome on any task wave (tracking records every outcome an agent gives).
    pub fn collects(&self, answer: &AnswerKind) -> bool {
        match answer {
            AnswerKind::Reply(k) => {
                self.may_use(ChannelKind::Sms)
                    && self
                        .responses
                        .iter()
                        .any(|r| matches!(r, ResponseRule::Reply(a) if a == k))
            }
            AnswerKind::Outcome(_) => self.channels().into_iter().any(ChannelKind::is_task),
        }
    }

    /// Whether it waits past the close of the wave it follows (a delay or a time of day).
    pub fn waits(&self) -> bool {
        !self.delay.is_zero() || self.at.is_some()
    }

    /// When this following wave may be planned, given that the wave it follows closed at
    /// `closed_at` (Unix ms): the delay after it, then the first `at` in `tz` at or after
    /// that. A local time a clock change skips is taken an hour later.
    pub fn due_after(&self, closed_at: i64, tz: chrono_tz::Tz) -> i64 {
        use chrono::TimeZone as _;
        let due =
            closed_at.saturating_add(i64::try_from(self.delay.as_millis()).unwrap_or(i64::MAX));
        let Some(at) = self.at else { return due };
        let Some(local) = tz.timestamp_millis_opt(due).single() else {
            return due;
        };
        let mut day = local.date_naive();
        loop {
            let wall = day.and_time(at);
            let start = tz
                .from_local_datetime(&wall)
                .earliest()
                .or_else(|| {
                    tz.from_local_datetime(&(wall + chrono::Duration::hours(1)))
                        .earliest()
                })
                .map(|t| t.timestamp_millis());
            match start {
                Some(t) if t >= due => return t,
                _ => match day.succ_opt() {
                    Some(next) => day = next,
                    None => return due,
                },
            }
        }
    }
}

/// What a wave does with a message left in doubt after a crash or an ambiguous gateway
/// answer (see the workflow format's `delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Wait for the gateway's report; send again only when none comes. Nobody is missed.
    #[default]
    AtLeastOnce,
    /// Never send again; without a report the contact is `unknown`. Nobody gets two.
    AtMostOnce,
}

impl Delivery {
    pub fn is_at_most_once(self) -> bool {
        self == Delivery::AtMostOnce
    }
}

/// A following wave's action path: which treatment subscribers of the wave it follows it
/// targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Who did not respond.
    NoResponse,
    /// Everyone targeted.
    All,
    /// Delivered, and no response.
    DeliveredSilent,
    /// The message never reached them: undelivered, rejected, or expired unsent.
    Undelivered,
    /// Who replied with one of these keywords (first word, lowercase).
    Replied(Vec<String>),
    /// Whose task outcome is one of these.
    Outcome(Vec<String>),
    /// Who had this business event while the wave's window was open.
    Event(EventMatch),
}

impl Targets {
    /// The funnel's name for the step that selects them.
    pub fn stage(&self) -> String {
        match self {
            Targets::NoResponse => "no_response".into(),
            Targets::All => "previous_wave".into(),
            Targets::DeliveredSilent => "delivered_silent".into(),
            Targets::Undelivered => "undelivered".into(),
            Targets::Replied(k) => format!("replied:{}", k.join("|")),
            Targets::Outcome(o) => format!("outcome:{}", o.join("|")),
            Targets::Event(m) => match &m.value {
                Some(v) => format!("event:{}={v}", m.kind),
                None => format!("event:{}", m.kind),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseRule {
    /// First word of an SMS reply, lowercase; `*` for any reply.
    Reply(String),
    Event(EventMatch),
    Outcome(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMatch {
    pub kind: String,
    pub value: Option<String>,
}

impl EventMatch {
    pub fn matches(&self, kind: &str, value: Option<&str>) -> bool {
        self.kind == kind && self.value.as_deref().is_none_or(|v| Some(v) == value)
    }
}

impl std::fmt::Display for EventMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "event {} = {v}", self.kind),
            None => write!(f, "event {}", self.kind),
        }
    }
}

/// `evaluate.goal`: what counts as success for a member, treated or control.
#[derive(Debug, Clone, PartialEq)]
pub enum Goal {
    /// The member converts when this event is attributed to them within the run.
    Converted(EventMatch),
    /// The member is retained when none of `lost_on` is recorded in their event log within
    /// `within` after the run's start.
    Retained {
        within: Duration,
        /// Event types that mean the subscriber was lost (never empty).
        lost_on: Vec<String>,
    },
}

impl Goal {
    /// The event a member converts on; `None` for a retention goal, which has no
    /// conversion (what `entry.skip_converted` reads).
    pub fn conversion(&self) -> Option<&EventMatch> {
        match self {
            Goal::Converted(e) => Some(e),
            Goal::Retained { .. } => None,
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::Converted(e) => e.fmt(f),
            Goal::Retained { within, lost_on } => write!(
                f,
                "retained {}: no {} event within {} of the run's start",
                short_duration(*within),
                lost_on.join(" or "),
                short_duration(*within),
            ),
        }
    }
}

/// A duration in the largest whole unit the workflow language has (`90d`, `36h`, `90m`).
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s > 0 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s > 0 && s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s > 0 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// A score between 0 and 1 in thousandths, exact: sums and comparisons of scores are integer
/// arithmetic, so a group exactly at its threshold passes on every backend.
pub type Permille = u32;

/// The survey a campaign's waves collect (`survey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    pub answers: Vec<Answer>,
    /// The text field respondents are grouped by.
    pub group_by: String,
}

impl Survey {
    /// Each answer as the store's score query takes it: (response kind, value, score in
    /// thousandths).
    pub fn scored_answers(&self) -> Vec<(&str, &str, i64)> {
        self.answers
            .iter()
            .map(|a| {
                let (kind, value) = a.kind.response();
                (kind, value, i64::from(a.score))
            })
            .collect()
    }
}

/// One answer and its score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub kind: AnswerKind,
    pub score: Permille,
}

/// How an answer arrives: as the `response` row tracking records for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerKind {
    /// An SMS reply's first word, lowercase.
    Reply(String),
    /// An agent's recorded outcome.
    Outcome(String),
}

impl AnswerKind {
    /// The `response.kind` tracking records it under, and its `value`.
    pub fn response(&self) -> (&'static str, &str) {
        match self {
            AnswerKind::Reply(k) => ("reply", k),
            AnswerKind::Outcome(o) => ("outcome", o),
        }
    }
}

/// `gate.purchase_intent`: a following wave targets only the members of groups whose mean
/// survey score P = Σ score / respondents is at least `min`, with at least `min_respondents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentGate {
    pub min: Permille,
    pub min_respondents: u32,
    /// The waves this one follows (transitively) that can collect an answer: the run's
    /// answers are read from these, which have all closed when this wave plans.
    pub from_waves: Vec<String>,
}

impl IntentGate {
    /// The funnel stage and decision reason of a subscriber the gate leaves out.
    pub const REASON: &'static str = "gate:purchase_intent";

    /// Whether a group with `respondents` answers summing to `score_sum` thousandths passes:
    /// `score_sum / respondents >= min`, compared as `score_sum >= min * respondents` in
    /// integers, so no rounding decides a group at the threshold.
    pub fn passes(&self, score_sum: i64, respondents: u64) -> bool {
        respondents >= u64::from(self.min_respondents)
            && respondents > 0
            && i128::from(score_sum) >= i128::from(self.min) * i128::from(respondents)
    }
}

/// A score in thousandths as the number it stands for, for display (`0.625`).
pub fn permille_text(p: Permille) -> String {
    let s = format!("{}.{:03}", p / 1000, p % 1000);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.')
        .map_or_else(|| s.to_owned(), |t| format!("{t}.0"))
}

#[derive(Debug, Clone, Default)]
pub struct Evaluate {
    pub goal: Option<Goal>,
    pub breakdown: Option<String>,
    pub email: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hours_wrap_midnight() {
        let q = QuietHours {
            start: NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        };
        assert!(q.contains(NaiveTime::from_hms_opt(23, 0, 0).unwrap()));
        assert!(q.contains(NaiveTime::from_hms_opt(7, 59, 0).unwrap()));
        assert!(!q.contains(NaiveTime::from_hms_opt(8, 0, 0).unwrap()));
        assert!(!q.contains(NaiveTime::from_hms_opt(12, 0, 0).unwrap()));
    }

    #[test]
    fn season_wraps_new_year() {
        let s = Season {
            from: (11, 15),
            to: (2, 28),
        };
        assert!(s.contains(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()));
        assert!(s.contains(NaiveDate::from_ymd_opt(2027, 1, 10).unwrap()));
        assert!(!s.contains(NaiveDate::from_ymd_opt(2026, 6, 1).unwrap()));
    }
}
