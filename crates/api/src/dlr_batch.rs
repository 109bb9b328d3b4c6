//! Group commit of delivery reports. Kannel sends two reports per message (the SMSC's
//! acknowledgement and the final state), thousands a second at full pace; stored one
//! transaction each, they were what held campaignd at 0.41 of Kannel's own pace
//! (`bench-dispatch --gateway kannel`). Each request hands its row to one writer task and
//! waits; the writer takes whatever has queued meanwhile (no timer: a lone report goes at
//! once, a burst goes together), checks the keys with one query, stores the known ones in one
//! transaction and answers every request. A report is still answered `200` only once it is
//! committed, or spooled (fsynced) when the database cannot take it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use store::inbound::NewInbound;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

/// Reports written together at most (two `IN` lists of this many keys stay far below both
/// backends' bind limits).
const MAX_BATCH: usize = 500;
/// Reports waiting for the writer before requests wait to hand theirs over.
const QUEUE: usize = 10_000;

/// What became of one report.
#[derive(Debug)]
pub(crate) enum Stored {
    /// Committed, or spooled for when the database is back.
    Ok,
    /// No contact has this key: nothing stored.
    UnknownKey,
    /// Neither the database nor the spool took it; Kannel retries.
    Failed(store::StoreError),
}

struct Job {
    row: NewInbound,
    done: oneshot::Sender<Stored>,
}

/// What the writer task needs, until the first report starts it.
type Idle = (
    mpsc::Receiver<Job>,
    store::Store,
    Option<Arc<crate::spool::Spool>>,
);

/// The handle requests use; the writer starts with the first report.
pub(crate) struct DlrWriter {
    tx: mpsc::Sender<Job>,
    start: Mutex<Option<Idle>>,
}

impl DlrWriter {
    pub(crate) fn new(store: store::Store, spool: Option<Arc<crate::spool::Spool>>) -> DlrWriter {
        let (tx, rx) = mpsc::channel(QUEUE);
        DlrWriter {
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
            tokio::spawn(write_loop(rx, store, spool));
        }
        let (done, answer) = oneshot::channel();
        if self.tx.send(Job { row, done }).await.is_err() {
            return Stored::Failed(store::StoreError::Invalid(
                "the delivery-report writer stopped".into(),
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Stored::Failed(store::StoreError::Invalid(
                "the delivery-report writer stopped".into(),
            ))
        })
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<Job>,
    store: store::Store,
    spool: Option<Arc<crate::spool::Spool>>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        write_batch(&store, spool.as_ref(), std::mem::take(&mut jobs)).await;
    }
}

async fn write_batch(
    store: &store::Store,
    spool: Option<&Arc<crate::spool::Spool>>,
    jobs: Vec<Job>,
) {
    let keys: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j.row.idem_key.as_deref())
        .collect();
    // Only reports for contacts we sent are stored, so nothing piles up under a key that
    // never matches. With the database down the signature alone vouches for the key.
    let known: Option<HashSet<String>> = match store.known_keys(&keys).await {
        Ok(k) => Some(k),
        Err(e) => return spool_all(spool, jobs, e).await,
    };
    let (keep, unknown): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| {
        j.row
            .idem_key
            .as_ref()
            .is_some_and(|k| known.as_ref().is_some_and(|set| set.contains(k)))
    });
    for j in unknown {
        let _ = j.done.send(Stored::UnknownKey);
    }
    if keep.is_empty() {
        return;
    }
    let rows: Vec<NewInbound> = keep.iter().map(|j| j.row.clone()).collect();
    match store.insert_inbound(&rows).await {
        Ok(_) => {
            for j in keep {
                let _ = j.done.send(Stored::Ok);
            }
        }
        Err(e) => spool_all(spool, keep, e).await,
    }
}

/// The batch the database refused goes to the spool in one append (one fsync).
async fn spool_all(
    spool: Option<&Arc<crate::spool::Spool>>,
    jobs: Vec<Job>,
    err: store::StoreError,
) {
    let spooled = match spool {
        Some(s) => {
            let rows = jobs.iter().map(|j| j.row.clone()).collect();
            match s.append(rows).await {
                Ok(()) => {
                    warn!(message = "Database unavailable: delivery reports spooled; stored when it is back.", reports = jobs.len(), error = %err);
                    true
                }
                Err(e) => {
                    error!(message = "Database unavailable and the spool cannot write: delivery reports refused (Kannel retries).", reports = jobs.len(), error = %err, spool_error = %e);
                    false
                }
            }
        }
        None => false,
    };
    let msg = err.to_string();
    for j in jobs {
        let _ = j.done.send(if spooled {
            Stored::Ok
        } else {
            Stored::Failed(store::StoreError::Invalid(msg.clone()))
        });
    }
}
