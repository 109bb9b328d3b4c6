//! The HTTP surface of campaignd: Kannel's delivery-report and MO callbacks, business events,
//! the agents' worklist, health probes, run reports and the OpenAPI document.
//!
//! Architecture invariants:
//! - The only crate that knows HTTP and the JSON DTOs; HTTP error mapping lives here alone.
//! - Every inbound handler validates all its input first (a bad request gets 400 with
//!   `{"error", "field"}` and writes nothing), then stores the raw event and answers at once.
//!   Attribution runs later in the `tracking` crate, so a slow pass never slows Kannel down.
//! - Phone numbers are masked in logs.
//! - Every route is one row of [`routes`]: the router is built from that table and the
//!   OpenAPI document is checked against it (`tests/openapi.rs`), so a route cannot go
//!   undocumented, and each row names its own request-body limit.
//! - No client can hold the server: headers and bodies have read deadlines, requests in
//!   flight are capped (the excess gets 503 at once), and shutdown waits a bounded time.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use futures::FutureExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use supervise::Supervisor;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, error, warn};

pub mod agent_page;
mod alerts;
mod approvals;
pub mod auth;
mod callbacks;
mod calls;
mod error;
mod events;
#[cfg(test)]
mod fuzz;
mod inbox;
pub use inbox::stats as callback_stats;
mod input;
pub mod openapi;
mod ops;
pub mod spool;
mod story;
mod tasks;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: store::Store,
}

/// Stamps inbound events with their arrival time. It must be the clock the engine judges
/// response windows by: real time in production, the engine's scaled clock in demos and
/// end-to-end tests (stamped with wall time there, every reply would land after its window).
pub type Now = Arc<dyn Fn() -> store::Millis + Send + Sync>;

#[derive(Clone)]
struct Shared {
    store: store::Store,
    now: Now,
    probes: Arc<Probes>,
    /// The callbacks' signing secret and allowlists.
    callbacks: Arc<auth::CallbackAuth>,
    /// Stores the gateway's callbacks in groups, or spools them while the database cannot
    /// take them (see [`inbox`]).
    inbox: Arc<inbox::Inbox>,
    seasons: Option<SeasonReports>,
    call_hours: Option<CallHours>,
    call_teams: Option<Arc<CallTeams>>,
}

/// What the health routes read besides the database.
struct Probes {
    supervisor: Arc<Supervisor>,
    /// Readiness also waits for the engine's housekeeping loop to have begun (the daemon).
    expect_engine: bool,
    gateways: Option<GatewayStatus>,
    stall_after: Duration,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

/// Request bodies of the batched `/events` route: room for 10,000 events with long values.
pub const EVENTS_BODY: usize = 8 * 1024 * 1024;
/// Request bodies of every other route: a task outcome is under 200 bytes, and the Kannel
/// callbacks are GETs (their data is in the query, bounded by [`MAX_HEAD`]).
pub const SMALL_BODY: usize = 4 * 1024;
/// Request bodies of a dialer's outcome report: 500 reports of about 60 bytes.
pub const REPORT_BODY: usize = 64 * 1024;
/// Request line plus headers, per request. A Kannel MO callback with a 2,000-character
/// UTF-16 text, percent-encoded, needs about 12 KiB.
pub const MAX_HEAD: usize = 64 * 1024;

/// The listen backlog [`bind`] asks for (the kernel caps it at `net.core.somaxconn`).
/// smsbox opens many callback connections at once; with a small backlog the excess SYNs
/// are dropped and retried after 1 s and 3 s, which cut MO throughput from ~1,400/s to
/// ~17/s in our Kannel trials.
pub const LISTEN_BACKLOG: u32 = 4096;

/// The server's bounds against slow or greedy clients. [`Limits::default`] suits production.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A connection must deliver a request's line and headers within this (also how long an
    /// idle keep-alive connection is kept), or it is closed.
    pub header_read_timeout: Duration,
    /// A request's whole body must arrive within this, or the request gets 408.
    pub body_read_timeout: Duration,
    /// Requests handled at once (health probes, the OpenAPI document and the gateway's
    /// callbacks not counted: callbacks have their own bound, the callback queue); the
    /// excess is answered 503 with `Retry-After` at once rather than queued.
    pub max_in_flight: usize,
    /// Open connections; past this the server stops accepting and new ones wait in the
    /// listen backlog.
    pub max_connections: usize,
    /// After shutdown begins, requests in flight get this long to finish; then their
    /// connections are closed and [`serve_with`] returns.
    pub shutdown_grace: Duration,
    /// Liveness fails when a supervised loop has not begun an iteration for this long. Long
    /// enough for a housekeeping pass that plans a large wave.
    pub stall_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_in_flight: 512,
            max_connections: 8192,
            shutdown_grace: Duration::from_secs(20),
            stall_after: Duration::from_secs(300),
        }
    }
}

/// How [`serve_with`] runs.
#[derive(Clone)]
pub struct ServeOptions {
    /// See [`Now`].
    pub now: Now,
    pub limits: Limits,
    /// The process's supervised loops, for `/livez` and `/readyz`; the server records the
    /// panics it catches in handlers here too (task `api`).
    pub supervisor: Arc<Supervisor>,
    /// `/readyz` waits for the engine's `housekeeping` loop (the daemon sets this; an API
    /// served without an engine, as in tests, does not).
    pub expect_engine: bool,
    /// The DLR signing secret and the callbacks' source allowlists. The default has no
    /// secret, so every delivery report is refused: callbacks fail closed.
    pub callbacks: auth::CallbackAuth,
    /// Where Kannel's callbacks go while the database cannot take them (the daemon sets it;
    /// without one, such a callback is answered 500 and Kannel retries it a few times).
    pub spool: Option<Arc<spool::Spool>>,
    /// Each gateway channel's state (the engine's circuit breakers and the check at
    /// start), shown by `/readyz`. None: no gateways (an API served without an engine).
    pub gateways: Option<GatewayStatus>,
    /// Season roll-ups (the daemon sets it; without it the route answers 404 for campaigns
    /// with no stored version and 503 for the others).
    pub seasons: Option<SeasonReports>,
    /// The call-centre teams' working hours, which a `call back later` time must fall in
    /// (the daemon sets it from `workflows/teams.yaml`; without it no hours are checked).
    pub call_hours: Option<CallHours>,
    /// The call-centre teams' agents and time zones as the daemon read
    /// `workflows/teams.yaml` at start; without it (no teams file) agents are not checked
    /// against a team's `agents` and task details carry no zone.
    pub call_teams: Option<Arc<CallTeams>>,
}

/// The call-centre teams as the daemon read them at start. Handed in by the daemon, since
/// this crate does not read the teams file; a change to the file takes effect on restart.
#[derive(Debug, Clone, Default)]
pub struct CallTeams {
    /// Where they were read from, named in every refusal (`workflows/teams.yaml`).
    pub file: String,
    /// By team id.
    pub teams: std::collections::HashMap<String, CallTeam>,
}

/// One call-centre team, as far as the API needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTeam {
    /// The names of the agent (and dialer) tokens that may work its queue.
    pub agents: Vec<String>,
    /// Its IANA time zone (`Asia/Shanghai`): an agent's call-back time is picked in it.
    pub timezone: String,
}

/// Whether a time falls within a call-centre team's working hours: `None` when the team is
/// not declared (no hours to keep), `Some(Err(hours))` outside them, `hours` describing
/// them for the error (e.g. `09:00-21:00 Asia/Shanghai`). Handed in by the daemon, since
/// this crate does not read the teams file.
pub type CallHours = Arc<dyn Fn(&str, store::Millis) -> Option<Result<(), String>> + Send + Sync>;

/// Builds a campaign's season roll-up as JSON for `GET /campaigns/{id}/seasons`: the
/// engine's (`engine::season_report`), handed in by the daemon, since this crate does not
/// depend on the engine. `Ok(None)`: the campaign has no stored version.
pub type SeasonReports = Arc<
    dyn Fn(String) -> futures::future::BoxFuture<'static, Result<Option<String>, String>>
        + Send
        + Sync,
>;

/// Reads the gateways' state for `/readyz`.
pub type GatewayStatus = Arc<dyn Fn() -> Vec<GatewayHealth> + Send + Sync>;

/// One gateway channel as `/readyz` shows it. A paused gateway does not make the API
/// unready: callbacks must still be taken while an operator fixes the account.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct GatewayHealth {
    /// The channel kind (`sms`).
    pub channel: String,
    /// `closed` (sending), `open` (paused after failures or throttling), `half_open`
    /// (probing), `forced_open` (the gateway refused campaignd's account: an operator
    /// must fix the credentials or URL and restart).
    pub breaker: String,
    /// Why it is not closed.
    pub reason: Option<String>,
    /// The check made when the daemon started: `ok`, or what failed.
    pub start_check: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            now: Arc::new(store::wall_now),
            limits: Limits::default(),
            supervisor: Supervisor::new(),
            expect_engine: false,
            callbacks: auth::CallbackAuth::default(),
            spool: None,
            gateways: None,
            seasons: None,
            call_hours: None,
            call_teams: None,
        }
    }
}

/// One route: the router and the OpenAPI check are both built from [`routes`].
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// Largest request body accepted; more gets 413 before the handler runs.
    pub body_limit: usize,
    /// Counted against [`Limits::max_in_flight`]. Probes are not: a saturated replica is
    /// still alive, and shedding its probes would get it restarted.
    pub limited: bool,
    /// Who may call it (see [`auth`]).
    pub access: auth::Access,
    handler: MethodRouter<Shared>,
}

fn route<H, T>(
    access: auth::Access,
    method: Method,
    path: &'static str,
    body_limit: usize,
    handler: H,
) -> Route
where
    H: Handler<T, Shared>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    Route {
        method,
        path,
        body_limit,
        limited: true,
        access,
        handler: on(filter, handler),
    }
}

use auth::Access;
use store::auth::Role;

const OPEN: Access = Access::Open;
const SIGNED: Access = Access::Signed;
/// Kannel's MO get-url carries its gateway token as `?token=`; it cannot send headers.
const GATEWAY: Access = Access::Roles {
    roles: &[Role::Gateway],
    query_token: true,
};
const fn roles(roles: &'static [Role]) -> Access {
    Access::Roles {
        roles,
        query_token: false,
    }
}

fn probe(mut r: Route) -> Route {
    r.limited = false;
    r
}

/// The gateway's callbacks are bounded by the callback queue ([`inbox::QUEUE`]), not by
/// `max_in_flight`: one waiting for its group commit holds a row, not a handler at work,
/// and shedding it would lose a report from a gateway that retries little or not at all.
fn queued(mut r: Route) -> Route {
    r.limited = false;
    r
}

/// Every route the API serves (axum path syntax, `{id}` for parameters), with who may call
/// it. Admins may use every route except the gateway's callbacks and the call-centre
/// queue's, which hold tasks for the calling agent or dialer.
fn routes() -> Vec<Route> {
    use Role::*;
    vec![
        probe(route(OPEN, Method::GET, "/livez", SMALL_BODY, ops::livez)),
        probe(route(OPEN, Method::GET, "/readyz", SMALL_BODY, ops::readyz)),
        probe(route(
            OPEN,
            Method::GET,
            "/healthz",
            SMALL_BODY,
            ops::healthz,
        )),
        probe(route(
            OPEN,
            Method::GET,
            "/openapi.json",
            SMALL_BODY,
            ops::openapi,
        )),
        // The agents' page holds no data: it calls the task routes with the agent's token.
        route(OPEN, Method::GET, "/agent", SMALL_BODY, agent_page::page),
        route(
            OPEN,
            Method::GET,
            "/agent/app.js",
            SMALL_BODY,
            agent_page::script,
        ),
        route(
            OPEN,
            Method::GET,
            "/agent/app.css",
            SMALL_BODY,
            agent_page::style,
        ),
        queued(route(
            SIGNED,
            Method::GET,
            "/callbacks/kannel/dlr",
            SMALL_BODY,
            callbacks::dlr,
        )),
        queued(route(
            GATEWAY,
            Method::GET,
            "/callbacks/kannel/mo",
            SMALL_BODY,
            callbacks::mo,
        )),
        route(
            roles(&[Admin, Operator, Gateway]),
            Method::POST,
            "/events",
            EVENTS_BODY,
            events::post,
        ),
        route(
            roles(&[Admin, Operator, Agent]),
            Method::GET,
            "/tasks",
            SMALL_BODY,
            tasks::list,
        ),
        route(
            roles(&[Admin, Operator, Agent]),
            Method::POST,
            "/tasks/{id}/outcome",
            SMALL_BODY,
            tasks::outcome,
        ),
        route(
            roles(&[Agent]),
            Method::POST,
            "/tasks/next",
            SMALL_BODY,
            calls::next,
        ),
        route(
            roles(&[Agent]),
            Method::POST,
            "/tasks/{id}/callback",
            SMALL_BODY,
            calls::callback,
        ),
        route(
            roles(&[Agent]),
            Method::POST,
            "/tasks/{id}/hold",
            SMALL_BODY,
            calls::renew,
        ),
        route(
            roles(&[Agent]),
            Method::POST,
            "/dialer/batches",
            SMALL_BODY,
            calls::batch,
        ),
        route(
            roles(&[Agent]),
            Method::POST,
            "/dialer/outcomes",
            REPORT_BODY,
            calls::outcomes,
        ),
        route(
            roles(&[Admin, Operator, Agent]),
            Method::GET,
            "/alerts",
            SMALL_BODY,
            alerts::list,
        ),
        route(
            roles(&[Admin, Operator, Agent]),
            Method::POST,
            "/alerts/{id}/outcome",
            SMALL_BODY,
            alerts::outcome,
        ),
        route(
            roles(&[Admin, Operator, Approver, Analyst]),
            Method::GET,
            "/runs/{id}/report",
            SMALL_BODY,
            ops::run_report,
        ),
        route(
            roles(&[Admin, Operator, Approver, Analyst]),
            Method::GET,
            "/campaigns/{id}/seasons",
            SMALL_BODY,
            ops::campaign_seasons,
        ),
        route(
            roles(&[Admin, Operator, Analyst]),
            Method::GET,
            "/subscribers/{msisdn}/story",
            SMALL_BODY,
            story::get,
        ),
        route(
            roles(&[Admin, Approver]),
            Method::POST,
            "/versions/{id}/approve",
            SMALL_BODY,
            approvals::approve,
        ),
        route(
            roles(&[Admin]),
            Method::GET,
            "/audit",
            SMALL_BODY,
            approvals::audit,
        ),
    ]
}

/// (method, path, access) of every route the router serves.
pub fn route_access() -> Vec<(Method, &'static str, Access)> {
    routes()
        .into_iter()
        .map(|r| (r.method, r.path, r.access))
        .collect()
}

/// (method, path, body limit) of every route the router serves.
pub fn route_table() -> Vec<(Method, &'static str, usize)> {
    routes()
        .into_iter()
        .map(|r| (r.method, r.path, r.body_limit))
        .collect()
}

/// The API, stamping inbound events with the wall clock.
pub fn router(state: AppState) -> Router {
    router_with_clock(state, Arc::new(store::wall_now))
}

/// The API, stamping inbound events (and judging event times) with `now`.
pub fn router_with_clock(state: AppState, now: Now) -> Router {
    router_with(
        state,
        &ServeOptions {
            now,
            ..ServeOptions::default()
        },
    )
}

/// The API with the body limits, deadlines, load shedding and probes of `opts`.
pub fn router_with(state: AppState, opts: &ServeOptions) -> Router {
    let probes = Arc::new(Probes {
        supervisor: opts.supervisor.clone(),
        expect_engine: opts.expect_engine,
        gateways: opts.gateways.clone(),
        stall_after: opts.limits.stall_after,
        in_flight: Arc::new(Semaphore::new(opts.limits.max_in_flight)),
        max_in_flight: opts.limits.max_in_flight,
    });
    let callbacks = Arc::new(opts.callbacks.clone());
    let shared = Shared {
        store: state.store.clone(),
        now: opts.now.clone(),
        probes: probes.clone(),
        callbacks: callbacks.clone(),
        inbox: Arc::new(inbox::Inbox::new(state.store.clone(), opts.spool.clone())),
        seasons: opts.seasons.clone(),
        call_hours: opts.call_hours.clone(),
        call_teams: opts.call_teams.clone(),
    };
    let recent = Arc::new(auth::RecentTokens::default());
    let mut open = Router::new();
    let mut limited = Router::new();
    for r in routes() {
        let policy = BodyPolicy {
            limit: r.body_limit,
            timeout: opts.limits.body_read_timeout,
        };
        let allow = match r.path {
            "/callbacks/kannel/dlr" => callbacks.dlr_allow.clone(),
            "/callbacks/kannel/mo" => callbacks.mo_allow.clone(),
            _ => Vec::new(),
        };
        let gate = auth::Gate {
            access: r.access,
            store: state.store.clone(),
            recent: recent.clone(),
            allow: Arc::new(allow),
        };
        // Authorization is the outer layer: nobody unauthenticated gets a body read.
        let handler = r
            .handler
            .layer(from_fn_with_state(policy, read_body))
            .layer(from_fn_with_state(gate, auth::authorize));
        if r.limited {
            limited = limited.route(r.path, handler);
        } else {
            open = open.route(r.path, handler);
        }
    }
    let limited = limited.layer(from_fn_with_state(probes.clone(), shed));
    open.merge(limited)
        .fallback(ops::not_found)
        // The per-route limit is enforced by `read_body`; this only lifts axum's default so
        // the largest route limit is the one that applies.
        .layer(DefaultBodyLimit::max(EVENTS_BODY))
        .layer(from_fn_with_state(probes, catch_panic))
        .with_state(shared)
}

#[derive(Clone, Copy)]
struct BodyPolicy {
    limit: usize,
    timeout: Duration,
}

fn refuse(status: StatusCode, error: String) -> Response {
    let mut resp = (status, axum::Json(json!({ "error": error }))).into_response();
    // The rest of a refused body is never read; the connection cannot carry another request.
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Reads the whole body within the route's size limit and the body deadline before the
/// handler runs, so a handler never waits on a slow client.
async fn read_body(State(p): State<BodyPolicy>, req: Request, next: Next) -> Response {
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {} bytes", p.limit),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > p.limit as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, p.limit).collect();
    let bytes = match tokio::time::timeout(p.timeout, read).await {
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {} s",
                    p.timeout.as_secs_f32()
                ),
            );
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(e)) => {
            debug!(error = %e, "Request body could not be read.");
            return refuse(
                StatusCode::BAD_REQUEST,
                "request body could not be read".to_owned(),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Answers 503 at once when [`Limits::max_in_flight`] requests are being handled: queuing
/// them would only make every caller wait longer (Kannel retries a refused callback).
async fn shed(State(p): State<Arc<Probes>>, req: Request, next: Next) -> Response {
    let Ok(permit) = p.in_flight.clone().try_acquire_owned() else {
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "too many requests in flight; retry shortly" })),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    };
    let resp = next.run(req).await;
    drop(permit);
    resp
}

/// A panicking handler answers 500 and is counted under task `api`; the connection and the
/// server carry on.
async fn catch_panic(State(p): State<Arc<Probes>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(payload) => {
            let message = supervise::panic_message(payload.as_ref());
            error!(
                message = "Request handler panicked.",
                path = %path,
                panic = %supervise::mask_numbers(&message)
            );
            p.supervisor.record_panic("api", &message);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({ "error": "internal error, try again later" })),
            )
                .into_response()
        }
    }
}

/// Binds a listener for [`serve`] with a backlog of [`LISTEN_BACKLOG`].
/// `tokio::net::TcpListener::bind` listens with a backlog of only 128. Must be called inside
/// a Tokio runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then finishes the requests in
/// flight (for at most [`Limits::shutdown_grace`]). Bind with [`bind`] (port 0 works; read
/// the port from `listener.local_addr()` before calling this).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, ServeOptions::default(), shutdown).await
}

/// [`serve`] with the clock the engine runs on; see [`Now`].
pub async fn serve_with_clock(
    listener: TcpListener,
    state: AppState,
    now: Now,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let opts = ServeOptions {
        now,
        ..ServeOptions::default()
    };
    serve_with(listener, state, opts, shutdown).await
}

/// [`serve`] with every option. The accept loop runs under the supervisor (task
/// `api:accept`): a panic there is caught and the loop restarted on the same listener.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    debug!(addr = ?listener.local_addr().ok(), "HTTP API serving.");
    let app = router_with(state, &opts);
    let stop = CancellationToken::new();
    let stop_on_signal = stop.clone();
    let signal = tokio::spawn(async move {
        shutdown.await;
        stop_on_signal.cancel();
    });
    let ctx = ConnCtx {
        app,
        limits: opts.limits.clone(),
        connections: Arc::new(Semaphore::new(opts.limits.max_connections)),
        tracker: TaskTracker::new(),
        stop: stop.clone(),
        force: CancellationToken::new(),
    };
    opts.supervisor
        .run("api:accept", &stop, supervise::Backoff::default(), |hb| {
            accept_loop(&listener, &ctx, hb)
        })
        .await;
    // New connections are refused from here on; the ones open finish their request.
    drop(listener);
    signal.abort();
    ctx.tracker.close();
    if tokio::time::timeout(opts.limits.shutdown_grace, ctx.tracker.wait())
        .await
        .is_err()
    {
        warn!(
            message = "Shutdown grace passed with requests in flight; closing their connections.",
            grace_secs = opts.limits.shutdown_grace.as_secs_f32()
        );
        ctx.force.cancel();
        ctx.tracker.wait().await;
    }
    Ok(())
}

struct ConnCtx {
    app: Router,
    limits: Limits,
    connections: Arc<Semaphore>,
    tracker: TaskTracker,
    /// Shutdown began: stop accepting, let each connection finish its request and close.
    stop: CancellationToken,
    /// The grace is over: drop the connections still open.
    force: CancellationToken,
}

/// How often the idle accept loop beats, so liveness sees it waiting, not stuck (more often
/// when the stall bound is shorter).
const ACCEPT_BEAT: Duration = Duration::from_secs(5);

async fn accept_loop(listener: &TcpListener, ctx: &ConnCtx, hb: supervise::Heartbeat) {
    loop {
        hb.beat();
        let permit = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            p = ctx.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(ACCEPT_BEAT.min(ctx.limits.stall_after / 4)) => continue,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small responses on keep-alive connections: without TCP_NODELAY, Nagle and the
        // peer's delayed ACK add ~40 ms per callback (measured against Kannel).
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "Could not set TCP_NODELAY on a connection.");
        }
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(ctx.limits.header_read_timeout)
            .max_buf_size(MAX_HEAD)
            .keep_alive(true);
        // The callbacks' source allowlists read the peer address from the request.
        let service = TowerToHyperService::new(ctx.app.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(auth::Peer(peer));
                req
            },
        ));
        let stop = ctx.stop.clone();
        let force = ctx.force.clone();
        ctx.tracker.spawn(async move {
            let mut conn = pin!(builder.serve_connection(TokioIo::new(tcp), service));
            let mut draining = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            debug!(error = %e, "HTTP connection ended with an error.");
                        }
                        break;
                    }
                    _ = stop.cancelled(), if !draining => {
                        // Finishes the request in flight, then closes; idle ones close now.
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    _ = force.cancelled() => break,
                }
            }
            drop(permit);
        });
    }
}
