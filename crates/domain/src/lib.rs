//! Domain values shared by import, API, CLI, store and channels, with one rule each. No I/O,
//! no heavy dependencies: every crate that touches a phone number or a channel can depend on
//! this one.

mod channel;
mod choice;
mod event;
mod msisdn;
mod purpose;
mod slot;

pub use channel::ChannelKind;
pub use choice::Choice;
pub use event::{
    DEFAULT_OUTCOMES, EventTypeProblem, MAX_EVENT_TYPE_LEN, RESERVED_EVENT_TYPES, UNREACHABLE,
    event_type_problem,
};
pub use msisdn::{Msisdn, MsisdnError, mask};
pub use purpose::Purpose;
pub use slot::TimeSlot;
