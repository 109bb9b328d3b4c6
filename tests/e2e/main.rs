//! End-to-end tests: the engine, API and channels wired as the daemon wires them, against a
//! fresh database per test (a SQLite file, or a PostgreSQL schema of its own) and loopback
//! HTTP servers. Real Kannel and SMTP are used where the test says so.

mod approvals;
mod crash;
mod daemon;
mod db_outage;
mod durable;
mod email_wave;
mod helpers;
mod kannel;
mod kannel_crash;
mod kannel_gateway;
mod kannel_outage;
mod late_attribution;
mod monitors;
mod planner;
mod preferred;
mod replicas;
mod service_tasks;
mod services;
mod shutdown;
mod smtp;
mod stepped;
mod two_waves;
