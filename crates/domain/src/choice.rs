//! Which of a subscriber's preferred channels a contact used (`channel: preferred` waves).

/// The first-choice channel (in its usual slot) or the fallback to the second choice when
/// the first could not reach the subscriber. Stored as [`Choice::as_str`] (`contact.choice`);
/// every contact of a single-channel wave is `First`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Choice {
    First,
    Second,
}

impl Choice {
    pub const ALL: [Choice; 2] = [Choice::First, Choice::Second];

    pub const fn as_str(self) -> &'static str {
        match self {
            Choice::First => "first",
            Choice::Second => "second",
        }
    }

    pub fn parse(s: &str) -> Option<Choice> {
        Choice::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choice_parses_back_from_its_stored_text() {
        for c in Choice::ALL {
            assert_eq!(Choice::parse(c.as_str()), Some(c));
        }
        assert_eq!(Choice::parse("First"), None);
    }
}
