//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and the
//! DTOs' `ToSchema` derives. `tests/openapi.rs` checks that its paths are exactly the routes
//! of [`crate::route_table`].

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// `Authorization: Bearer <token>`: tokens come from `campaignd token create`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = doc.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "campaignd",
        description = "Gateway callbacks, business events, the agents' worklist, run reports and health probes of campaignd."
    ),
    paths(
        crate::ops::livez,
        crate::ops::readyz,
        crate::ops::healthz,
        crate::ops::openapi,
        crate::callbacks::dlr,
        crate::callbacks::mo,
        crate::events::post,
        crate::tasks::list,
        crate::tasks::outcome,
        crate::calls::next,
        crate::calls::callback,
        crate::calls::renew,
        crate::agent_page::page,
        crate::agent_page::script,
        crate::agent_page::style,
        crate::calls::batch,
        crate::calls::outcomes,
        crate::alerts::list,
        crate::alerts::outcome,
        crate::ops::run_report,
        crate::ops::campaign_seasons,
        crate::story::get,
        crate::approvals::approve,
        crate::approvals::audit,
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::error::ErrorBody)),
    tags(
        (name = "callbacks", description = "Kannel delivery reports and replies (MO)"),
        (name = "events", description = "Business events from other systems"),
        (name = "tasks", description = "The agents' worklist, the call-centre queue and dialers"),
        (name = "alerts", description = "Churn-warning alerts for retention staff"),
        (name = "reports", description = "Run evaluations and season roll-ups"),
        (name = "health", description = "Probes"),
        (name = "approvals", description = "Four-eyes approval of workflow versions, and the audit log"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON.
pub fn json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}
