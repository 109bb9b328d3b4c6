//! What every staff digest shares (monitor alerts, service tasks): who it is addressed to,
//! how a subscriber's number is shown, and the frame of its HTML part. The dedup key rule is the mail queue's
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

/// HTML-escapes a value from data (names, ids, numbers, times) for element content and
/// quoted attributes: the one escape every digest's HTML part uses.
pub(crate) fn esc(s: &str) -> String {
    evaluate::escape_html(s)
}

/// The start of a digest's HTML part, up to its `<body>`: self-contained (inline style, no
/// remote resources, which mail clients block and which would tell a sender who read it).
pub(crate) fn page_start(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n\
         <style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}\
         th,td{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style></head>\n<body>\n",
        esc(title)
    )
}

/// The end of a digest's HTML part.
pub(crate) const PAGE_END: &str = "</body></html>\n";
