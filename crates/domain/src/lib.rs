//! Domain values shared by import, API, CLI, store and channels, with one rule each. No I/O,
//! no heavy dependencies: every crate that touches a phone number or a channel can depend on
//! this one.

mod channel;
mod msisdn;

pub use channel::ChannelKind;
pub use msisdn::{Msisdn, MsisdnError, mask};
