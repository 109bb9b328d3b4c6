//! The agents' page (`GET /agent`): a plain HTML page, its script and its style, all built
//! into the binary. The page and its assets are public (they hold no data); every call the
//! page makes is to the authenticated JSON routes (`POST /tasks/next`, `/tasks/{id}/outcome`,
//! `/tasks/{id}/hold`) with the agent's token, which the page keeps in `sessionStorage` and
//! never puts in a URL. The Content-Security-Policy allows only this origin's script, style
//! and `fetch`: no inline script, no other site, no framing.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("agent/page.html");
const SCRIPT: &str = include_str!("agent/app.js");
const STYLE: &str = include_str!("agent/app.css");

/// Only this origin's script, style and requests; nothing inline, nothing framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /agent`
#[utoipa::path(get, path = "/agent", tag = "tasks",
    responses((status = 200, description = "The agents' page (HTML): take the next task, read its script, record its outcome or a call back. It asks for an agent token once and calls the task routes with it", content_type = "text/html")))]
pub(crate) async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// `GET /agent/app.js`
#[utoipa::path(get, path = "/agent/app.js", tag = "tasks",
    responses((status = 200, description = "The agents' page's script", content_type = "text/javascript")))]
pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /agent/app.css`
#[utoipa::path(get, path = "/agent/app.css", tag = "tasks",
    responses((status = 200, description = "The agents' page's style", content_type = "text/css")))]
pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
