//! Who a wave reaches: segments and filters compiled to SQL, exclusions, the contact policy
//! (opt-out, frequency cap, quiet hours) and the control group, written as contacts in one
//! transaction together with a reason for every subscriber left out.
//!
//! Architecture invariants:
//! - Filters become SQL only through [`filter_sql`] (sea-query, values bound), never by
//!   formatting strings.
//! - The control split is a pure function of (salt, subscriber id, stratum, the campaign's
//!   stored holdout for the period): the same inputs always give the same arms, on any
//!   replica, and a held control member is never treated.
//! - This crate knows nothing of channels or HTTP.

pub mod filter_sql;

mod control;
mod plan;
mod policy;

pub use control::{
    GLOBAL_SCOPE, GlobalHoldout, HeldSplit, control_key, pick_variant, split_control, split_holding,
};
pub use plan::{
    Arbitration, Funnel, NO_PREFERRED_CHANNEL, PLANNER_LOCK, PlanError, PlanInput, PlanSummary,
    outranks, pending_trigger_entrants, plan_wave, plan_wave_in_batches, preferred_route, preview,
};
pub use policy::{next_allowed, next_in_slot};
