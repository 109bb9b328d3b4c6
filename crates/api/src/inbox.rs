//! Group commit of the gateway's callbacks (delivery reports and replies).
//!
//! Kannel sends two delivery reports per message (the SMSC's acknowledgement and the final
//! state), thousands a second at full pace. Stored one transaction each they held campaignd
//! at 0.41 of Kannel's own pace (`bench-dispatch --gateway kannel`). Here each request hands
//! its row to a queue and waits; a few writers each take whatever has queued (a writer that
//! found fewer than [`LINGER_BELOW`] waits [`LINGER`] for more first, so a burst goes
//! together in fewer transactions), store the batch in one transaction
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
//! Several writers on PostgreSQL, not one: while one commits, the next gathers the
//! callbacks that came meanwhile, so a callback waits for at most the batch being gathered,
//! not for every batch ahead of it. On SQLite, which takes one writer at a time, one writer
//! (see [`WRITERS_SQLITE`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use store::inbound::NewInbound;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

/// Callbacks written together at most.
const MAX_BATCH: usize = 500;
/// How long a writer that found only a few callbacks waits for more before writing them
/// ([`LINGER_BELOW`]). Each group is a transaction; without a wait a group is whatever came
/// during the previous write (5 to 10 callbacks at Kannel's pace on SQLite,
/// `bench-dispatch --gateway kannel`), so the transactions, not the rows, are the cost.
/// A callback waits that much longer for its answer (tens of ms at full pace already).
const LINGER: std::time::Duration = std::time::Duration::from_millis(3);
/// A writer with at least this many callbacks writes at once.
const LINGER_BELOW: usize = 64;
/// Callbacks waiting for a writer before the next is refused with `503`.
pub(crate) const QUEUE: usize = 20_000;
/// Writers gathering and committing batches at the same time, on PostgreSQL.
const WRITERS: usize = 3;
/// On SQLite: one. SQLite takes one writer at a time, so more writers do not write more at
/// once; they split what has queued into smaller groups (4 to 5 callbacks a group with three,
/// `bench-dispatch --gateway kannel`, session 16), and a writer that finds the database
/// locked sleeps in SQLite's busy handler (1, 2, 5, 10 ms...) rather than being woken when
/// the lock is free. One writer goes again as soon as its commit is done, with everything
/// that came meanwhile.
const WRITERS_SQLITE: usize = 1;

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
            for _ in 0..writers(store.is_postgres()) {
                tokio::spawn(write_loop(rx.clone(), store.clone(), spool.clone()));
            }
        }
        let (done, answer) = oneshot::channel();
        match self.tx.try_send(Job { row, done }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Stored::Busy,
            Err(mpsc::error::TrySendError::Closed(_)) => return stopped(),
        }
        let _waiting = stats::Waiting::begin();
        answer.await.unwrap_or_else(|_| stopped())
    }
}

/// Counters of the callbacks' wait (handed to the inbox to answered), for the benchmarks:
/// a few relaxed atomic operations per callback and per group, always on. Process-wide (one
/// API per daemon process).
pub mod stats {
    use super::{AtomicU64, Ordering};

    /// Bucket `i` counts waits below `2^i` µs (the last one, everything longer).
    pub const BUCKETS: usize = 24;

    pub(super) static WAIT_US: [AtomicU64; BUCKETS] = [const { AtomicU64::new(0) }; BUCKETS];
    pub(super) static WAIT_SUM_US: AtomicU64 = AtomicU64::new(0);
    pub(super) static ANSWERED: AtomicU64 = AtomicU64::new(0);
    pub(super) static WAITING: AtomicU64 = AtomicU64::new(0);
    pub(super) static WAITING_MAX: AtomicU64 = AtomicU64::new(0);
    pub(super) static GROUPS: AtomicU64 = AtomicU64::new(0);
    pub(super) static GROUP_US: AtomicU64 = AtomicU64::new(0);
    /// SMSC acknowledgements answered without a write (their contact was settled `sent`
    /// here); not in `answered`.
    pub(crate) static ACKS_NOT_STORED: AtomicU64 = AtomicU64::new(0);

    /// A copy of the counters.
    #[derive(Debug, Clone, Default)]
    pub struct Snapshot {
        /// Callbacks answered (stored, refused or spooled).
        pub answered: u64,
        /// Waiting right now, and the most that waited at once since the last reset.
        pub waiting: u64,
        pub waiting_max: u64,
        pub wait_sum_us: u64,
        /// See [`BUCKETS`].
        pub wait_hist: Vec<u64>,
        /// Groups written, and the time spent writing them (µs, summed over writers).
        pub groups: u64,
        pub group_us: u64,
        /// SMSC acknowledgements answered without a write (see `store::sent_keys`).
        pub acks_not_stored: u64,
    }

    impl Snapshot {
        /// The wait below which a share `q` (0..1) of the callbacks were answered, as the
        /// upper bound of its power-of-two bucket, in µs; 0 when none was counted.
        pub fn wait_quantile_us(&self, q: f64) -> u64 {
            let total: u64 = self.wait_hist.iter().sum();
            if total == 0 {
                return 0;
            }
            let want = (q * total as f64).ceil() as u64;
            let mut seen = 0;
            for (i, n) in self.wait_hist.iter().enumerate() {
                seen += n;
                if seen >= want.max(1) {
                    return 1 << i;
                }
            }
            1 << BUCKETS
        }
    }

    pub fn snapshot() -> Snapshot {
        Snapshot {
            answered: ANSWERED.load(Ordering::Relaxed),
            waiting: WAITING.load(Ordering::Relaxed),
            waiting_max: WAITING_MAX.load(Ordering::Relaxed),
            wait_sum_us: WAIT_SUM_US.load(Ordering::Relaxed),
            wait_hist: WAIT_US.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            groups: GROUPS.load(Ordering::Relaxed),
            group_us: GROUP_US.load(Ordering::Relaxed),
            acks_not_stored: ACKS_NOT_STORED.load(Ordering::Relaxed),
        }
    }

    /// Zeroes every counter but `waiting`.
    pub fn reset() {
        for b in &WAIT_US {
            b.store(0, Ordering::Relaxed);
        }
        for c in [
            &WAIT_SUM_US,
            &ANSWERED,
            &GROUPS,
            &GROUP_US,
            &ACKS_NOT_STORED,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        WAITING_MAX.store(WAITING.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// One callback's wait; counted when dropped, also when the request is abandoned.
    pub(super) struct Waiting(std::time::Instant);

    impl Waiting {
        pub(super) fn begin() -> Waiting {
            let now = WAITING.fetch_add(1, Ordering::Relaxed) + 1;
            WAITING_MAX.fetch_max(now, Ordering::Relaxed);
            Waiting(std::time::Instant::now())
        }
    }

    impl Drop for Waiting {
        fn drop(&mut self) {
            let us = self.0.elapsed().as_micros() as u64;
            WAITING.fetch_sub(1, Ordering::Relaxed);
            ANSWERED.fetch_add(1, Ordering::Relaxed);
            WAIT_SUM_US.fetch_add(us, Ordering::Relaxed);
            let i = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
            WAIT_US[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn writers(postgres: bool) -> usize {
    if postgres { WRITERS } else { WRITERS_SQLITE }
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
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                return;
            }
            if jobs.len() < LINGER_BELOW {
                tokio::time::sleep(LINGER).await;
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
            }
        }
        let started = Instant::now();
        write_batch(&store, spool.as_ref(), std::mem::take(&mut jobs)).await;
        stats::GROUPS.fetch_add(1, Ordering::Relaxed);
        stats::GROUP_US.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::stats::{BUCKETS, Snapshot};

    #[test]
    fn one_writer_on_sqlite_several_on_postgres() {
        assert_eq!(super::writers(false), 1);
        assert_eq!(super::writers(true), super::WRITERS);
        const { assert!(super::WRITERS > 1) };
    }

    #[test]
    fn wait_quantiles_are_bucket_upper_bounds() {
        let mut hist = vec![0; BUCKETS];
        // 90 waits under 2^3 µs, 9 under 2^10, 1 under 2^20.
        hist[3] = 90;
        hist[10] = 9;
        hist[20] = 1;
        let s = Snapshot {
            wait_hist: hist,
            ..Snapshot::default()
        };
        assert_eq!(s.wait_quantile_us(0.5), 8);
        assert_eq!(s.wait_quantile_us(0.9), 8);
        assert_eq!(s.wait_quantile_us(0.99), 1024);
        assert_eq!(s.wait_quantile_us(1.0), 1 << 20);
        assert_eq!(Snapshot::default().wait_quantile_us(0.5), 0);
    }
}
