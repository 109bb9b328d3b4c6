//! One subscriber's story across campaigns (`campaignd why`): each wave that considered
//! them, and what came of it: left out (and by which rule), held out as control, or contacted
//! (when, how it went, how they responded).

use crate::contacts::Arm;
use crate::{Millis, Result, Store, query};

/// What one wave did with the subscriber.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A triggered campaign's gather let them into the run (before its first wave planned):
    /// `event:<type>` (an event of theirs) or `when` (its condition became true).
    Entered { by: String },
    /// A planner's rule left them out: `opt_out`, `frequency_cap`, `arbitration:<winner>`,
    /// `exclude:<name>`,
    /// `entry:<rule>`, ...
    LeftOut { reason: String },
    /// A contact row: treatment (to be sent) or control (held out, never sent).
    Contact {
        arm: Arm,
        channel: String,
        purpose: String,
        /// The experiment variant the subscriber was drawn into (a wave with `variants`).
        variant: Option<String>,
        /// First choice, or the second-choice fallback of a preferred wave.
        choice: domain::Choice,
        /// The stored state (`held`, `pending`, `sent`, `delivered`, `failed`, ...).
        state: String,
        sent_at: Option<Millis>,
        delivered_at: Option<Millis>,
        responded_at: Option<Millis>,
        /// `kind:value` of the response that counted, e.g. `reply:1`.
        response: Option<String>,
        last_error: Option<String>,
    },
}

/// One wave's part in the story.
#[derive(Debug, Clone, PartialEq)]
pub struct StoryStep {
    /// When the wave was planned.
    pub at: Millis,
    pub campaign: String,
    pub run_id: i64,
    pub wave: String,
    pub step: Step,
}

/// Decisions that a contact row already tells (the control arm).
const TOLD_BY_CONTACT: &str = "control_group";

impl Store {
    /// Every wave that considered `subscriber_id` (of `campaign` only, when given), oldest
    /// first.
    pub async fn subscriber_story(
        &self,
        subscriber_id: i64,
        campaign: Option<&str>,
    ) -> Result<Vec<StoryStep>> {
        let filter = if campaign.is_some() {
            " AND r.campaign = ?"
        } else {
            ""
        };
        let values = |first: i64| {
            let mut v: Vec<sea_orm::Value> = vec![first.into()];
            if let Some(c) = campaign {
                v.push(c.into());
            }
            v
        };
        let mut out = Vec::new();
        let contacts = query(
            self.db(),
            &format!(
                "SELECT r.campaign, c.run_id, w.wave, w.ordinal, COALESCE(w.planned_at, c.due_at) AS at, \
                 c.arm, c.channel, c.purpose, c.variant, c.choice, c.state, c.sent_at, c.delivered_at, c.responded_at, \
                 c.response, c.last_error \
                 FROM contact c JOIN wave_run w ON w.id = c.wave_run_id JOIN run r ON r.id = c.run_id \
                 WHERE c.subscriber_id = ?{filter} ORDER BY c.id"
            ),
            values(subscriber_id),
        )
        .await?;
        for r in &contacts {
            let arm: String = r.try_get("", "arm")?;
            out.push((
                r.try_get::<i32>("", "ordinal")?,
                StoryStep {
                    at: r.try_get("", "at")?,
                    campaign: r.try_get("", "campaign")?,
                    run_id: r.try_get("", "run_id")?,
                    wave: r.try_get("", "wave")?,
                    step: Step::Contact {
                        arm: Arm::parse(&arm).unwrap_or(Arm::Treatment),
                        channel: r.try_get("", "channel")?,
                        purpose: r.try_get("", "purpose")?,
                        variant: r.try_get("", "variant")?,
                        choice: domain::Choice::parse(&r.try_get::<String>("", "choice")?)
                            .unwrap_or(domain::Choice::First),
                        state: r.try_get("", "state")?,
                        sent_at: r.try_get("", "sent_at")?,
                        delivered_at: r.try_get("", "delivered_at")?,
                        responded_at: r.try_get("", "responded_at")?,
                        response: r.try_get("", "response")?,
                        last_error: r.try_get("", "last_error")?,
                    },
                },
            ));
        }
        let decisions = query(
            self.db(),
            &format!(
                "SELECT r.campaign, w.run_id, w.wave, w.ordinal, COALESCE(w.planned_at, 0) AS at, d.reason \
                 FROM decision d JOIN wave_run w ON w.id = d.wave_run_id JOIN run r ON r.id = w.run_id \
                 WHERE d.subscriber_id = ? AND d.reason <> '{TOLD_BY_CONTACT}'{filter}"
            ),
            values(subscriber_id),
        )
        .await?;
        for r in &decisions {
            out.push((
                r.try_get::<i32>("", "ordinal")?,
                StoryStep {
                    at: r.try_get("", "at")?,
                    campaign: r.try_get("", "campaign")?,
                    run_id: r.try_get("", "run_id")?,
                    wave: r.try_get("", "wave")?,
                    step: Step::LeftOut {
                        reason: r.try_get("", "reason")?,
                    },
                },
            ));
        }
        // Entries by a trigger come first in their run (ordinal -1): the gather precedes the
        // plan. The wave is the run's first.
        let entries = query(
            self.db(),
            &format!(
                "SELECT r.campaign, t.run_id, w.wave, t.entered_at AS at, e.type AS event_type \
                 FROM trigger_entry t JOIN run r ON r.id = t.run_id \
                 JOIN wave_run w ON w.run_id = t.run_id AND w.ordinal = 0 \
                 LEFT JOIN subscriber_event e ON e.id = t.event_id \
                 WHERE t.subscriber_id = ?{filter}"
            ),
            values(subscriber_id),
        )
        .await?;
        for r in &entries {
            let by = match r.try_get::<Option<String>>("", "event_type")? {
                Some(kind) => format!("event:{kind}"),
                None => "when".to_owned(),
            };
            out.push((
                -1,
                StoryStep {
                    at: r.try_get("", "at")?,
                    campaign: r.try_get("", "campaign")?,
                    run_id: r.try_get("", "run_id")?,
                    wave: r.try_get("", "wave")?,
                    step: Step::Entered { by },
                },
            ));
        }
        // Stable: a wave's two contacts (a preferred wave's first choice and its fallback)
        // keep the order they were written in (`ORDER BY c.id`).
        out.sort_by(|(oa, a), (ob, b)| (a.at, a.run_id, oa).cmp(&(b.at, b.run_id, ob)));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }
}
