//! Group commit of the gateway's callbacks (delivery reports and replies).
//!
//! Kannel sends two delivery reports per message (the SMSC's acknowledgement and the final
//! state), thousands a second at full pace. Stored one transaction each they held campaignd
//! at 0.41 of Kannel's own pace (`bench-dispatch --gateway kannel`). Here each request hands
//! its row to a queue and waits; a few writers each take whatever has queued (no timer: a
//! lone report goes at once, a burst goes together), store the batch in one transaction
//! (reports only for keys that are contacts') and answer every request. A callback is still
//! answered `200` only once it is committed, or spooled (fsynced) when the database cannot
//! take it.
//!
//! Bounds. A callback waiting here is not counted against the API's `max_in_flight`: it
//! holds a row and a channel, not a handler doing work, and shedding it would lose a report
//! from a gateway that does not retry (or retries only a few times, like Kannel). The queue
//! is the bound instead: when [`QUEUE`] callbacks wait, the next is answered `503` with
//! `Retry-After` at once, before anything is stored.
//!
//! Several writers, not one: while one commits, the next gathers the callbacks that came
//! meanwhile, so a callback waits for at most the batch being gathered, not for every batch
//! ahead of it. On SQLite (one connection) the writers take turns; on PostgreSQL they use
//! the pool.

use std::sync::{Arc, Mutex};

use store::inbound::NewInbound;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

/// Callbacks written together at most.
const MAX_BATCH: usize = 500;
/// Callbacks waiting for a writer before the next is refused with `503`.
pub(crate) const QUEUE: usize = 20_000;
/// Writers gathering and committing batches at the same time.
const WRITERS: usize = 3;

/// What became of one callback.
#[derive(Debug)]
pub(crate) enum Stored {
    /// Committed, or spooled for when the database is back.
    Ok,
    /// A delivery report whose key is no contact's: nothing stored.
    UnknownKey,
    /// [`QUEUE`] callbacks are waiting already: nothing stored; the gateway retries.
    Busy,
    /// The database is unavailable and there is no spool (or it cannot write): nothing
    /// stored; the gateway retries.
    Unavailable,
    /// The store refused the batch for another reason (logged): nothing stored.
    Failed,
}

struct Job {
    row: NewInbound,
    done: oneshot::Sender<Stored>,
}

type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>;

/// What the writers need, until the first callback starts them (the router may be built
/// outside a runtime).
type Idle = (
    mpsc::Receiver<Job>,
    store::Store,
    Option<Arc<crate::spool::Spool>>,
);

/// The handle requests use.
pub(crate) struct Inbox {
    tx: mpsc::Sender<Job>,
    start: Mutex<Option<Idle>>,
}

impl Inbox {
    pub(crate) fn new(store: store::Store, spool: Option<Arc<crate::spool::Spool>>) -> Inbox {
        let (tx, rx) = mpsc::channel(QUEUE);
        Inbox {
            tx,
            start: Mutex::new(Some((rx, store, spool))),
        }
    }

    /// Stores `row` (with the others that came meanwhile) and says how it went.
    pub(crate) async fn store(&self, row: NewInbound) -> Stored {
        if let Some((rx, store, spool)) = self
            .start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let rx: Queue = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..WRITERS {
                tokio::spawn(write_loop(rx.clone(), store.clone(), spool.clone()));
            }
        }
        let (done, answer) = oneshot::channel();
        match self.tx.try_send(Job { row, done }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Stored::Busy,
            Err(mpsc::error::TrySendError::Closed(_)) => return stopped(),
        }
        answer.await.unwrap_or_else(|_| stopped())
    }
}

fn stopped() -> Stored {
    error!("The callback writer stopped; callbacks are refused (the gateway retries).");
    Stored::Failed
}

async fn write_loop(rx: Queue, store: store::Store, spool: Option<Arc<crate::spool::Spool>>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        // The lock is held only while gathering, so the next writer gathers while this
        // one commits.
        let n = rx.lock().await.recv_many(&mut jobs, MAX_BATCH).await;
        if n == 0 {
            return;
        }
        write_batch(&store, spool.as_ref(), std::mem::take(&mut jobs)).await;
    }
}

async fn write_batch(
    store: &store::Store,
    spool: Option<&Arc<crate::spool::Spool>>,
    jobs: Vec<Job>,
) {
    let rows: Vec<NewInbound> = jobs.iter().map(|j| j.row.clone()).collect();
    match store.insert_inbound_known(&rows).await {
        Ok(stored) => {
            for (j, s) in jobs.into_iter().zip(stored) {
                let _ = j.done.send(if s { Stored::Ok } else { Stored::UnknownKey });
            }
        }
        // With the database down the signature alone vouches for a report's key.
        Err(e) => spool_all(spool, jobs, rows, e).await,
    }
}

/// The batch the database refused goes to the spool in one append (one fsync).
async fn spool_all(
    spool: Option<&Arc<crate::spool::Spool>>,
    jobs: Vec<Job>,
    rows: Vec<NewInbound>,
    err: store::StoreError,
) {
    let n = jobs.len();
    let spooled = match spool {
        Some(s) => match s.append(rows).await {
            Ok(()) => {
                warn!(message = "Database unavailable: callbacks spooled; stored when it is back.", callbacks = n, error = %err);
                true
            }
            Err(e) => {
                error!(message = "Database unavailable and the spool cannot write: callbacks refused (the gateway retries).", callbacks = n, error = %err, spool_error = %e);
                false
            }
        },
        None => false,
    };
    let unavailable = err.is_unavailable();
    if !spooled && !unavailable {
        error!(message = "Callbacks not stored.", callbacks = n, error = %err);
    }
    for j in jobs {
        let _ = j.done.send(match (spooled, unavailable) {
            (true, _) => Stored::Ok,
            (false, true) => Stored::Unavailable,
            (false, false) => Stored::Failed,
        });
    }
}
