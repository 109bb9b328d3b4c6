//! Domain values shared by import, API and CLI, with one rule each. No I/O, no heavy
//! dependencies: every crate that touches a phone number can depend on this one.

mod msisdn;

pub use msisdn::{Msisdn, MsisdnError, mask};
