//! Health probes, reports and the OpenAPI document.
//!
//! Liveness and readiness answer different questions. `/livez` asks "should this process be
//! restarted?": only when its own loops stopped turning, never because the database is away
//! (restarting every replica while PostgreSQL restarts helps nobody). `/readyz` asks "should
//! traffic come here?": only when the database answers, the schema is the one this build
//! expects, and the engine is running.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use supervise::TaskReport;
use tracing::warn;
use utoipa::ToSchema;

use crate::Shared;
use crate::error::{ApiError, ErrorBody};
use crate::tasks::parse_id;

/// A probe's database queries give up after this: the kubelet's probe timeout is a few
/// seconds, and a pool waiting for a connection to a restarting server would outlast it.
const PROBE_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 only when the database answers, so a load balancer stops sending
/// callbacks to a replica that could not store them. Kept for existing load-balancer checks;
/// Kubernetes uses `/livez` and `/readyz`.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses(
        (status = 200, description = "The database answers", body = String, example = "ok"),
        (status = 503, description = "The database does not answer", body = String),
    ))]
pub(crate) async fn healthz(State(state): State<Shared>) -> (StatusCode, &'static str) {
    match tokio::time::timeout(PROBE_DB_TIMEOUT, state.store.db_now()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok"),
        Ok(Err(e)) => {
            warn!(error = %e, "Health check: database unavailable.");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
        Err(_) => {
            warn!("Health check: database did not answer in time.");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// Requests in flight against the limit.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InFlight {
    in_flight: usize,
    max_in_flight: usize,
}

/// What `/livez` and `/readyz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HealthBody {
    /// `alive` / `stalled` (liveness), `ready` / `not ready` (readiness).
    status: String,
    /// Readiness only: each check and `ok` or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Checks>,
    /// Supervised loops that ended unasked or have not turned within the stall bound.
    stalled: Vec<String>,
    http: InFlight,
    /// Every supervised background loop: restarts after panics and the last panic message.
    #[schema(value_type = Vec<TaskHealth>)]
    tasks: Vec<TaskReport>,
    /// Readiness only: each gateway channel's circuit breaker and start check.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gateways: Vec<crate::GatewayHealth>,
}

/// One supervised loop (documentation twin of `supervise::TaskReport`).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub(crate) struct TaskHealth {
    name: String,
    running: bool,
    beats: u64,
    since_beat_ms: u64,
    restarts: u64,
    last_panic: Option<String>,
    last_panic_at: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Checks {
    database: String,
    migrations: String,
    engine: String,
}

fn in_flight(state: &Shared) -> InFlight {
    let p = &state.probes;
    InFlight {
        in_flight: p.max_in_flight - p.in_flight.available_permits(),
        max_in_flight: p.max_in_flight,
    }
}

/// `GET /livez`: 200 while every supervised loop turns (restarts after a panic included);
/// 503 when one ended unasked or stalled. Never touches the database.
#[utoipa::path(get, path = "/livez", tag = "health",
    responses(
        (status = 200, description = "Alive", body = HealthBody),
        (status = 503, description = "A background loop died or stalled", body = HealthBody),
    ))]
pub(crate) async fn livez(State(state): State<Shared>) -> (StatusCode, Json<HealthBody>) {
    let p = &state.probes;
    let stalled = p.supervisor.dead_or_stalled(p.stall_after);
    let status = if stalled.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = HealthBody {
        status: if stalled.is_empty() {
            "alive"
        } else {
            "stalled"
        }
        .to_owned(),
        checks: None,
        stalled,
        http: in_flight(&state),
        tasks: p.supervisor.report(),
        gateways: Vec::new(),
    };
    (status, Json(body))
}

/// `GET /readyz`: 200 when the database answers, no migration of this build is pending and
/// the engine's loops have started (and are alive); 503 otherwise, with the failing check.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready for traffic", body = HealthBody),
        (status = 503, description = "Not ready; `checks` says why", body = HealthBody),
    ))]
pub(crate) async fn readyz(State(state): State<Shared>) -> (StatusCode, Json<HealthBody>) {
    let p = &state.probes;
    let database = match tokio::time::timeout(PROBE_DB_TIMEOUT, state.store.db_now()).await {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => {
            // The error text can name hosts and users; it stays in the log.
            warn!(error = %e, "Readiness: database unavailable.");
            "unreachable".to_owned()
        }
        Err(_) => "unreachable: no answer within 2 s".to_owned(),
    };
    let migrations = if database == "ok" {
        match tokio::time::timeout(PROBE_DB_TIMEOUT, state.store.pending_migrations()).await {
            Ok(Ok(pending)) if pending.is_empty() => "ok".to_owned(),
            Ok(Ok(pending)) => format!("pending: {}", pending.join(", ")),
            Ok(Err(e)) => {
                warn!(error = %e, "Readiness: migration table unreadable.");
                "unknown: migration table unreadable".to_owned()
            }
            Err(_) => "unknown: no answer within 2 s".to_owned(),
        }
    } else {
        "unknown: database unreachable".to_owned()
    };
    let engine = if !p.expect_engine {
        "ok".to_owned()
    } else {
        match p
            .supervisor
            .started()
            .into_iter()
            .find(|(n, _)| n == "housekeeping")
        {
            Some((_, true)) => "ok".to_owned(),
            _ => "not started".to_owned(),
        }
    };
    let stalled = p.supervisor.dead_or_stalled(p.stall_after);
    let ready = database == "ok" && migrations == "ok" && engine == "ok" && stalled.is_empty();
    let body = HealthBody {
        status: if ready { "ready" } else { "not ready" }.to_owned(),
        checks: Some(Checks {
            database,
            migrations,
            engine,
        }),
        stalled,
        http: in_flight(&state),
        tasks: p.supervisor.report(),
        gateways: p.gateways.as_ref().map(|g| g()).unwrap_or_default(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(crate::openapi::json);
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

/// `GET /runs/{id}/report`: the evaluation report stored when the run finished.
#[utoipa::path(get, path = "/runs/{id}/report", tag = "reports",
    params(("id" = i64, Path, description = "The run id, a positive whole number")),
    responses(
        (status = 200, description = "The stored report (evaluate::Report as JSON)", body = Object),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "No such run, or no report yet", body = ErrorBody),
    ))]
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

/// `GET /campaigns/{id}/seasons`: the campaign's finished runs rolled up by season, built
/// now (as `campaignd report CAMPAIGN --by-season --format json`).
#[utoipa::path(get, path = "/campaigns/{id}/seasons", tag = "reports",
    params(("id" = String, Path, description = "The campaign id: lowercase letters, digits and dashes")),
    responses(
        (status = 200, description = "Per season: runs, treated and control members (each once per season), goal rates, uplift with its confidence interval (evaluate::SeasonReport as JSON)", body = Object),
        (status = 400, description = "Bad campaign id", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 503, description = "Season reports are not served by this process", body = ErrorBody),
    ))]
pub(crate) async fn campaign_seasons(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(crate::error::bad(
            "id",
            "expected a campaign id: 1 to 64 lowercase letters, digits and dashes",
        ));
    }
    if state.store.versions(&id).await?.is_empty() {
        return Err(ApiError::NotFound(format!("no campaign {id}")));
    }
    let Some(seasons) = &state.seasons else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "season reports are not served by this process" })),
        )
            .into_response());
    };
    match seasons(id.clone()).await {
        Ok(Some(json)) => Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        Ok(None) => Err(ApiError::NotFound(format!("no campaign {id}"))),
        Err(e) => {
            tracing::error!(message = "Season report failed.", campaign = %id, error = %e);
            Ok((
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({ "error": "the season report could not be built" })),
            )
                .into_response())
        }
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}
