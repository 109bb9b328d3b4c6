//! Health and reports.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use crate::Shared;
use crate::error::ApiError;
use crate::tasks::parse_id;

/// `GET /healthz`: 200 only when the database answers, so a load balancer stops sending
/// callbacks to a replica that could not store them.
pub(crate) async fn healthz(State(state): State<Shared>) -> (StatusCode, &'static str) {
    match state.store.db_now().await {
        Ok(_) => (StatusCode::OK, "ok"),
        Err(e) => {
            warn!(error = %e, "Health check: database unavailable.");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// `GET /runs/{id}/report`: the evaluation report stored when the run finished.
pub(crate) async fn run_report(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if let Some(report) = state.store.run_report(id).await? {
        return Ok(([(header::CONTENT_TYPE, "application/json")], report).into_response());
    }
    Err(ApiError::NotFound(match state.store.run(id).await? {
        None => format!("no run {id}"),
        Some(run) => format!("run {id} has no report yet (state {})", run.state),
    }))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}
