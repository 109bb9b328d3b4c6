//! The evaluation report of one run, as handed to the renderers.

use serde::Serialize;

use crate::stats::{Arm, Uplift};

/// Counts for one wave of one run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct WaveCounts {
    pub wave: String,
    pub channel: String,
    /// Audience after segment and filter, before policy.
    pub eligible: u64,
    /// Left out by exclusions, opt-out, frequency cap, quiet-hours deadline or arbitration.
    pub excluded: u64,
    /// Held out as control.
    pub control: u64,
    /// Treatment contacts planned.
    pub targeted: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub expired: u64,
    /// At-most-once contacts a crash or an ambiguous gateway answer left in doubt: perhaps
    /// sent, never repeated.
    #[serde(default)]
    pub unknown: u64,
    /// Treatment contacts with a response within the wave's window.
    pub responded: u64,
}

impl WaveCounts {
    /// `delivered / sent`; `None` when nothing was sent.
    pub fn delivery_rate(&self) -> Option<f64> {
        ratio(self.delivered, self.sent)
    }

    /// `responded / targeted`; `None` when nobody was targeted.
    pub fn response_rate(&self) -> Option<f64> {
        ratio(self.responded, self.targeted)
    }
}

pub(crate) fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// A breakdown row (e.g. by value tier or wave).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Cell {
    pub label: String,
    pub treatment: Arm,
    pub control: Arm,
    pub uplift: Uplift,
}

/// Everything known about the outcome of one run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Report {
    pub campaign: String,
    pub run_id: i64,
    /// Short content hash of the workflow the run executed.
    pub version: String,
    /// Human description of the goal, e.g. "event order offer=campus-bundle".
    pub goal: String,
    /// RFC 3339; formatted by the engine.
    pub started_at: String,
    pub finished_at: String,
    pub waves: Vec<WaveCounts>,
    /// Labelled "all".
    pub overall: Cell,
    /// The subscriber field `cells` are by (`evaluate.breakdown`, else the control group's
    /// `stratify_by`); `None` when the run named neither.
    #[serde(default)]
    pub breakdown: Option<String>,
    /// One per value of `breakdown` (e.g. per value tier).
    pub cells: Vec<Cell>,
    /// The goal is retention: an arm's `converted` counts its members retained (so far,
    /// while [`Report::provisional_until`] is set).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retention: bool,
    /// RFC 3339 end of the retention window (the run's start + the goal's `retained`) when
    /// the report was built before it: members count as retained so far, and a churn or
    /// port-out still to come can lower the rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisional_until: Option<String>,
    /// The survey's scores in this run, per group of respondents (`survey` in the workflow);
    /// absent when the workflow has no survey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survey: Option<SurveyScores>,
    /// One row per experiment variant of a wave with `variants`, each measured against the
    /// run's shared control; absent when no wave had variants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantRow>,
    /// Reach per channel and choice of each `channel: preferred` wave; absent when no
    /// wave was preferred.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reach: Vec<ReachRow>,
    /// Responses came from the demo's simulated population. Every rendering states it
    /// prominently, because a simulated uplift mistaken for a real one would drive real spend.
    pub simulated: bool,
}

/// A preferred wave's treatment contacts on one channel as one choice (`first` or
/// `second`, the fallback): how many, how many it reached (went out and not reported
/// undelivered), how many responded.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReachRow {
    pub wave: String,
    pub channel: String,
    pub choice: String,
    pub contacts: u64,
    pub reached: u64,
    pub responded: u64,
}

impl ReachRow {
    /// `reached / contacts`; `None` without contacts.
    pub fn reach_rate(&self) -> Option<f64> {
        ratio(self.reached, self.contacts)
    }
}

/// One experiment arm of a wave: its contacts, responders, and its goal against the run's
/// shared control (the same control every variant is compared with).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct VariantRow {
    pub wave: String,
    pub variant: String,
    /// The variant's contacts who responded within the wave's window.
    pub responded: u64,
    /// Labelled with the variant's name: treatment = the variant's contacts (`n`) and those
    /// who reached the goal; control = the run's shared control.
    pub outcome: Cell,
}

/// A run's survey answers, per group.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SurveyScores {
    /// The subscriber field respondents are grouped by, e.g. `value_tier`.
    pub group_by: String,
    /// One per value of `group_by` with at least one respondent, in value order.
    pub groups: Vec<SurveyGroup>,
}

/// One group's answers.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SurveyGroup {
    pub group: String,
    /// Subscribers who answered (each once, by their latest answer).
    pub respondents: u64,
    /// The sum of their scores in thousandths: exact, so P can be recomputed without rounding.
    pub score_permille_sum: i64,
    /// P = Σ score / respondents, the mean score (e.g. the purchase intent), 0 to 1.
    pub score: f64,
}

impl SurveyGroup {
    /// A group from its exact sums; `score` is 0 for a group without respondents.
    pub fn new(group: String, respondents: u64, score_permille_sum: i64) -> SurveyGroup {
        let score = if respondents == 0 {
            0.0
        } else {
            // One division, so the score is the closest double to the exact quotient
            // (10,300 / 25,000 is 0.412, where two divisions give 0.41200000000000003).
            score_permille_sum as f64 / (1000.0 * respondents as f64)
        };
        SurveyGroup {
            group,
            respondents,
            score_permille_sum,
            score,
        }
    }
}

impl Report {
    /// What an arm's `converted` counts: `retained` for a retention goal.
    pub fn outcome_word(&self) -> &'static str {
        if self.retention {
            "retained"
        } else {
            "converted"
        }
    }
}
