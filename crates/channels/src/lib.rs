//! Channels: how a planned contact leaves campaignd.
//!
//! Every channel sits behind one trait, [`Channel`]. The engine's dispatcher claims contacts,
//! commits the claim, then calls [`Channel::send_batch`] with no database transaction open,
//! then records each outcome. A channel never touches contact state itself.
//!
//! Architecture invariant: this crate knows nothing of the engine, the planner or waves; it
//! receives fully rendered messages carrying their idempotency key.

use async_trait::async_trait;

pub mod email;
pub mod sms;
pub mod worklist;

/// One rendered message for one subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// The contact row this message belongs to.
    pub contact_id: i64,
    /// Idempotency key, unique per (run, wave, subscriber). Goes to the gateway so that a
    /// repeated send after a crash can be recognised, and comes back in delivery reports.
    pub key: String,
    pub subscriber_id: i64,
    pub msisdn: String,
    /// Rendered text (SMS body, or the task's script/notes for agent tasks).
    pub text: String,
    pub campaign: String,
    pub wave: String,
    /// For agent tasks: the team that works them.
    pub team: Option<String>,
    /// For agent tasks with an SLA: when the task is due (Unix milliseconds).
    pub due_at: Option<i64>,
    /// For agent tasks with an SLA: the staff id an overdue task is escalated to.
    pub escalate_to: Option<String>,
    /// For agent tasks: the outcomes an agent may record (the workflow's `outcomes`).
    pub outcomes: Vec<String>,
    /// For e-mail: the rendered subject (`text` is the body).
    pub subject: Option<String>,
    /// For e-mail: the subscriber's address (the catalogue's `format: email` attribute);
    /// `None` when the subscriber has none, which the channel answers as unreachable.
    pub address: Option<String>,
}

/// What the channel says about a message it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The gateway's own reference, when it returns one.
    pub gateway_ref: Option<String>,
    /// True when the gateway only queued it (Kannel "3: Queued for later delivery").
    pub queued: bool,
}

/// Where [`Channel::send_each`] reports each message's result: its index in the batch, and
/// what the gateway said.
pub type ResultSink = tokio::sync::mpsc::UnboundedSender<(usize, Result<Accepted, SendError>)>;

/// Why a send failed; decides whether the dispatcher retries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later with backoff (timeouts, 5xx, connection refused).
    #[error("transient failure: {0}")]
    Transient(String),
    /// Worth retrying, but the gateway may already have taken the message (it did not
    /// answer in time, or the connection broke after the request went out): an
    /// at-most-once wave records it `unknown` instead of sending it again.
    #[error("no clear answer (the gateway may have taken it): {0}")]
    Ambiguous(String),
    /// Never retry: the gateway refused this message (bad number, not routable, auth).
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The gateway refused campaignd itself, not the message: rejected credentials
    /// (Kannel's 403 "Authorization failed"), or no sendsms at that URL (401/404). The
    /// same request fails the same way until an operator fixes the account, so it is not
    /// retried as such; the dispatcher pauses the channel and keeps the message queued.
    #[error("the gateway refused campaignd's account (credentials or URL): {0}")]
    Refused(String),
    /// The gateway asked campaignd to slow down (HTTP 429, or 503 with `Retry-After`) and
    /// did not take the message. The dispatcher pauses the channel for `retry_after` (for
    /// its breaker's cool-down when the gateway named no time) and gives the attempt back.
    #[error("gateway asked to slow down: {reason}")]
    Throttled {
        reason: String,
        retry_after: Option<std::time::Duration>,
    },
}

impl SendError {
    /// Exhaustive on purpose: a new variant must be classified.
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Transient(_) | SendError::Ambiguous(_) | SendError::Throttled { .. } => true,
            SendError::Permanent(_) | SendError::Refused(_) => false,
        }
    }
}

/// One way of reaching subscribers.
#[async_trait]
pub trait Channel: Send + Sync {
    /// The channel kind as workflow files name it: `sms`, `outbound_call`, `service`, `email`.
    fn kind(&self) -> &'static str;

    /// Sends a batch; returns one result per message, in the same order.
    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>>;

    /// Sends a batch and reports each result on `done` (with its index in `batch`) as soon as
    /// it is known, so the dispatcher can record it while the rest is in flight: a crash
    /// then leaves only the messages whose answer was not yet recorded in doubt, not the
    /// whole batch. The default reports everything once `send_batch` returns; a channel
    /// that sends concurrently overrides it. A closed `done` (the dispatcher gave up) does
    /// not stop the sends already started.
    async fn send_each(&self, batch: &[Outbound], done: ResultSink) {
        for (idx, res) in self.send_batch(batch).await.into_iter().enumerate() {
            let _ = done.send((idx, res));
        }
    }

    /// How long a message whose send was interrupted (the worker died with its answer
    /// unrecorded) waits before it is sent again, for the gateway's proof that it took it
    /// (Kannel's SMSC acknowledgement, DLR type 8). Zero for a channel that gives no such
    /// proof: the message is sent again as soon as its lease runs out.
    fn proof_grace(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Checks that the channel can work (gateway reachable, file writable) without sending.
    async fn healthcheck(&self) -> Result<(), SendError> {
        Ok(())
    }
}
