//! Four-eyes approval of workflow versions, and reading the audit log.

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use serde::Serialize;
use serde_json::{Value, json};
use store::auth::Approval;
use tracing::info;

use crate::Shared;
use crate::auth::Caller;
use crate::error::{ApiError, bad};
use crate::input::Query;
use crate::tasks::parse_id;

/// `POST /versions/{id}/approve`: approves a workflow version as the caller, who must not be
/// the principal that loaded it. Runs of a version start only once it is approved.
#[utoipa::path(post, path = "/versions/{id}/approve", tag = "approvals",
    params(("id" = i64, Path, description = "The version id (`campaignd versions CAMPAIGN`)")),
    responses(
        (status = 200, description = "Approved; `{\"id\", \"approved_by\"}`", body = Object),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Not an approver, or the caller loaded this version (four eyes)", body = crate::error::ErrorBody),
        (status = 404, description = "No such version", body = crate::error::ErrorBody),
        (status = 409, description = "Already approved", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn approve(
    State(state): State<Shared>,
    Extension(Caller(who)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    match state
        .store
        .approve_version(id, &who.name, (state.now)())
        .await?
    {
        Approval::Approved => {
            info!(version = id, approver = %who.name, "Workflow version approved.");
            Ok(Json(json!({ "id": id, "approved_by": who.name })))
        }
        Approval::AlreadyApproved { by } => Err(ApiError::Conflict(format!(
            "version {id} is already approved by {by}"
        ))),
        Approval::OwnVersion => Err(ApiError::Forbidden(format!(
            "version {id} was loaded by {}; another approver must approve it (four eyes)",
            who.name
        ))),
        Approval::NoSuchVersion => Err(ApiError::NotFound(format!("no version {id}"))),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditDto {
    id: i64,
    /// Unix milliseconds.
    at: i64,
    principal: String,
    action: String,
    subject: String,
    detail: Option<String>,
}

/// `GET /audit?since=MILLIS`: the audit log from `since` (default: everything), oldest
/// first, at most 10,000 entries. There is no route that changes or deletes an entry.
#[utoipa::path(get, path = "/audit", tag = "approvals",
    params(("since" = Option<i64>, Query, description = "Unix milliseconds; entries at or after it")),
    responses(
        (status = 200, description = "Entries, oldest first", body = Vec<AuditDto>),
        (status = 400, description = "Bad parameter", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn audit(
    State(state): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<AuditDto>>, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    q.reject_unknown(&["since"])?;
    let since = match q.text("since")? {
        None => 0,
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| bad("since", "expected Unix milliseconds"))?,
    };
    let rows = state.store.audit_since(since).await?;
    Ok(Json(
        rows.into_iter()
            .take(10_000)
            .map(|r| AuditDto {
                id: r.id,
                at: r.at,
                principal: r.principal,
                action: r.action,
                subject: r.subject,
                detail: r.detail,
            })
            .collect(),
    ))
}
