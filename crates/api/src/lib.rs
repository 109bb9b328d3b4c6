//! The HTTP surface of campaignd: Kannel's delivery-report and MO callbacks, business events,
//! the agents' worklist, health and run reports.
//!
//! Architecture invariants:
//! - The only crate that knows HTTP and the JSON DTOs; HTTP error mapping lives here alone.
//! - Every inbound handler validates all its input first (a bad request gets 400 with
//!   `{"error", "field"}` and writes nothing), then stores the raw event and answers at once.
//!   Attribution runs later in the `tracking` crate, so a slow pass never slows Kannel down.
//! - Phone numbers are masked in logs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpSocket};
use tracing::debug;

mod callbacks;
mod error;
mod events;
mod input;
mod ops;
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
}

/// Room for a full batch of 10,000 events with long values.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// The listen backlog [`bind`] asks for (the kernel caps it at `net.core.somaxconn`).
/// smsbox opens many callback connections at once; with a small backlog the excess SYNs
/// are dropped and retried after 1 s and 3 s, which cut MO throughput from ~1,400/s to
/// ~17/s in our Kannel trials.
pub const LISTEN_BACKLOG: u32 = 4096;

/// The API, stamping inbound events with the wall clock.
pub fn router(state: AppState) -> Router {
    router_with_clock(state, Arc::new(store::wall_now))
}

/// The API, stamping inbound events (and judging event times) with `now`.
pub fn router_with_clock(state: AppState, now: Now) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/callbacks/kannel/dlr", get(callbacks::dlr))
        .route("/callbacks/kannel/mo", get(callbacks::mo))
        .route("/events", post(events::post))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}/outcome", post(tasks::outcome))
        .route("/runs/{id}/report", get(ops::run_report))
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Shared {
            store: state.store,
            now,
        })
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
/// flight. Bind with [`bind`] (port 0 works; read the port from `listener.local_addr()`
/// before calling this).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_clock(listener, state, Arc::new(store::wall_now), shutdown).await
}

/// [`serve`] with the clock the engine runs on; see [`Now`].
pub async fn serve_with_clock(
    listener: TcpListener,
    state: AppState,
    now: Now,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    debug!(addr = ?listener.local_addr().ok(), "HTTP API serving.");
    // Small responses on keep-alive connections: without TCP_NODELAY, Nagle and the peer's
    // delayed ACK add ~40 ms per callback (measured against Kannel).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "Could not set TCP_NODELAY on a connection.");
        }
    });
    axum::serve(listener, router_with_clock(state, now))
        .with_graceful_shutdown(shutdown)
        .await
}
