//! Outbound-call and service waves: a contact becomes a task on a team's worklist, which
//! agents work through the API (`GET /tasks`, `POST /tasks/{id}/outcome`). Agents are the
//! scarce resource, so "sending" here is opening the task; the response is the outcome the
//! agent records.

use async_trait::async_trait;
use store::Store;
use store::inbound::NewTask;

use crate::{Accepted, Channel, Outbound, SendError};

pub struct Worklist {
    store: Store,
    kind: &'static str,
    /// Call-centre teams (`workflows/teams.yaml`): their tasks wait for the engine's
    /// release step and are worked through the queue.
    paced: Vec<String>,
}

impl Worklist {
    /// `kind` is `outbound_call` or `service`.
    pub fn new(store: Store, kind: &'static str) -> Worklist {
        Worklist {
            store,
            kind,
            paced: Vec::new(),
        }
    }

    /// The teams whose outbound-call tasks are paced (the teams file's ids).
    pub fn with_paced_teams(mut self, teams: Vec<String>) -> Worklist {
        self.paced = teams;
        self
    }
}

#[async_trait]
impl Channel for Worklist {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let rows: Vec<NewTask<'_>> = batch
            .iter()
            .map(|o| NewTask {
                contact_id: o.contact_id,
                team: o.team.as_deref().unwrap_or("unassigned"),
                kind: self.kind,
                subscriber_id: o.subscriber_id,
                script: o.text.as_str(),
                due_at: o.due_at,
                escalate_to: o.escalate_to.as_deref(),
                outcomes: &o.outcomes,
                queued: self.kind == domain::ChannelKind::OutboundCall.as_str()
                    && o.team.as_ref().is_some_and(|t| self.paced.contains(t)),
            })
            .collect();
        let now = store::wall_now();
        // Opening tasks is one transaction: either the whole batch is on the worklist or none.
        match self.store.open_tasks(&rows, now).await {
            Ok(_) => batch
                .iter()
                .map(|_| {
                    Ok(Accepted {
                        gateway_ref: None,
                        queued: false,
                    })
                })
                .collect(),
            Err(e) => batch
                .iter()
                .map(|_| Err(SendError::Transient(format!("cannot open tasks: {e}"))))
                .collect(),
        }
    }
}
