//! Kannel's delivery-report and MO callbacks. Kannel retries a failed callback only a few
//! times, so a handler stores the raw event and answers at once; attribution happens later.

use axum::extract::{RawQuery, State};
use store::inbound::{NewInbound, source};
use tracing::debug;

use crate::Shared;
use crate::error::{ApiError, bad};
use crate::input::{Query, line, mask, msisdn};

/// The DLR types Kannel reports (`%d`): delivered, undeliverable, buffered, SMSC ACK, SMSC NACK.
const DLR_TYPES: [&str; 5] = ["1", "2", "4", "8", "16"];
/// Our own idempotency keys are short; anything longer is not one of ours.
const MAX_KEY: usize = 200;
/// Kannel concatenates at most a few parts; this leaves room for any `max-messages`.
const MAX_TEXT: usize = 2000;
const MAX_REPLY: usize = 1000;

/// `GET /callbacks/kannel/dlr?key=..&type=..&smscid=..&fid=..&to=..&ts=..&reply=..`
#[utoipa::path(get, path = "/callbacks/kannel/dlr", tag = "callbacks",
    params(
        ("key" = String, Query, description = "The contact's idempotency key, as sent in the dlr-url"),
        ("type" = String, Query, description = "Kannel DLR type (%d): 1, 2, 4, 8 or 16"),
        ("to" = Option<String>, Query, description = "The subscriber's number (%p)"),
        ("reply" = Option<String>, Query, description = "The SMSC reply (%A), at most 1000 characters"),
        ("smscid" = Option<String>, Query, description = "Kept in the stored payload, like any other parameter"),
    ),
    responses(
        (status = 200, description = "Stored", body = String, example = "ok"),
        (status = 400, description = "Bad input; nothing stored", body = crate::error::ErrorBody),
        (status = 500, description = "Not stored; Kannel retries", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn dlr(
    State(state): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<&'static str, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    let key = q.required(
        "key",
        "the contact's idempotency key, e.g. r12-sms_offer-s345",
    )?;
    line("key", &key, MAX_KEY, "the contact's idempotency key")?;
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
    state
        .store
        .insert_inbound(&[NewInbound {
            source: source::DLR,
            idem_key: Some(key.clone()),
            msisdn: to,
            kind: kind.clone(),
            value: reply,
            payload: q.to_json(&[]),
            received_at: (state.now)(),
        }])
        .await?;
    debug!(key = %key, dlr_type = %kind, "Delivery report stored.");
    Ok("ok")
}

/// `GET /callbacks/kannel/mo?from=..&to=..&text=..&msgid=..&ts=..` (also `charset`, as `%C`).
#[utoipa::path(get, path = "/callbacks/kannel/mo", tag = "callbacks",
    params(
        ("from" = String, Query, description = "The subscriber's number (%p)"),
        ("text" = String, Query, description = "The message text (%a), at most 2000 characters"),
        ("charset" = Option<String>, Query, description = "Charset of `text` (%C): UTF-8 (default), UTF-16BE, UCS-2, ISO-8859-1"),
        ("to" = Option<String>, Query, description = "Our short code (%P); kept in the payload"),
    ),
    responses(
        (status = 200, description = "Stored", body = String, example = "ok"),
        (status = 400, description = "Bad input; nothing stored", body = crate::error::ErrorBody),
        (status = 500, description = "Not stored; Kannel retries", body = crate::error::ErrorBody),
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
    state
        .store
        .insert_inbound(&[NewInbound {
            source: source::MO,
            idem_key: None,
            msisdn: Some(from.clone()),
            kind: "reply".to_owned(),
            payload: q.to_json(&[("text", &text)]),
            value: Some(text),
            received_at: (state.now)(),
        }])
        .await?;
    debug!(from = %mask(&from), "SMS reply stored.");
    Ok("ok")
}
