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
    /// Responses came from the demo's simulated population. Every rendering states it
    /// prominently, because a simulated uplift mistaken for a real one would drive real spend.
    pub simulated: bool,
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
