//! The call-centre queue: an agent takes its next task (`POST /tasks/next`), puts one back
//! for an agreed time (`POST /tasks/{id}/callback`), and a dialer takes batches
//! (`POST /dialer/batches`) and reports their outcomes (`POST /dialer/outcomes`).
//!
//! A dialer is an agent token of its team (`campaignd token create --role agent --team T
//! --name dialer-1`): it sees and holds only its team's tasks, like the agents it stands
//! in for, and every take and report is on the record under its name.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use store::audit::action;
use store::auth::Role;
use store::calls::{Callback, Renewal};
use store::inbound::TaskState;
use tracing::info;

use crate::Shared;
use crate::auth::Caller;
use crate::error::{ApiError, bad};
use crate::tasks::{CALL_BACK_LATER, TaskDto, not_held, parse_id};

/// How long `POST /tasks/next` holds a task for its agent: a call and its notes. A hold
/// that runs out returns the task to the queue.
pub(crate) const NEXT_HOLD_MS: i64 = 15 * 60_000;
/// The most tasks one dialer batch takes.
pub(crate) const MAX_BATCH: u64 = 500;
/// The longest hold a dialer may ask for a batch, in minutes (a working shift).
pub(crate) const MAX_BATCH_HOLD_MINUTES: u64 = 480;
/// The most outcomes one dialer report carries.
pub(crate) const MAX_REPORT: usize = 500;

/// The caller's team: the queue routes are for agent tokens, each bound to one, and (with a
/// teams file) named in that team's `agents`.
pub(crate) fn team_of(
    state: &Shared,
    who: &store::auth::Principal,
    route: &str,
) -> Result<String, ApiError> {
    match (&who.role, &who.team) {
        (Role::Agent, Some(team)) => {
            on_roster(state, who, team, true, route)?;
            Ok(team.clone())
        }
        _ => Err(ApiError::Forbidden(format!(
            "{route} is for agent tokens (bound to a team): it holds tasks for the caller, {} is {}",
            who.name,
            who.role.as_str()
        ))),
    }
}

/// The one roster check: with a teams file, an agent token works a call-centre team's tasks
/// only while its name is in that team's `agents` as the daemon read them at start, so a
/// supervisor who removes an agent from the file takes its access away on the next
/// restart, whatever tokens it still has. `queue`: the route is the team's queue, which a
/// team the file does not declare (a service desk of `staff.yaml`) has none of; a service
/// desk's own tasks (`queue` false) are not the teams file's to allow.
pub(crate) fn on_roster(
    state: &Shared,
    who: &store::auth::Principal,
    team: &str,
    queue: bool,
    route: &str,
) -> Result<(), ApiError> {
    let Some(dir) = &state.call_teams else {
        return Ok(());
    };
    match dir.teams.get(team) {
        Some(t) if t.agents.contains(&who.name) => Ok(()),
        Some(t) => Err(ApiError::Forbidden(format!(
            "{route}: agent {} is not in team {team}'s agents in {} ({}); a supervisor adds it there and restarts the daemon",
            who.name,
            dir.file,
            t.agents.join(", ")
        ))),
        None if queue => {
            let mut ids: Vec<&str> = dir.teams.keys().map(String::as_str).collect();
            ids.sort_unstable();
            Err(ApiError::Forbidden(format!(
                "{route}: team {team} of agent {} is not a call-centre team of {} ({}): it has no queue",
                who.name,
                dir.file,
                ids.join(", ")
            )))
        }
        None => Ok(()),
    }
}

/// A JSON object body with only `known` fields (an empty body is `{}`).
fn object(body: &Bytes, known: &[&str], example: &str) -> Result<Map<String, Value>, ApiError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| bad("body", format!("expected JSON: {e}")))?
    };
    let Value::Object(obj) = value else {
        return Err(bad(
            "body",
            format!("expected a JSON object such as {example}"),
        ));
    };
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(
            k.clone(),
            format!("unknown field; expected one of {}", known.join(", ")),
        ));
    }
    Ok(obj)
}

/// An optional whole number field from 1 to `max`.
fn whole(obj: &Map<String, Value>, field: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| bad(field, format!("expected a whole number from 1 to {max}"))),
    }
}

/// `POST /tasks/next`: holds the best free task of the caller's team for the caller.
#[utoipa::path(post, path = "/tasks/next", tag = "tasks",
    request_body(content = Object, description = "Empty, or `{}`"),
    responses(
        (status = 200, description = "The task now held by the caller for 15 minutes (or the one it already holds): a due `call back later` first, then the most valuable subscriber, then the soonest due; with the outcomes it takes, the subscriber's number masked and the details the catalogue shows to agents", body = NextTask),
        (status = 204, description = "Nothing in the team's queue now"),
        (status = 400, description = "A body other than `{}`", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Not an agent token, or one not in its team's `agents` in teams.yaml (as read at daemon start)", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn next(
    State(state): State<Shared>,
    Extension(Caller(who)): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let team = team_of(&state, &who, "POST /tasks/next")?;
    object(&body, &[], "{}")?;
    let now = (state.now)();
    // An agent works one call at a time: asking again (a reloaded page) gives back the
    // task it holds rather than a second one.
    let task = match state
        .store
        .held_tasks(&team, &who.name, 1, now)
        .await?
        .pop()
    {
        Some(t) => Some(t),
        None => state
            .store
            .claim_tasks(&team, &who.name, 1, now + NEXT_HOLD_MS, now)
            .await?
            .pop(),
    };
    let Some(task) = task else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    state
        .store
        .audit(
            now,
            &who.name,
            action::TAKE_TASKS,
            &format!("task {}", task.id),
            Some(&format!("team {team}")),
        )
        .await?;
    info!(task = task.id, agent = %who.name, "Task taken from the queue.");
    let outcomes = match state
        .store
        .task_terms(task.id)
        .await?
        .and_then(|t| t.outcomes)
    {
        Some(list) => list,
        None => domain::DEFAULT_OUTCOMES
            .iter()
            .map(|o| o.to_string())
            .collect(),
    };
    // The agent sees the number masked, like every log line: the dialer or softphone
    // places the call, and the script names what the agent may say.
    let msisdn = state
        .store
        .msisdns_of(&[task.subscriber_id])
        .await?
        .pop()
        .map(|(_, m)| domain::mask(&m));
    // What the catalogue allows agents to see (`agents: true`), and nothing else.
    let details = match state.store.subscriber(task.subscriber_id).await? {
        Some(sub) => sub
            .attrs
            .catalogue()
            .declared()
            .zip(sub.attrs.values())
            .filter(|(a, v)| a.agents && !v.is_null())
            .map(|(a, v)| Detail {
                name: a.name.clone(),
                value: v.to_text(),
                unit: a.unit.clone(),
            })
            .collect(),
        None => Vec::new(),
    };
    let timezone = state
        .call_teams
        .as_ref()
        .and_then(|d| d.teams.get(&team))
        .map(|t| t.timezone.clone());
    Ok(Json(NextTask {
        task: TaskDto::new(task, now),
        outcomes,
        msisdn,
        details,
        timezone,
    })
    .into_response())
}

/// One subscriber detail an agent may see.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Detail {
    /// The catalogue attribute's name, e.g. `value_tier`.
    name: String,
    /// Its value as text (decimals with two places).
    value: String,
    /// Its unit, when the catalogue declares one.
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
}

/// `POST /tasks/next`'s answer: the task, what may be recorded on it, and the subscriber's
/// details an agent may see.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NextTask {
    #[serde(flatten)]
    task: TaskDto,
    /// The outcomes the task's workflow declares (`POST /tasks/{id}/outcome`).
    outcomes: Vec<String>,
    /// The subscriber's number, masked (`138****0001`).
    msisdn: Option<String>,
    /// The subscriber's attributes the catalogue shows to agents (`agents: true` in
    /// `attributes.yaml`), in catalogue order; empty ones are left out.
    details: Vec<Detail>,
    /// The team's IANA time zone (`timezone` in teams.yaml, e.g. `Asia/Shanghai`): the
    /// agents' page shows times and picks a call-back time in it. Absent without a teams file.
    timezone: Option<String>,
}

/// `POST /tasks/{id}/callback` with `{"at": "2026-12-01T18:30:00+08:00"}`.
#[utoipa::path(post, path = "/tasks/{id}/callback", tag = "tasks",
    params(("id" = i64, Path, description = "The task id")),
    request_body(content = Object, description = "`at`: when to call back, RFC 3339 with its offset; after now, before the task's deadline, within its team's working hours (within 30 days for a task without a deadline)"),
    responses(
        (status = 200, description = "Re-queued: `{\"id\", \"callback_at\"}`; the task stays open, the queue serves it again from then, first among the free tasks, to the caller alone for 10 minutes and then to anyone of the team", body = Object),
        (status = 400, description = "Bad input: `at` missing, not RFC 3339, not after now, not before the task's deadline, or outside the team's hours; nothing changed", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Not an agent token, one not in its team's `agents` in teams.yaml (as read at daemon start), or another team's task", body = crate::error::ErrorBody),
        (status = 404, description = "No such task", body = crate::error::ErrorBody),
        (status = 409, description = "The caller does not hold the task, or it is no longer open", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn callback(
    State(state): State<Shared>,
    Extension(Caller(who)): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let team = team_of(&state, &who, "POST /tasks/{id}/callback")?;
    let id = parse_id(&id)?;
    let obj = object(&body, &["at"], r#"{"at": "2026-12-01T18:30:00+08:00"}"#)?;
    let at = requeue(&state, &who.name, &team, id, "at", obj.get("at")).await?;
    Ok(Json(json!({ "id": id, "callback_at": at })))
}

/// The longest a call back may be put off for a task without a deadline (a service task).
pub(crate) const MAX_CALLBACK_AHEAD_MS: i64 = 30 * 24 * 3_600_000;

/// Puts task `id` of `team`, held by `holder`, back in the queue for the time in `raw` (the
/// body's `field`): RFC 3339, after now, before the task's deadline (else it would expire
/// unserved), within its team's working hours (nobody would be there to call). Every
/// refusal names `field` and changes nothing. Returns the time, in Unix milliseconds.
pub(crate) async fn requeue(
    state: &Shared,
    holder: &str,
    team: &str,
    id: i64,
    field: &str,
    raw: Option<&Value>,
) -> Result<i64, ApiError> {
    let at = match raw {
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|_| {
                bad(
                    field,
                    "expected an RFC 3339 time with its offset, e.g. 2026-12-01T18:30:00+08:00",
                )
            })?
            .timestamp_millis(),
        Some(_) => return Err(bad(field, "expected a string")),
        None => {
            return Err(bad(field, "missing; expected when to call back (RFC 3339)"));
        }
    };
    let now = (state.now)();
    if at <= now {
        return Err(bad(field, "expected a time after now"));
    }
    let Some(task) = state.store.task(id).await? else {
        return Err(ApiError::NotFound(format!("no task {id}")));
    };
    if task.team != team {
        return Err(ApiError::Forbidden(format!(
            "task {id} belongs to another team than agent {holder}'s"
        )));
    }
    if task.deadline.is_none() && at > now + MAX_CALLBACK_AHEAD_MS {
        return Err(bad(field, "expected a time within 30 days"));
    }
    if let Some(hours) = &state.call_hours
        && let Some(Err(h)) = hours(team, at)
    {
        return Err(bad(
            field,
            format!("expected a time within team {team}'s working hours {h}"),
        ));
    }
    match state.store.callback_task(id, holder, at, now).await? {
        Callback::Requeued => {}
        Callback::NotFound => return Err(ApiError::NotFound(format!("no task {id}"))),
        Callback::Closed(s) => {
            return Err(ApiError::Conflict(format!(
                "task {id} is {s}, no longer open"
            )));
        }
        Callback::NotHeld => {
            let holder_now = state
                .store
                .task(id)
                .await?
                .and_then(|t| t.holder_at(now).map(str::to_owned));
            return Err(not_held(id, holder, holder_now.as_deref()));
        }
        Callback::AfterDeadline(d) => {
            return Err(bad(
                field,
                format!("expected a time before the task's deadline {}", rfc3339(d)),
            ));
        }
    }
    state
        .store
        .audit(
            now,
            holder,
            action::CALLBACK,
            &format!("task {id}"),
            Some(&format!("call back at {}", rfc3339(at))),
        )
        .await?;
    info!(task = id, agent = %holder, at, "Task re-queued for a call back.");
    Ok(at)
}

/// An RFC 3339 time with its offset, in Unix milliseconds.
fn rfc3339_ms(raw: &Value) -> Option<i64> {
    let s = raw.as_str()?;
    Some(
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()?
            .timestamp_millis(),
    )
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| ms.to_string())
}

/// `POST /tasks/{id}/hold`: the holder keeps its task for another 15 minutes.
#[utoipa::path(post, path = "/tasks/{id}/hold", tag = "tasks",
    params(("id" = i64, Path, description = "The task id")),
    request_body(content = Object, description = "Empty, or `{}`"),
    responses(
        (status = 200, description = "Held for another 15 minutes from now (never past the task's deadline): `{\"id\", \"held_until\"}`", body = Object),
        (status = 400, description = "A body other than `{}`, or a bad id", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Not an agent token, one not in its team's `agents` in teams.yaml (as read at daemon start), or another team's task", body = crate::error::ErrorBody),
        (status = 404, description = "No such task", body = crate::error::ErrorBody),
        (status = 409, description = "The caller does not hold the task (its hold ran out, or someone else holds it), or it is no longer open", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn renew(
    State(state): State<Shared>,
    Extension(Caller(who)): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let team = team_of(&state, &who, "POST /tasks/{id}/hold")?;
    let id = parse_id(&id)?;
    object(&body, &[], "{}")?;
    let now = (state.now)();
    let Some(task) = state.store.task(id).await? else {
        return Err(ApiError::NotFound(format!("no task {id}")));
    };
    if task.team != team {
        return Err(ApiError::Forbidden(format!(
            "task {id} belongs to another team than agent {}'s",
            who.name
        )));
    }
    match state
        .store
        .renew_hold(id, &who.name, now + NEXT_HOLD_MS, now)
        .await?
    {
        Renewal::Renewed(until) => {
            info!(task = id, agent = %who.name, until, "Hold renewed.");
            Ok(Json(json!({ "id": id, "held_until": until })))
        }
        Renewal::NotFound => Err(ApiError::NotFound(format!("no task {id}"))),
        Renewal::Closed(s) => Err(ApiError::Conflict(format!(
            "task {id} is {s}, no longer open"
        ))),
        Renewal::NotHeld => {
            let holder = state
                .store
                .task(id)
                .await?
                .and_then(|t| t.holder_at(now).map(str::to_owned));
            Err(not_held(id, &who.name, holder.as_deref()))
        }
    }
}

/// `POST /dialer/batches` with `{"size": 50, "hold_minutes": 60}`.
#[utoipa::path(post, path = "/dialer/batches", tag = "tasks",
    request_body(content = Object, description = "`size`: 1 to 500 tasks (default 50); `hold_minutes`: how long they are held, 1 to 480 (default 60)"),
    responses(
        (status = 200, description = "The tasks now held by the dialer, best first (possibly none): `{\"held_until\", \"tasks\": [...]}`", body = Object),
        (status = 400, description = "Bad input; nothing taken", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Not an agent (dialer) token, or one not in its team's `agents` in teams.yaml (as read at daemon start)", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn batch(
    State(state): State<Shared>,
    Extension(Caller(who)): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let team = team_of(&state, &who, "POST /dialer/batches")?;
    let obj = object(
        &body,
        &["size", "hold_minutes"],
        r#"{"size": 50, "hold_minutes": 60}"#,
    )?;
    let size = whole(&obj, "size", 50, MAX_BATCH)?;
    let hold = whole(&obj, "hold_minutes", 60, MAX_BATCH_HOLD_MINUTES)?;
    let now = (state.now)();
    let until = now + hold as i64 * 60_000;
    let tasks = state
        .store
        .claim_tasks(&team, &who.name, size as u32, until, now)
        .await?;
    if !tasks.is_empty() {
        let ids: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
        state
            .store
            .audit(
                now,
                &who.name,
                action::TAKE_TASKS,
                &format!("{} task(s)", tasks.len()),
                Some(&format!("team {team}: {}", ids.join(","))),
            )
            .await?;
    }
    info!(dialer = %who.name, tasks = tasks.len(), "Dialer batch taken.");
    let tasks: Vec<TaskDto> = tasks.into_iter().map(|t| TaskDto::new(t, now)).collect();
    Ok(Json(json!({ "held_until": until, "tasks": tasks })))
}

/// One report's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReportResult {
    task: i64,
    /// `recorded`; `requeued` (a `call_back_later` with its `call_back_at`: the task waits
    /// for that time); `already` (this report was taken before: nothing changed);
    /// `refused` (see `error`).
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `POST /dialer/outcomes` with `{"outcomes": [{"task": 12, "outcome": "accepted"}]}`.
#[utoipa::path(post, path = "/dialer/outcomes", tag = "tasks",
    request_body(content = Object, description = "`outcomes`: 1 to 500 of `{\"task\": ID, \"outcome\": OUTCOME}`, each outcome one of its task's workflow's `outcomes`. `call_back_later` may carry `call_back_at` (RFC 3339 with its offset): the task then stays open and comes back to the dialer at that time (after now, before its deadline, within its team's hours), as an agent's call back does. A report sent again changes nothing (`already`)."),
    responses(
        (status = 200, description = "One result per report, in order: `recorded`, `requeued` (a call back), `already` or `refused` with its `error`", body = Vec<ReportResult>),
        (status = 400, description = "Bad shape; nothing recorded", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Not an agent (dialer) token, or one not in its team's `agents` in teams.yaml (as read at daemon start)", body = crate::error::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn outcomes(
    State(state): State<Shared>,
    Extension(Caller(who)): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Vec<ReportResult>>, ApiError> {
    let team = team_of(&state, &who, "POST /dialer/outcomes")?;
    let obj = object(
        &body,
        &["outcomes"],
        r#"{"outcomes": [{"task": 12, "outcome": "accepted"}]}"#,
    )?;
    let Some(Value::Array(items)) = obj.get("outcomes") else {
        return Err(bad(
            "outcomes",
            "expected an array of {\"task\", \"outcome\"}",
        ));
    };
    if items.is_empty() || items.len() > MAX_REPORT {
        return Err(bad(
            "outcomes",
            format!("expected 1 to {MAX_REPORT} reports"),
        ));
    }
    // The whole shape first, so a malformed report records nothing.
    let mut reports = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("outcomes[{i}].{f}");
        let Value::Object(o) = item else {
            return Err(bad(
                format!("outcomes[{i}]"),
                "expected {\"task\", \"outcome\"}",
            ));
        };
        if let Some(k) = o
            .keys()
            .find(|k| !["task", "outcome", "call_back_at"].contains(&k.as_str()))
        {
            return Err(bad(
                at(k),
                "unknown field; expected task, outcome, call_back_at",
            ));
        }
        let task = o
            .get("task")
            .and_then(Value::as_i64)
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(at("task"), "expected the task id, a positive whole number"))?;
        let outcome = o
            .get("outcome")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .ok_or_else(|| bad(at("outcome"), "expected the outcome, 1 to 64 characters"))?;
        // A call-back time must read as one before anything is recorded; whether the
        // task can take it (its deadline, its team's hours) is each report's own answer.
        let call_back_at = match o.get("call_back_at") {
            None => None,
            Some(raw) => {
                if outcome != CALL_BACK_LATER {
                    return Err(bad(
                        at("call_back_at"),
                        format!("only with the outcome {CALL_BACK_LATER}, not {outcome}"),
                    ));
                }
                Some(rfc3339_ms(raw).ok_or_else(|| {
                    bad(
                        at("call_back_at"),
                        "expected an RFC 3339 time with its offset, e.g. 2026-12-01T18:30:00+08:00",
                    )
                })?)
            }
        };
        reports.push((task, outcome.to_owned(), call_back_at));
    }
    let mut out = Vec::with_capacity(reports.len());
    for (task, outcome, call_back_at) in reports {
        let refused = |error: String| ReportResult {
            task,
            result: "refused",
            error: Some(error),
        };
        let now = (state.now)();
        let Some(t) = state.store.task(task).await? else {
            out.push(refused(format!("no task {task}")));
            continue;
        };
        if t.team != team {
            out.push(refused(format!("task {task} belongs to another team")));
            continue;
        }
        if let Some(at) = call_back_at
            && t.state == TaskState::Open.as_str()
            && t.callback_at == Some(at)
            && t.callback_for.as_deref() == Some(who.name.as_str())
            && t.holder_at(now).is_none()
        {
            // The same call back reported again: the task already waits for that time.
            out.push(ReportResult {
                task,
                result: "already",
                error: None,
            });
            continue;
        }
        if t.state != TaskState::Open.as_str() {
            // Idempotent: the same report again changes nothing and says so.
            out.push(if t.outcome.as_deref() == Some(outcome.as_str()) {
                ReportResult {
                    task,
                    result: "already",
                    error: None,
                }
            } else {
                refused(format!(
                    "task {task} is {}{}",
                    t.state,
                    t.outcome
                        .map(|o| format!(" with outcome {o}"))
                        .unwrap_or_default()
                ))
            });
            continue;
        }
        let Some(terms) = state.store.task_terms_at(task, now).await? else {
            out.push(refused(format!("no task {task}")));
            continue;
        };
        let allowed: Vec<&str> = match &terms.outcomes {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => domain::DEFAULT_OUTCOMES.to_vec(),
        };
        if !allowed.contains(&outcome.as_str()) {
            out.push(refused(format!(
                "expected one of task {task}'s outcomes: {}",
                allowed.join(", ")
            )));
            continue;
        }
        if let Some(at) = call_back_at {
            // As an agent's `call back later` with a time: the task stays open and comes
            // back to this dialer at that time, first among the free tasks.
            let raw = Value::String(rfc3339(at));
            match requeue(&state, &who.name, &team, task, "call_back_at", Some(&raw)).await {
                Ok(_) => out.push(ReportResult {
                    task,
                    result: "requeued",
                    error: None,
                }),
                Err(
                    e @ (ApiError::BadRequest { .. }
                    | ApiError::NotFound(_)
                    | ApiError::Conflict(_)
                    | ApiError::Forbidden(_)),
                ) => out.push(refused(e.to_string())),
                Err(e) => return Err(e),
            }
            continue;
        }
        if state
            .store
            .complete_held_task(task, &outcome, &who.name, &who.name, now)
            .await?
        {
            state
                .store
                .audit(
                    now,
                    &who.name,
                    action::OUTCOME,
                    &format!("task {task}"),
                    Some(&format!("{outcome} (dialer {})", who.name)),
                )
                .await?;
            out.push(ReportResult {
                task,
                result: "recorded",
                error: None,
            });
            continue;
        }
        // Not held by the caller, or recorded meanwhile (then maybe the same report).
        match state.store.task(task).await? {
            Some(t) if t.state != TaskState::Open.as_str() => {
                out.push(if t.outcome.as_deref() == Some(outcome.as_str()) {
                    ReportResult {
                        task,
                        result: "already",
                        error: None,
                    }
                } else {
                    refused(format!("task {task} is {}", t.state))
                })
            }
            t => {
                let holder = t.as_ref().and_then(|t| t.holder_at(now).map(str::to_owned));
                out.push(refused(
                    not_held(task, &who.name, holder.as_deref()).to_string(),
                ));
            }
        }
    }
    Ok(Json(out))
}
