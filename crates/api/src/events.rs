//! Business events (orders, top-ups) from other systems, single or in batches.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::DateTime;
use serde::Deserialize;
use serde_json::{Value, json};
use store::inbound::{NewInbound, source};
use tracing::debug;

use crate::Shared;
use crate::error::{ApiError, bad};
use crate::input::{check_object, json_path, line, msisdn};

pub(crate) const MAX_BATCH: usize = 10_000;
/// How far ahead of our clock an event time may be: clocks drift, but an event from the
/// future could count inside a window it never belonged to.
const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EventIn {
    msisdn: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    at: Option<String>,
}

const FIELDS: [(&str, bool); 4] = [
    ("msisdn", true),
    ("type", true),
    ("value", false),
    ("at", false),
];
const SHAPE: &str = r#"{"msisdn": "...", "type": "order", "value": "...", "at": "RFC 3339 time"}"#;

/// `POST /events`: one event object, or an array of up to 10,000. All or nothing: one bad
/// event rejects the batch, and nothing is stored. Every event is stored for attribution;
/// the event of a known subscriber is also kept in its event log (`subscriber_event`), in
/// the same transaction, whether or not it is in any campaign. An event is stored once: the
/// same number, type, time (`at`) and value sent again (a retried request) adds nothing, and
/// the answer counts it in `already`. An event without `at` takes the time it was received,
/// so only a retry that names `at` is recognised.
#[utoipa::path(post, path = "/events", tag = "events",
    request_body(
        description = "One event, or an array of 1 to 10,000 (at most 8 MiB)",
        content((EventIn = "application/json"), (Vec<EventIn> = "application/json")),
    ),
    responses(
        (status = 202, description = "Stored; `{\"accepted\": n, \"already\": k}`: the request's n events are all accepted, and k of them were already stored (sent before), so they were not stored again", body = Object),
        (status = 400, description = "Bad input; nothing stored", body = crate::error::ErrorBody),
        (status = 413, description = "Body over 8 MiB", body = crate::error::ErrorBody),
        (status = 503, description = "The database is unavailable; nothing stored. Retry after `Retry-After` seconds", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn post(
    State(state): State<Shared>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| bad("body", format!("expected JSON: {e}")))?;
    let now = (state.now)();
    let rows = match &value {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_BATCH {
                return Err(bad(
                    "body",
                    format!("expected 1 to {MAX_BATCH} events, got {}", items.len()),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| event(v, &format!("[{i}]"), now))
                .collect::<Result<Vec<_>, _>>()?
        }
        single => vec![event(single, "", now)?],
    };
    // One transaction: every event for attribution, and the known subscribers' events in
    // their event log, whether or not any campaign is running.
    let stored = state.store.record_business_events(&rows, now).await?;
    debug!(
        events = stored.inbound,
        events_already = stored.inbound_already,
        recorded = stored.recorded,
        already = stored.already,
        "Business events stored."
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "accepted": stored.inbound + stored.inbound_already,
            "already": stored.inbound_already,
        })),
    ))
}

pub(crate) fn event(value: &Value, prefix: &str, now: i64) -> Result<NewInbound, ApiError> {
    check_object(value, prefix, &FIELDS, SHAPE)?;
    let e: EventIn = serde_json::from_value(value.clone())
        .map_err(|e| bad(json_path(prefix, ""), e.to_string()))?;
    let number = msisdn(&json_path(prefix, "msisdn"), &e.msisdn)?;
    let type_field = json_path(prefix, "type");
    match domain::event_type_problem(&e.kind) {
        None => {}
        Some(domain::EventTypeProblem::Shape) => {
            return Err(bad(
                type_field,
                "expected an event type such as order or topup: 1 to 64 of a-z, 0-9, _ - .",
            ));
        }
        Some(domain::EventTypeProblem::Reserved) => {
            return Err(bad(
                type_field,
                "reserved for SMS replies and agent outcomes; expected a business event type such as order",
            ));
        }
    }
    if let Some(v) = &e.value {
        line(
            &json_path(prefix, "value"),
            v,
            256,
            "the offer or product id",
        )?;
    }
    let received_at = match &e.at {
        None => now,
        Some(at) => {
            let field = json_path(prefix, "at");
            let t = DateTime::parse_from_rfc3339(at)
                .map_err(|_| {
                    bad(
                        &field,
                        "expected an RFC 3339 time such as 2026-09-01T10:00:00+08:00",
                    )
                })?
                .timestamp_millis();
            if t > now + MAX_SKEW_MS {
                return Err(bad(
                    field,
                    "in the future; expected the time the event happened",
                ));
            }
            t
        }
    };
    Ok(NewInbound {
        source: source::EVENT,
        idem_key: None,
        msisdn: Some(number),
        kind: e.kind,
        value: e.value,
        payload: value.to_string(),
        received_at,
    })
}
