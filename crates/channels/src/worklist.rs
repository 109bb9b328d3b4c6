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
}

impl Worklist {
    /// `kind` is `outbound_call` or `service`.
    pub fn new(store: Store, kind: &'static str) -> Worklist {
        Worklist { store, kind }
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
