//! Kannel's delivery-report and MO callbacks. Kannel retries a failed callback only a few
//! times, so a handler stores the raw event and answers at once; attribution happens later.

use axum::extract::{RawQuery, State};
use store::inbound::{NewInbound, source};
use tracing::debug;

use crate::error::{ApiError, bad};
use crate::input::{Query, line, mask, msisdn};
use crate::{Shared, inbox};

/// The DLR types Kannel reports (`%d`): delivered, undeliverable, buffered, SMSC ACK, SMSC NACK.
const DLR_TYPES: [&str; 5] = ["1", "2", "4", "8", "16"];
/// The SMSC's acknowledgement: the message was submitted.
const SMSC_ACK: &str = "8";
/// Our own idempotency keys are short; anything longer is not one of ours.
const MAX_KEY: usize = 200;
/// Kannel concatenates at most a few parts; this leaves room for any `max-messages`.
const MAX_TEXT: usize = 2000;
const MAX_REPLY: usize = 1000;

/// `GET /callbacks/kannel/dlr?key=..&t=..&type=..&smscid=..&fid=..&to=..&ts=..&reply=..`
///
/// Authenticated by `t`, the per-message token of the dlr-url, checked in constant time
/// before anything is read or stored; a report for a key we never sent is refused too.
#[utoipa::path(get, path = "/callbacks/kannel/dlr", tag = "callbacks",
    params(
        ("key" = String, Query, description = "The contact's idempotency key, as sent in the dlr-url"),
        ("t" = String, Query, description = "The per-message token campaignd put in the dlr-url: HMAC-SHA256 of the key with the callback secret"),
        ("type" = String, Query, description = "Kannel DLR type (%d): 1, 2, 4, 8 or 16"),
        ("to" = Option<String>, Query, description = "The subscriber's number (%p)"),
        ("reply" = Option<String>, Query, description = "The SMSC reply (%A), at most 1000 characters"),
        ("smscid" = Option<String>, Query, description = "Kept in the stored payload, like any other parameter"),
    ),
    responses(
        (status = 200, description = "Stored", body = String, example = "ok"),
        (status = 400, description = "Bad input; nothing stored", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or wrong token `t`; nothing read or stored", body = crate::error::ErrorBody),
        (status = 403, description = "Unknown key, or source address not allowed; nothing stored", body = crate::error::ErrorBody),
        (status = 500, description = "Not stored (the reason is logged); Kannel retries", body = crate::error::ErrorBody),
        (status = 503, description = "Not stored: the callback queue is full (`Retry-After: 1`), or the database is down and no spool could take it (`Retry-After: 5`); Kannel retries. (With the database down and a spool configured, the callback is spooled and answered 200.)", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn dlr(
    State(state): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<&'static str, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    let key = q.required(
        "key",
        "the contact's idempotency key, e.g. r12-sms_offer-s345-k3j9x2m4q7ab",
    )?;
    line("key", &key, MAX_KEY, "the contact's idempotency key")?;
    // The signature first: a forged report must not even learn whether its key exists.
    let token = q.text("t")?.unwrap_or_default();
    let signed = state
        .callbacks
        .dlr_secret
        .as_ref()
        .is_some_and(|secret| store::auth::verify_callback_token(secret, &key, &token));
    if !signed {
        debug!("Delivery report with a missing or wrong token refused.");
        return Err(ApiError::Unauthorized(
            "missing or wrong delivery-report token `t`".to_owned(),
        ));
    }
    let kind = q.required("type", "the Kannel DLR type (%d): 1, 2, 4, 8 or 16")?;
    if !DLR_TYPES.contains(&kind.as_str()) {
        return Err(bad(
            "type",
            "expected the Kannel DLR type (%d): 1, 2, 4, 8 or 16",
        ));
    }
    let to = q.text("to")?.map(|t| msisdn("to", &t)).transpose()?;
    let reply = q.text("reply")?;
    if let Some(r) = &reply
        && r.chars().count() > MAX_REPLY
    {
        return Err(bad(
            "reply",
            format!("expected the SMSC reply (%A), at most {MAX_REPLY} characters"),
        ));
    }
    // The SMSC's acknowledgement of a contact this process has settled `sent` (committed):
    // proof of a submission nobody will ask about again (`store::sent_keys`). Answered
    // without a write; any other acknowledgement is stored as proof.
    if kind == SMSC_ACK && state.store.sent_keys().contains(&key) {
        inbox::stats::ACKS_NOT_STORED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        debug!(key = %key, "SMSC acknowledgement of a contact settled sent; not stored.");
        return Ok("ok");
    }
    let row = NewInbound {
        source: source::DLR,
        idem_key: Some(key.clone()),
        msisdn: to,
        kind: kind.clone(),
        value: reply,
        payload: q.to_json(&[], Some("t")),
        received_at: (state.now)(),
    };
    // Stored with the callbacks that came meanwhile (`inbox`), and only when the key is a
    // contact's. With the database down the signature alone vouches for the key: the
    // report is spooled.
    stored(state.inbox.store(row).await)?;
    debug!(key = %key, dlr_type = %kind, "Delivery report stored.");
    Ok("ok")
}

/// The answer for what became of one callback.
fn stored(s: inbox::Stored) -> Result<(), ApiError> {
    match s {
        inbox::Stored::Ok => Ok(()),
        inbox::Stored::UnknownKey => Err(ApiError::Forbidden("unknown key".to_owned())),
        inbox::Stored::Busy => Err(ApiError::Busy(format!(
            "{} callbacks are waiting to be stored; retry shortly",
            inbox::QUEUE
        ))),
        inbox::Stored::Unavailable => Err(ApiError::Unavailable),
        inbox::Stored::Failed => Err(ApiError::Internal),
    }
}

/// `GET /callbacks/kannel/mo?from=..&to=..&text=..&msgid=..&ts=..` (also `charset`, as `%C`).
#[utoipa::path(get, path = "/callbacks/kannel/mo", tag = "callbacks",
    params(
        ("from" = String, Query, description = "The subscriber's number (%p)"),
        ("text" = String, Query, description = "The message text (%a), at most 2000 characters"),
        ("charset" = Option<String>, Query, description = "Charset of `text` (%C): UTF-8 (default), UTF-16BE, UCS-2, ISO-8859-1"),
        ("to" = Option<String>, Query, description = "Our short code (%P); kept in the payload"),
        ("token" = Option<String>, Query, description = "A gateway token, when it cannot come as `Authorization: Bearer` (Kannel's get-url); never stored"),
    ),
    responses(
        (status = 200, description = "Stored", body = String, example = "ok"),
        (status = 400, description = "Bad input; nothing stored", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown gateway token; nothing stored", body = crate::error::ErrorBody),
        (status = 403, description = "Not a gateway token, or source address not allowed", body = crate::error::ErrorBody),
        (status = 500, description = "Not stored (the reason is logged); Kannel retries", body = crate::error::ErrorBody),
        (status = 503, description = "Not stored: the callback queue is full (`Retry-After: 1`), or the database is down and no spool could take it (`Retry-After: 5`); Kannel retries. (With the database down and a spool configured, the callback is spooled and answered 200.)", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn mo(
    State(state): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<&'static str, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    let from = q.required("from", "the subscriber's number (%p)")?;
    let from = msisdn("from", &from)?;
    let charset = q.text("charset")?;
    let text = q
        .sms_text("text", charset.as_deref())?
        .ok_or_else(|| bad("text", "missing; expected the message text (%a)"))?;
    if text.chars().count() > MAX_TEXT {
        return Err(bad(
            "text",
            format!("expected the message text, at most {MAX_TEXT} characters"),
        ));
    }
    let row = NewInbound {
        source: source::MO,
        idem_key: None,
        msisdn: Some(from.clone()),
        kind: "reply".to_owned(),
        payload: q.to_json(&[("text", &text)], Some("token")),
        value: Some(text),
        received_at: (state.now)(),
    };
    stored(state.inbox.store(row).await)?;
    debug!(from = %mask(&from), "SMS reply stored.");
    Ok("ok")
}
