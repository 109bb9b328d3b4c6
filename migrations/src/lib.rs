//! Schema history for both backends (SQLite and PostgreSQL), written with sea-query's DSL so
//! one migration runs on both. Migrations are additive: SQLite cannot alter most column shapes.
//!
//! Every instant is a BIGINT of Unix milliseconds (UTC). That keeps ordering and arithmetic the
//! same on both backends, and keeps the dispatcher's "is it due" comparisons index-friendly.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_initial;
mod m20261125_000002_singleton_lease;
mod m20261125_000003_claim_index;
mod m20261125_000004_drop_lease_index;
mod m20261125_000005_dispatch_queue;
mod m20261125_000006_subscriber_byte_order;
mod m20261126_000007_late_attribution;
mod m20261129_000008_auth_audit;
mod m20261129_000009_consent;
mod m20261129_000010_catalogue_columns;
mod m20261130_000011_subscriber_event;
mod m20261130_000012_usage_history;
mod m20261130_000013_event_dedup;
mod m20261201_000014_contact_purpose;
mod m20261201_000015_holdout;
mod m20261202_000016_mail_outbox;
mod m20261202_000017_inbound_key;
mod m20261202_000018_at_most_once;
mod m20261203_000020_spool_replayed;
mod m20261204_000021_send_rate;
mod m20261205_000022_event_inbound_once;
mod m20261205_000023_alerts;
mod m20261206_000024_report_due;
mod m20261206_000025_trigger_entry;
mod m20261207_000026_task_sla;
mod m20261207_000027_task_outcomes;
mod m20261208_000028_call_centre;
mod m20261208_000031_contact_variant;
mod m20261209_000032_subscriber_email;
mod m20261209_000033_contact_choice;
mod m20261209_000034_task_callback_agent;
mod m20261210_000035_planned_batch;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_initial::Migration),
            Box::new(m20261125_000002_singleton_lease::Migration),
            Box::new(m20261125_000003_claim_index::Migration),
            Box::new(m20261125_000004_drop_lease_index::Migration),
            Box::new(m20261125_000005_dispatch_queue::Migration),
            Box::new(m20261125_000006_subscriber_byte_order::Migration),
            Box::new(m20261126_000007_late_attribution::Migration),
            Box::new(m20261129_000008_auth_audit::Migration),
            Box::new(m20261129_000009_consent::Migration),
            Box::new(m20261129_000010_catalogue_columns::Migration),
            Box::new(m20261130_000011_subscriber_event::Migration),
            Box::new(m20261130_000012_usage_history::Migration),
            Box::new(m20261130_000013_event_dedup::Migration),
            Box::new(m20261201_000014_contact_purpose::Migration),
            Box::new(m20261201_000015_holdout::Migration),
            Box::new(m20261202_000016_mail_outbox::Migration),
            Box::new(m20261202_000017_inbound_key::Migration),
            Box::new(m20261202_000018_at_most_once::Migration),
            Box::new(m20261203_000020_spool_replayed::Migration),
            Box::new(m20261204_000021_send_rate::Migration),
            Box::new(m20261205_000022_event_inbound_once::Migration),
            Box::new(m20261205_000023_alerts::Migration),
            Box::new(m20261206_000024_report_due::Migration),
            Box::new(m20261206_000025_trigger_entry::Migration),
            Box::new(m20261207_000026_task_sla::Migration),
            Box::new(m20261207_000027_task_outcomes::Migration),
            Box::new(m20261208_000028_call_centre::Migration),
            Box::new(m20261208_000031_contact_variant::Migration),
            Box::new(m20261209_000032_subscriber_email::Migration),
            Box::new(m20261209_000033_contact_choice::Migration),
            Box::new(m20261209_000034_task_callback_agent::Migration),
            Box::new(m20261210_000035_planned_batch::Migration),
        ]
    }
}
