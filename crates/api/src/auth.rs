//! Who may call which route.
//!
//! Every route of [`crate::routes`] names its [`Access`]: open (probes and the OpenAPI
//! document, which reveal nothing the README does not), signed (Kannel's delivery reports:
//! the per-message HMAC in the URL is the credential, checked by the handler before it reads
//! or stores anything), or a set of roles, checked here before the body is read. A bearer
//! token is looked up by its SHA-256; an unknown or revoked token gets 401, a known one
//! without the route's role 403, and neither reaches the handler. While the database cannot
//! be asked, a token it confirmed in the last 15 minutes is still accepted (fail static: the
//! MO callbacks go on into the spool); any other gets 503.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use store::auth::{Principal, Role, Secret};
use tracing::{debug, warn};

/// How a route authenticates its callers.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// Anyone: liveness and readiness probes, the OpenAPI document.
    Open,
    /// The request carries its own proof (the DLR's per-message token); the handler checks
    /// it. Bearer tokens grant nothing here.
    Signed,
    /// A bearer token of one of these roles. `query_token`: the token may also come as the
    /// `token` query parameter (Kannel's get-url cannot send headers).
    Roles {
        roles: &'static [Role],
        query_token: bool,
    },
}

impl Access {
    /// The roles a bearer token needs, for the documentation; empty for open and signed.
    pub fn roles(&self) -> &'static [Role] {
        match self {
            Access::Roles { roles, .. } => roles,
            _ => &[],
        }
    }
}

/// A network in CIDR notation, e.g. `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: expected an address or a CIDR such as 10.0.0.0/8"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The gateway callbacks' own credentials and source-address allowlists.
#[derive(Debug, Clone, Default)]
pub struct CallbackAuth {
    /// Signs and checks the per-message token of delivery-report URLs. Without it every
    /// delivery report is refused (the daemon does not start without one).
    pub dlr_secret: Option<Secret>,
    /// Sources allowed to call `/callbacks/kannel/dlr`; empty: any.
    pub dlr_allow: Vec<Cidr>,
    /// Sources allowed to call `/callbacks/kannel/mo`; empty: any.
    pub mo_allow: Vec<Cidr>,
}

/// The peer address of a connection, put in each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// What the authorization layer of one route holds.
#[derive(Clone)]
pub(crate) struct Gate {
    pub(crate) access: Access,
    pub(crate) store: store::Store,
    /// Tokens the database confirmed lately, shared by every route.
    pub(crate) recent: Arc<RecentTokens>,
    /// Source allowlist of this route (callbacks only); empty: any.
    pub(crate) allow: Arc<Vec<Cidr>>,
}

pub(crate) fn unauthorized(error: &str) -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "error": error })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"campaignd\""),
    );
    resp
}

pub(crate) fn forbidden(error: String) -> Response {
    (StatusCode::FORBIDDEN, axum::Json(json!({ "error": error }))).into_response()
}

fn bearer(req: &Request, query_token: bool) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    if query_token {
        let q = req.uri().query()?;
        return url_param(q, "token");
    }
    None
}

/// One query parameter, percent-decoded (tokens are plain ASCII; anything else is no token).
fn url_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .then(|| v.to_owned())
    })
}

/// The authorization layer: runs before the body is read, so an unauthenticated caller
/// cannot make the server read (or wait for) a large body.
pub(crate) async fn authorize(State(g): State<Gate>, mut req: Request, next: Next) -> Response {
    if !g.allow.is_empty() {
        let peer = req.extensions().get::<Peer>().map(|p| p.0.ip());
        if !peer.is_some_and(|ip| g.allow.iter().any(|c| c.contains(ip))) {
            warn!(peer = ?peer, path = %req.uri().path(), "Callback from an address outside the allowlist refused.");
            return forbidden("source address not allowed".to_owned());
        }
    }
    let (roles, query_token) = match g.access {
        Access::Open | Access::Signed => return next.run(req).await,
        Access::Roles { roles, query_token } => (roles, query_token),
    };
    let Some(token) = bearer(&req, query_token) else {
        return unauthorized("missing credentials: send `Authorization: Bearer <token>`");
    };
    let principal = match g.store.principal_for_token(&token).await {
        Ok(Some(p)) => {
            g.recent.remember(&token, &p);
            p
        }
        Ok(None) => {
            g.recent.forget(&token);
            return unauthorized("unknown or revoked token");
        }
        Err(e) if let Some(p) = g.recent.recall(&token) => {
            // Fail static: Kannel's MO callbacks keep coming while the database is down,
            // and go to the spool; a token the database confirmed minutes ago still holds.
            warn!(error = %e, principal = %p.name, "Token lookup failed; the token was confirmed lately, so it is accepted.");
            p
        }
        Err(e) => {
            warn!(error = %e, "Token lookup failed.");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "error": "cannot check credentials now; retry shortly" })),
            )
                .into_response();
        }
    };
    if !roles.contains(&principal.role) {
        debug!(principal = %principal.name, role = %principal.role, path = %req.uri().path(), "Role not allowed on this route.");
        return forbidden(format!(
            "role {} may not use this route (allowed: {})",
            principal.role,
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    req.extensions_mut().insert(Caller(principal));
    next.run(req).await
}

/// How long a token the database confirmed is still accepted while the database cannot be
/// asked (a revocation made in that window takes effect when the database is back).
const RECENT_FOR: Duration = Duration::from_secs(15 * 60);
/// Tokens remembered at most; a full memory starts over (tokens are few: one per gateway,
/// team and operator).
const MAX_RECENT: usize = 1024;

/// Tokens the database confirmed lately, by their hash, used only when the database cannot
/// be asked (see [`authorize`]).
#[derive(Debug, Default)]
pub(crate) struct RecentTokens {
    seen: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl RecentTokens {
    fn remember(&self, token: &str, p: &Principal) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = store::auth::hash_token(token);
        if seen.len() >= MAX_RECENT && !seen.contains_key(&key) {
            seen.clear();
        }
        seen.insert(key, (p.clone(), Instant::now()));
    }

    fn forget(&self, token: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.remove(&store::auth::hash_token(token));
    }

    fn recall(&self, token: &str) -> Option<Principal> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&store::auth::hash_token(token))
            .filter(|(_, at)| at.elapsed() < RECENT_FOR)
            .map(|(p, _)| p.clone())
    }
}

/// The authenticated principal of a request (routes with [`Access::Roles`]).
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Principal);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_match_their_networks_only() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }
}
