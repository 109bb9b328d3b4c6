//! What every staff digest shares (monitor alerts, service tasks): who it is addressed to
//! and how a subscriber's number is shown. The dedup key rule is the mail queue's
//! (`store::mail::digest_dedup_key`).

use spec::monitor::Staff;

/// How many items (alerts, tasks) a digest lists one by one; the rest are counted. A person
/// told of a hundred thousand alerts reads none of them in a mail, and the worklist has them
/// all, in the mail's order.
pub(crate) const LISTED: usize = 200;

/// How a digest greets its recipient: their name, or their id when they have none.
pub(crate) fn addressee(person: &Staff) -> &str {
    if person.name.is_empty() {
        person.id.as_str()
    } else {
        person.name.as_str()
    }
}

/// A subscriber's number as a mail shows it: masked, never in the clear.
pub(crate) fn masked_number(msisdn: &str) -> String {
    domain::Msisdn::parse(msisdn)
        .map(|n| n.masked())
        .unwrap_or_else(|_| domain::mask(msisdn))
}
