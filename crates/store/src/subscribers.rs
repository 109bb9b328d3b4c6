//! The subscriber base: bulk insert and lookups.

/// A subscriber row to insert. Field meanings are documented in `spec::fields`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSubscriber {
    pub msisdn: String,
    pub external_id: Option<String>,
    pub name: String,
    pub gender: String,
    pub age: i32,
    pub region: String,
    pub brand: String,
    pub value_tier: String,
    pub arpu_3m: f64,
    pub balance: f64,
    pub tenure_months: i32,
    pub student_stage: String,
    pub campus: Option<String>,
    pub first_channel: String,
    pub first_channel_slot: String,
    pub second_channel: String,
    pub second_channel_slot: String,
    pub complaints_30d: i32,
    pub do_not_disturb: bool,
    pub churn_risk: f64,
    pub timezone: Option<String>,
    pub opt_out: bool,
}

/// The value tier for a 3-month ARPU in yuan (DOMAIN.md: >500, 200-500, 120-200, <120).
pub fn value_tier_for_arpu(arpu: f64) -> &'static str {
    if arpu > 500.0 {
        "diamond"
    } else if arpu >= 200.0 {
        "gold"
    } else if arpu >= 120.0 {
        "silver"
    } else {
        "ordinary"
    }
}
