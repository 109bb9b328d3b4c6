//! The limits of the workflow language: what identifiers, durations, keywords, addresses and
//! lists may be. Other crates read these rather than keeping their own copies, so a value the
//! language accepts is one the rest of the system can handle.

use std::time::Duration;

/// Replies whose first word (case-insensitive) opts the subscriber out. The language owns the
/// list because a wave must not count an opt-out as a positive reply; `tracking` reads it from
/// here.
pub const OPT_OUT_KEYWORDS: &[&str] = &["td", "stop", "unsubscribe", "退订", "n"];

/// The outcomes an agent can record for a task (`POST /tasks/{id}/outcome`) when a workflow
/// declares no `outcomes` of its own.
pub const OUTCOMES: &[&str] = domain::DEFAULT_OUTCOMES;

/// Why `s` cannot be an outcome name (`outcomes`), if it cannot: 1 to 32 of a-z, 0-9, `_`.
pub fn outcome_problem(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > 32 {
        return Some("expected 1 to 32 characters".into());
    }
    s.chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        .map(|c| {
            format!(
                "`{}` is not allowed: expected a-z, 0-9 or `_`",
                c.escape_debug()
            )
        })
}

/// Business event types that attribution writes itself, so no business event may use them.
pub use domain::RESERVED_EVENT_TYPES;

/// The longest wave id, team name or event type.
pub const MAX_NAME_LEN: usize = 64;

/// The most values an `in [...]` list may hold: each is a bound parameter of the planning
/// query, and databases cap those (SQLite at 32,766 per statement), so a longer list belongs
/// in a segment built from data, not in a filter.
pub const MAX_IN_LIST: usize = 1_000;

/// The shortest duration any workflow key accepts.
pub const MIN_DURATION: Duration = Duration::from_secs(60);

/// The longest duration any workflow key accepts: a year, leap day included. Every instant the
/// engine computes is "now" plus at most a few of these, far from `i64` milliseconds' limit.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// How far ahead a schedule is searched for a firing; a cron that does not fire in this many
/// years is a mistake (e.g. `0 0 30 2 *`, February 30th).
pub const CRON_HORIZON_YEARS: i32 = 28;

/// Whether `s` is a wave id or team name: 1 to [`MAX_NAME_LEN`] of `a-z`, `0-9`, `_`, `-`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Why `s` cannot be a business event type the API accepts, if it cannot (the rule is
/// [`domain::event_type_problem`], shared with the events API and the store's event log).
pub fn event_type_problem(s: &str) -> Option<String> {
    match domain::event_type_problem(s)? {
        domain::EventTypeProblem::Shape => Some(format!(
            "event type `{s}` can never arrive: the events API accepts 1 to {} of a-z, A-Z, 0-9, _ - .",
            domain::MAX_EVENT_TYPE_LEN
        )),
        domain::EventTypeProblem::Reserved => Some(format!(
            "event type `{s}` can never arrive: it is reserved for SMS replies and agent outcomes; use `{s}:` as the response kind instead"
        )),
    }
}

/// Why `s` is not a plain e-mail address (one rule for report recipients, staff and the
/// subscribers' `format: email` attribute).
pub use catalogue::email_problem;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "sms",
            "sms_offer",
            "campus-callcentre",
            "a1",
            &"x".repeat(64),
        ] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Sms",
            "sms offer",
            "呼叫",
            "a.b",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn emails() {
        for ok in [
            "campus-marketing@example.com",
            "a.b+c@mail.example.cn",
            "x@a-b.io",
        ] {
            assert_eq!(email_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "nobody",
            "@example.com",
            "a@",
            "a@localhost",
            "a@@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@-example.com",
            "a@example..com",
            ".a@example.com",
            "a..b@example.com",
            "Name <a@example.com>",
        ] {
            assert!(email_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn event_types() {
        assert_eq!(event_type_problem("order"), None);
        assert_eq!(event_type_problem("top.up-2_X"), None);
        assert!(event_type_problem("").is_some());
        assert!(event_type_problem("an order").is_some());
        assert!(event_type_problem("reply").unwrap().contains("reserved"));
        assert!(event_type_problem(&"o".repeat(65)).is_some());
    }
}
