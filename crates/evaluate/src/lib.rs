//! Evaluation of campaign runs: per-wave funnel counts, the goal rate of the contacted
//! (treatment) group against the randomly held-out control group with its confidence interval and
//! significance test, and renderings of the result as text, JSON, CSV and HTML.
//!
//! Invariant: everything here is a pure function of its arguments. No I/O, no clock, no
//! randomness, no global state; the renderers return strings and the caller decides where they go.
//! The statistics never produce NaN, whatever the counts (empty arms included).

mod render;
mod report;
mod season;
mod stats;

pub use render::csv::render_csv;
pub use render::html::{esc as escape_html, render_html};
pub use render::json::render_json;
pub use render::text::render_text;
pub use report::{Cell, ReachRow, Report, SurveyGroup, SurveyScores, VariantRow, WaveCounts};
pub use season::{Season, SeasonReport, render_seasons_json, render_seasons_text};
pub use stats::{Arm, DEFAULT_CONFIDENCE, Uplift, uplift, wilson};
