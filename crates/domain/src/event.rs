//! Business event types: the one rule for what a subscriber event's `type` may be, read by
//! the workflow language (a goal naming a type that can never arrive is an error), the events
//! API and the store's event log.

/// The longest event type.
pub const MAX_EVENT_TYPE_LEN: usize = 64;

/// The outcomes an agent may record on a task when its workflow declares none (and on a
/// task opened before tasks carried their workflow's `outcomes`).
pub const DEFAULT_OUTCOMES: &[&str] = &["accepted", "refused", "call_back_later", UNREACHABLE];

/// The call outcome that says the agent could not reach the subscriber: a preferred wave's
/// first-choice call recorded so falls back to the second choice.
pub const UNREACHABLE: &str = "unreachable";

/// Response kinds attribution writes itself (SMS replies, agent outcomes), so no business
/// event may use them.
pub const RESERVED_EVENT_TYPES: &[&str] = &["reply", "outcome"];

/// Why a text is not a business event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTypeProblem {
    /// Not 1 to [`MAX_EVENT_TYPE_LEN`] of `a-z`, `A-Z`, `0-9`, `_`, `-`, `.`.
    Shape,
    /// One of [`RESERVED_EVENT_TYPES`].
    Reserved,
}

/// Why `s` cannot be a business event type, if it cannot.
pub fn event_type_problem(s: &str) -> Option<EventTypeProblem> {
    let shape = !s.is_empty()
        && s.len() <= MAX_EVENT_TYPE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !shape {
        Some(EventTypeProblem::Shape)
    } else if RESERVED_EVENT_TYPES.contains(&s) {
        Some(EventTypeProblem::Reserved)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types() {
        assert_eq!(event_type_problem("order"), None);
        assert_eq!(event_type_problem("top.up-2_X"), None);
        assert_eq!(event_type_problem(""), Some(EventTypeProblem::Shape));
        assert_eq!(
            event_type_problem("an order"),
            Some(EventTypeProblem::Shape)
        );
        assert_eq!(event_type_problem("订单"), Some(EventTypeProblem::Shape));
        assert_eq!(
            event_type_problem(&"o".repeat(MAX_EVENT_TYPE_LEN + 1)),
            Some(EventTypeProblem::Shape)
        );
        assert_eq!(event_type_problem(&"o".repeat(MAX_EVENT_TYPE_LEN)), None);
        assert_eq!(
            event_type_problem("reply"),
            Some(EventTypeProblem::Reserved)
        );
        assert_eq!(
            event_type_problem("outcome"),
            Some(EventTypeProblem::Reserved)
        );
    }
}
