//! The agents' worklist: open call and service tasks, and the outcomes agents report.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::inbound::TaskRow;
use tracing::info;

use crate::Shared;
use crate::auth::Caller;
use crate::error::{ApiError, bad};
use crate::input::{Query, check_object, person_id};
use store::audit::action;
use store::auth::Role;
use store::inbound::TaskState;

const MAX_LIMIT: u64 = 1000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TaskDto {
    id: i64,
    contact_id: i64,
    team: String,
    kind: String,
    subscriber_id: i64,
    script: String,
    state: String,
    outcome: Option<String>,
    /// When the task is due (Unix milliseconds): opened + the wave's `sla`; absent without one.
    due_at: Option<i64>,
    /// Open past its due time now.
    overdue: bool,
    /// The staff id an overdue task goes to.
    escalate_to: Option<String>,
    /// When it was escalated (Unix milliseconds), if it was.
    escalated_at: Option<i64>,
    /// Worked through its team's queue (`POST /tasks/next`): only its holder records it.
    queued: bool,
    /// When it reached its team's queue (Unix milliseconds); absent while it waits for
    /// the team's pacing.
    released_at: Option<i64>,
    /// The subscriber's value the queue is ordered by (the teams file's `value`).
    value: Option<f64>,
    /// Who holds it now (an agent or dialer token's name); absent when free.
    held_by: Option<String>,
    /// Until when (Unix milliseconds) it is held.
    held_until: Option<i64>,
    /// A `call back later` time (Unix milliseconds): not served before it.
    callback_at: Option<i64>,
    /// When it expires unworked (Unix milliseconds): its wave's window close.
    deadline: Option<i64>,
}

impl TaskDto {
    pub(crate) fn new(t: TaskRow, now: i64) -> TaskDto {
        let held = t.holder_at(now).is_some();
        TaskDto {
            overdue: t.is_overdue(now),
            queued: t.queued,
            released_at: t.released_at,
            value: t.value,
            held_by: t.held_by.filter(|_| held),
            held_until: t.held_until.filter(|_| held),
            callback_at: t.callback_at,
            deadline: t.deadline,
            id: t.id,
            contact_id: t.contact_id,
            team: t.team,
            kind: t.kind,
            subscriber_id: t.subscriber_id,
            script: t.script,
            state: t.state,
            outcome: t.outcome,
            due_at: t.due_at,
            escalate_to: t.escalate_to,
            escalated_at: t.escalated_at,
        }
    }
}

/// `GET /tasks?team=..&state=open&limit=100`
#[utoipa::path(get, path = "/tasks", tag = "tasks",
    params(
        ("team" = Option<String>, Query, description = "Only this team's tasks"),
        ("state" = Option<String>, Query, description = "open (default), done or expired"),
        ("limit" = Option<u64>, Query, description = "1 to 1000, default 100"),
    ),
    responses(
        (status = 200, description = "Tasks, the soonest due first, then those without a due time; each group oldest first", body = Vec<TaskDto>),
        (status = 400, description = "Bad parameter", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Role not allowed, an agent asking for another team, or an agent not in its call-centre team's `agents` in teams.yaml", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<Shared>,
    Extension(Caller(who)): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<TaskDto>>, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    q.reject_unknown(&["team", "state", "limit"])?;
    // An agent sees its own team's tasks only (call scripts name subscribers).
    let team = q.worklist("team", "a team name", &who)?;
    if let (Role::Agent, Some(t)) = (who.role, &team) {
        crate::calls::on_roster(&state, &who, t, false, "GET /tasks")?;
    }
    let task_state = q.choice("state", TaskState::Open, &TaskState::ALL, TaskState::as_str)?;
    let limit = q.limit(100, MAX_LIMIT)?;
    let rows = state
        .store
        .tasks(team.as_deref(), task_state, limit)
        .await?;
    // Call scripts carry subscriber details: every read is on the record.
    let detail = format!("{} task(s), state {task_state}", rows.len());
    state
        .store
        .audit(
            (state.now)(),
            &who.name,
            action::READ_TASKS,
            &format!("team {}", team.as_deref().unwrap_or("*")),
            Some(&detail),
        )
        .await?;
    let now = (state.now)();
    Ok(Json(
        rows.into_iter().map(|t| TaskDto::new(t, now)).collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OutcomeIn {
    /// One of the task's workflow's `outcomes`.
    outcome: String,
    /// Who worked the task. An agent token records as itself: it may leave this out, and
    /// any other name is refused (403). An admin or operator (a supervisor closing a task)
    /// names the agent.
    #[serde(default)]
    agent: Option<String>,
    /// With `call_back_later` only, from the agent holding the task: the time agreed with
    /// the subscriber (RFC 3339 with its offset). The task is not closed but goes back to
    /// the queue for then, as `POST /tasks/{id}/callback` does.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    call_back_at: Option<Value>,
}

/// The outcome that, with a time, puts the task back in the queue instead of closing it.
pub(crate) const CALL_BACK_LATER: &str = "call_back_later";

/// `POST /tasks/{id}/outcome` with `{"outcome": "accepted", "agent": "agent-7"}`
#[utoipa::path(post, path = "/tasks/{id}/outcome", tag = "tasks",
    params(("id" = i64, Path, description = "The task id")),
    request_body(content = OutcomeIn, description = "outcome: one of the task's workflow's `outcomes` (by default accepted, refused, call_back_later or unreachable; at most 4 KiB). `call_back_later` with `call_back_at` re-queues the task for that time (the holder only) instead of closing it."),
    responses(
        (status = 200, description = "Recorded: `{\"id\", \"state\": \"done\", \"outcome\"}`; or re-queued for a call back: `{\"id\", \"state\": \"open\", \"outcome\": \"call_back_later\", \"callback_at\"}`", body = Object),
        (status = 400, description = "Bad input (`call_back_at` not RFC 3339, not after now, not before the task's deadline, outside the team's hours, or with another outcome); nothing recorded", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Role not allowed, another team's task, an agent not in its call-centre team's `agents` in teams.yaml, an agent token naming another agent, or `call_back_at` from a supervisor", body = crate::error::ErrorBody),
        (status = 404, description = "No such task", body = crate::error::ErrorBody),
        (status = 409, description = "The task's outcome was already reported, or (an agent) the task is queued and the caller does not hold it", body = crate::error::ErrorBody),
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
    let now = (state.now)();
    let Some(terms) = state.store.task_terms_at(id, now).await? else {
        return Err(ApiError::NotFound(format!("no task {id}")));
    };
    if who.role == Role::Agent && Some(&terms.team) != who.team.as_ref() {
        return Err(ApiError::Forbidden(format!(
            "task {id} belongs to another team than agent {}'s",
            who.name
        )));
    }
    if who.role == Role::Agent {
        crate::calls::on_roster(
            &state,
            &who,
            &terms.team,
            terms.queued,
            "POST /tasks/{id}/outcome",
        )?;
    }
    // An agent records a queued task only while holding it, and never one another agent
    // holds; a supervisor (admin, operator) may close any open task.
    let must_hold = who.role == Role::Agent
        && terms.state == TaskState::Open.as_str()
        && (terms.queued || terms.held_by.is_some());
    if must_hold && terms.held_by.as_deref() != Some(who.name.as_str()) {
        return Err(not_held(id, &who.name, terms.held_by.as_deref()));
    }
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| bad("body", format!("expected JSON: {e}")))?;
    check_object(
        &value,
        "",
        &[("outcome", true), ("agent", false), ("call_back_at", false)],
        r#"{"outcome": "accepted", "agent": "agent-7"}"#,
    )?;
    let o: OutcomeIn = serde_json::from_value(value).map_err(|e| bad("body", e.to_string()))?;
    // The task's own workflow says what may be recorded on it (`outcomes`).
    let allowed: Vec<&str> = match &terms.outcomes {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => domain::DEFAULT_OUTCOMES.to_vec(),
    };
    if !allowed.contains(&o.outcome.as_str()) {
        return Err(bad(
            "outcome",
            format!(
                "expected one of this task's outcomes: {}",
                allowed.join(", ")
            ),
        ));
    }
    // An agent token is one agent: it records as itself, never as a colleague.
    let agent = match (who.role, o.agent) {
        (Role::Agent, None) => who.name.clone(),
        (Role::Agent, Some(a)) if a == who.name => a,
        (Role::Agent, Some(a)) => {
            return Err(ApiError::Forbidden(format!(
                "agent: {} records as itself, not as {}; leave `agent` out or name the token's own agent",
                who.name,
                a.escape_debug()
            )));
        }
        (_, Some(a)) => a,
        (_, None) => {
            return Err(bad(
                "agent",
                "missing; a supervisor names the agent who worked the task",
            ));
        }
    };
    person_id("agent", &agent, "agent")?;
    if let Some(raw) = &o.call_back_at {
        if o.outcome != CALL_BACK_LATER {
            return Err(bad(
                "call_back_at",
                format!("only with the outcome {CALL_BACK_LATER}, not {}", o.outcome),
            ));
        }
        if who.role != Role::Agent {
            return Err(ApiError::Forbidden(format!(
                "call_back_at re-queues a task for the agent holding it; {} is {}: record the outcome without it to close the task",
                who.name, who.role
            )));
        }
        if terms.state != TaskState::Open.as_str() {
            return Err(ApiError::Conflict(format!(
                "task {id} is {}, no longer open; its outcome was already reported",
                terms.state
            )));
        }
        let at = crate::calls::requeue(
            &state,
            &who.name,
            &terms.team,
            id,
            "call_back_at",
            Some(raw),
        )
        .await?;
        return Ok(Json(json!({
            "id": id,
            "state": TaskState::Open.as_str(),
            "outcome": CALL_BACK_LATER,
            "callback_at": at,
        })));
    }
    let done = if must_hold {
        state
            .store
            .complete_held_task(id, &o.outcome, &agent, &who.name, (state.now)())
            .await?
    } else {
        state
            .store
            .complete_task(id, &o.outcome, &agent, (state.now)())
            .await?
    };
    if done {
        state
            .store
            .audit(
                (state.now)(),
                &who.name,
                action::OUTCOME,
                &format!("task {id}"),
                Some(&format!("{} (agent {agent})", o.outcome)),
            )
            .await?;
        info!(task = id, outcome = %o.outcome, agent = %agent, "Task completed.");
        return Ok(Json(
            json!({ "id": id, "state": TaskState::Done.as_str(), "outcome": o.outcome }),
        ));
    }
    match state.store.task_terms_at(id, (state.now)()).await? {
        None => Err(ApiError::NotFound(format!("no task {id}"))),
        Some(t) if t.state == TaskState::Open.as_str() => {
            Err(not_held(id, &who.name, t.held_by.as_deref()))
        }
        Some(t) => Err(ApiError::Conflict(format!(
            "task {id} is {}, no longer open; its outcome was already reported",
            t.state
        ))),
    }
}

/// The answer to an agent acting on a queued task it does not hold.
pub(crate) fn not_held(id: i64, agent: &str, holder: Option<&str>) -> ApiError {
    ApiError::Conflict(match holder {
        Some(h) if h != agent => format!("task {id} is held by {h}, not by {agent}"),
        _ => format!(
            "task {id} is not held by {agent} (its hold ran out, or it was never taken): take tasks with POST /tasks/next"
        ),
    })
}

pub(crate) fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| bad("id", "expected a positive whole number"))
}
