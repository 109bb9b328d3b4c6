//! `GET /subscribers/{msisdn}/story`: one subscriber's story across campaigns, as
//! `campaignd why` prints it.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde::Serialize;
use store::story::Step;

use crate::Shared;
use crate::error::ApiError;
use crate::input::{Query, line, mask, msisdn};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StoryDto {
    /// The number, masked (`138****8000`).
    msisdn: String,
    subscriber_id: i64,
    steps: Vec<StepDto>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StepDto {
    /// When the wave was planned (Unix milliseconds).
    at: i64,
    campaign: String,
    run_id: i64,
    wave: String,
    /// `entered` (a triggered campaign let them in), `left_out`, `control` or `contacted`.
    outcome: &'static str,
    /// The rule that left the subscriber out (`opt_out`, `frequency_cap`, `exclude:<name>`,
    /// `entry:<rule>`, ...), or what let them in (`event:<type>`, `when`).
    reason: Option<String>,
    channel: Option<String>,
    purpose: Option<String>,
    /// The experiment variant drawn for a wave with `variants`.
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    /// `first`, or `second` for a preferred wave's fallback (the first choice did not
    /// reach them); contacts only.
    #[serde(skip_serializing_if = "Option::is_none")]
    choice: Option<&'static str>,
    state: Option<String>,
    sent_at: Option<i64>,
    delivered_at: Option<i64>,
    responded_at: Option<i64>,
    /// `kind:value` of the response that counted, e.g. `reply:1`.
    response: Option<String>,
}

/// `GET /subscribers/{msisdn}/story?campaign=ID`: every wave that considered the subscriber
/// (of one campaign, when given), oldest first: left out by which rule, held out as
/// control, or contacted, and how it went.
#[utoipa::path(get, path = "/subscribers/{msisdn}/story", tag = "reports",
    params(
        ("msisdn" = String, Path, description = "The subscriber's number"),
        ("campaign" = Option<String>, Query, description = "Only this campaign's runs"),
    ),
    responses(
        (status = 200, description = "The story, oldest first", body = StoryDto),
        (status = 400, description = "Bad number or parameter", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown token", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin, operator or analyst", body = crate::error::ErrorBody),
        (status = 404, description = "No such subscriber", body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<Shared>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<StoryDto>, ApiError> {
    let number = msisdn("msisdn", &raw)?;
    let q = Query::parse(query.as_deref())?;
    q.reject_unknown(&["campaign"])?;
    let campaign = q.text("campaign")?;
    if let Some(c) = &campaign {
        line("campaign", c, 64, "a campaign id")?;
    }
    let Some(id) = state.store.subscriber_by_msisdn(&number).await? else {
        return Err(ApiError::NotFound(format!(
            "no subscriber {}",
            mask(&number)
        )));
    };
    let steps = state
        .store
        .subscriber_story(id, campaign.as_deref())
        .await?
        .into_iter()
        .map(|s| {
            let mut dto = StepDto {
                at: s.at,
                campaign: s.campaign,
                run_id: s.run_id,
                wave: s.wave,
                outcome: "left_out",
                reason: None,
                channel: None,
                purpose: None,
                variant: None,
                choice: None,
                state: None,
                sent_at: None,
                delivered_at: None,
                responded_at: None,
                response: None,
            };
            match s.step {
                Step::LeftOut { reason } => dto.reason = Some(reason),
                Step::Entered { by } => {
                    dto.outcome = "entered";
                    dto.reason = Some(by);
                }
                Step::Contact {
                    arm,
                    channel,
                    purpose,
                    variant,
                    choice,
                    state,
                    sent_at,
                    delivered_at,
                    responded_at,
                    response,
                    ..
                } => {
                    dto.outcome = match arm {
                        store::contacts::Arm::Control => "control",
                        store::contacts::Arm::Treatment => "contacted",
                    };
                    dto.channel = Some(channel);
                    dto.purpose = Some(purpose);
                    dto.variant = variant;
                    dto.choice = Some(choice.as_str());
                    dto.state = Some(state);
                    dto.sent_at = sent_at;
                    dto.delivered_at = delivered_at;
                    dto.responded_at = responded_at;
                    dto.response = response;
                }
            }
            dto
        })
        .collect();
    Ok(Json(StoryDto {
        msisdn: mask(&number),
        subscriber_id: id,
        steps,
    }))
}
