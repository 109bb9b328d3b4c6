//! Retention staff's alert worklist: the churn-warning episodes monitors opened
//! (`workflows/monitors/`), and what staff did about them. An agent's token is bound to a
//! team; for alerts that team is the staff id of `workflows/staff.yaml` the alert is
//! assigned to, so an agent reads and answers its own alerts only.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::alerts::{AlertOutcome, AlertRow, EpisodeState};
use store::audit::action;
use store::auth::Role;
use tracing::info;

use crate::Shared;
use crate::auth::Caller;
use crate::error::{ApiError, bad};
use crate::input::{Query, check_object, person_id};
use crate::tasks::parse_id;

const MAX_LIMIT: u64 = 1000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AlertDto {
    id: i64,
    monitor: String,
    subscriber_id: i64,
    /// The subscriber's number, masked (`138****0000`): staff look the customer up by id.
    msisdn: String,
    level: String,
    score: i32,
    /// Signals raised at the last change, comma-separated.
    signals: String,
    owner: String,
    /// `open` or `closed`.
    state: String,
    opened_at: i64,
    updated_at: i64,
    closed_at: Option<i64>,
    /// `recovered` or `churned`.
    close_reason: Option<String>,
    outcome: Option<String>,
    outcome_by: Option<String>,
}

impl From<AlertRow> for AlertDto {
    fn from(a: AlertRow) -> AlertDto {
        AlertDto {
            id: a.id,
            monitor: a.monitor,
            subscriber_id: a.subscriber_id,
            msisdn: domain::mask(&a.msisdn),
            level: a.level,
            score: a.score,
            signals: a.signals,
            owner: a.owner,
            state: a.state,
            opened_at: a.opened_at,
            updated_at: a.updated_at,
            closed_at: a.closed_at,
            close_reason: a.close_reason,
            outcome: a.outcome,
            outcome_by: a.outcome_by,
        }
    }
}

/// `GET /alerts?owner=..&state=open&limit=100`
#[utoipa::path(get, path = "/alerts", tag = "alerts",
    params(
        ("owner" = Option<String>, Query, description = "Only this staff member's alerts"),
        ("state" = Option<String>, Query, description = "open (default) or closed"),
        ("limit" = Option<u64>, Query, description = "1 to 1000, default 100"),
    ),
    responses(
        (status = 200, description = "Alerts, newest first", body = Vec<AlertDto>),
        (status = 400, description = "Bad parameter", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Role not allowed, or an agent asking for another owner's alerts", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<Shared>,
    Extension(Caller(who)): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<AlertDto>>, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    q.reject_unknown(&["owner", "state", "limit"])?;
    // An agent's team is its staff id: it reads its own alerts only.
    let owner = q.worklist("owner", "a staff id", &who)?;
    let episode_state = q.choice(
        "state",
        EpisodeState::Open,
        &EpisodeState::ALL,
        EpisodeState::as_str,
    )?;
    let limit = q.limit(100, MAX_LIMIT)?;
    let rows = state
        .store
        .alerts(owner.as_deref(), Some(episode_state), limit)
        .await?;
    let detail = format!("{} alert(s), state {}", rows.len(), episode_state.as_str());
    state
        .store
        .audit(
            (state.now)(),
            &who.name,
            action::READ_ALERTS,
            &format!("owner {}", owner.as_deref().unwrap_or("*")),
            Some(&detail),
        )
        .await?;
    Ok(Json(rows.into_iter().map(AlertDto::from).collect()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AlertOutcomeIn {
    outcome: String,
    by: String,
}

/// `POST /alerts/{id}/outcome` with `{"outcome": "retained", "by": "li.wei"}`
#[utoipa::path(post, path = "/alerts/{id}/outcome", tag = "alerts",
    params(("id" = i64, Path, description = "The alert id")),
    request_body(content = AlertOutcomeIn, description = "outcome: contacted, retained, lost or false_alarm (at most 4 KiB); a later one replaces an earlier one"),
    responses(
        (status = 200, description = "Recorded; `{\"id\", \"outcome\"}`", body = Object),
        (status = 400, description = "Bad input; nothing recorded", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Role not allowed, or another owner's alert", body = crate::error::ErrorBody),
        (status = 404, description = "No such alert", body = crate::error::ErrorBody),
        (status = 413, description = "Body over 4 KiB", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn outcome(
    State(state): State<Shared>,
    Extension(Caller(who)): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let owner = state
        .store
        .alert_owner(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no alert {id}")))?;
    if who.role == Role::Agent && Some(&owner) != who.team.as_ref() {
        return Err(ApiError::Forbidden(format!(
            "alert {id} is assigned to someone other than agent {}'s team",
            who.name
        )));
    }
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| bad("body", format!("expected JSON: {e}")))?;
    check_object(
        &value,
        "",
        &[("outcome", true), ("by", true)],
        r#"{"outcome": "retained", "by": "li.wei"}"#,
    )?;
    let o: AlertOutcomeIn =
        serde_json::from_value(value).map_err(|e| bad("body", e.to_string()))?;
    let outcome = AlertOutcome::parse(&o.outcome).ok_or_else(|| {
        let all: Vec<&str> = AlertOutcome::ALL.iter().map(|t| t.as_str()).collect();
        bad("outcome", format!("expected one of {}", all.join(", ")))
    })?;
    person_id("by", &o.by, "staff member")?;
    let now = (state.now)();
    if !state
        .store
        .record_alert_outcome(id, outcome, &o.by, now)
        .await?
    {
        return Err(ApiError::NotFound(format!("no alert {id}")));
    }
    state
        .store
        .audit(
            now,
            &who.name,
            action::OUTCOME,
            &format!("alert {id}"),
            Some(&format!("{} (by {})", outcome.as_str(), o.by)),
        )
        .await?;
    info!(
        alert = id,
        outcome = outcome.as_str(),
        "Alert outcome recorded."
    );
    Ok(Json(json!({ "id": id, "outcome": outcome.as_str() })))
}
