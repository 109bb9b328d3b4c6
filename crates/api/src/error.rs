//! The one place where failures become HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::{error, warn};

/// The body of every error answer (documentation of [`ApiError`]'s responses).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    /// What was wrong and what was expected.
    error: String,
    /// The offending field (400 only), e.g. `key`, `[2].msisdn`, `body`.
    field: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Bad input: names the field and says what was expected. Nothing was written.
    #[error("{field}: {error}")]
    BadRequest { field: String, error: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The credentials are missing or wrong (a DLR's token). Nothing was read or written.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed (another team's task, one's own version).
    #[error("{0}")]
    Forbidden(String),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// Too much is waiting already (the callback queue is full): nothing was written; the
    /// caller retries after a second.
    #[error("{0}")]
    Busy(String),
    /// The database cannot be reached now: nothing was written; the caller retries.
    #[error("database unavailable")]
    Unavailable,
    /// Failed inside for a reason already logged: nothing was written.
    #[error("internal error")]
    Internal,
}

fn retry_after(status: StatusCode, error: &str, secs: &'static str) -> Response {
    let mut r = (status, Json(json!({ "error": error }))).into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static(secs),
    );
    r
}

fn internal() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "error": "internal error, try again later" })),
    )
        .into_response()
}

pub(crate) fn bad(field: impl Into<String>, error: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        field: field.into(),
        error: error.into(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest { field, error } => (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": error, "field": field })),
            )
                .into_response(),
            ApiError::NotFound(error) => {
                (StatusCode::NOT_FOUND, Json(json!({ "error": error }))).into_response()
            }
            ApiError::Conflict(error) => {
                (StatusCode::CONFLICT, Json(json!({ "error": error }))).into_response()
            }
            ApiError::Unauthorized(error) => crate::auth::unauthorized(&error),
            ApiError::Forbidden(error) => crate::auth::forbidden(error),
            ApiError::Store(e) if e.is_unavailable() => {
                // The database is down or restarting: the sender (an event feed, a client)
                // is told to come back, not that something broke for good.
                warn!(error = %e, "Database unavailable; the request is refused for a retry.");
                ApiError::Unavailable.into_response()
            }
            ApiError::Store(e) => {
                // Details stay in the log; a 5xx makes Kannel retry the callback later.
                error!(error = %e, "Request failed in the store.");
                internal()
            }
            ApiError::Busy(error) => retry_after(StatusCode::SERVICE_UNAVAILABLE, &error, "1"),
            ApiError::Unavailable => retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable, retry shortly",
                "5",
            ),
            ApiError::Internal => internal(),
        }
    }
}
