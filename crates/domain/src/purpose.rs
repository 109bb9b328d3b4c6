//! What a contact is for. Consent and contact limits are a matter of purpose: a subscriber who
//! opted out of marketing still gets the care they are owed, and an alert to the staff who
//! look after them is not a message to them at all.

/// A campaign's purpose, stored on each of its contacts as [`Purpose::as_str`]
/// (`contact.purpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Purpose {
    /// Offers and promotions: opt-out, do-not-disturb exclusions and the frequency cap apply,
    /// and each contact counts towards the cap.
    #[default]
    Marketing,
    /// Service the subscriber is owed (low balance before a vacation, a welcome, a fault
    /// follow-up): quiet hours apply; the marketing opt-out and cap do not.
    Care,
    /// Work for staff about a subscriber (a churn warning to the account manager): the
    /// subscriber is not contacted, so their opt-out and cap do not apply.
    Alert,
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [Purpose::Marketing, Purpose::Care, Purpose::Alert];

    pub const fn as_str(self) -> &'static str {
        match self {
            Purpose::Marketing => "marketing",
            Purpose::Care => "care",
            Purpose::Alert => "alert",
        }
    }

    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether the subscriber's marketing opt-out and the frequency cap govern it.
    pub const fn is_marketing(self) -> bool {
        matches!(self, Purpose::Marketing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_purpose_parses_back_from_its_stored_text() {
        for p in Purpose::ALL {
            assert_eq!(Purpose::parse(p.as_str()), Some(p));
        }
        assert_eq!(Purpose::parse("Marketing"), None);
        assert_eq!(Purpose::default(), Purpose::Marketing);
        assert_eq!(
            Purpose::ALL.map(Purpose::is_marketing),
            [true, false, false]
        );
    }
}
