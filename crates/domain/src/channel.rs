//! The channels a wave can use, one list for the workflow language, the store's rows, the
//! channel adapters and the CLI.

/// A wave's channel, stored as [`ChannelKind::as_str`] (`wave_run.channel`,
/// `contact.channel`, `agent_task.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    Sms,
    OutboundCall,
    Service,
    /// A mail to the subscriber's address (the catalogue attribute with `format: email`),
    /// through the same SMTP server as staff mail.
    Email,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 4] = [
        ChannelKind::Sms,
        ChannelKind::OutboundCall,
        ChannelKind::Service,
        ChannelKind::Email,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Sms => "sms",
            ChannelKind::OutboundCall => "outbound_call",
            ChannelKind::Service => "service",
            ChannelKind::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<ChannelKind> {
        ChannelKind::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether contacts become tasks for people rather than messages.
    pub fn is_task(self) -> bool {
        matches!(self, ChannelKind::OutboundCall | ChannelKind::Service)
    }

    /// The names, as a workflow file writes them, for error messages.
    pub fn names() -> String {
        ChannelKind::ALL.map(ChannelKind::as_str).join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_parses_back_from_its_stored_text() {
        for c in ChannelKind::ALL {
            assert_eq!(ChannelKind::parse(c.as_str()), Some(c));
        }
        assert_eq!(ChannelKind::parse("fax"), None);
    }
}
