//! Time for the engine. In production "now" is the database's clock, so replicas on
//! different hosts agree on what is due. The demo runs a scaled clock: campaign days pass in
//! seconds, and every component reads time from here, never from the OS directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use store::{Millis, Store};

#[derive(Clone)]
pub enum Clock {
    /// The database's clock.
    Database,
    /// `factor` clock milliseconds pass per real millisecond, starting at `origin`.
    Scaled(Arc<Scaled>),
    /// Moves only when told ([`ManualClock::advance`], [`ManualClock::set`]): tests step
    /// the engine through days of campaign time and decide exactly when leases run out.
    Manual(ManualClock),
}

/// The handle that moves a [`Clock::Manual`]; clones share one instant.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(at: Millis) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(at)))
    }

    /// The engine clock this handle moves.
    pub fn clock(&self) -> Clock {
        Clock::Manual(self.clone())
    }

    pub fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }

    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, at: Millis) {
        self.0.store(at, Ordering::SeqCst);
    }
}

pub struct Scaled {
    origin: Millis,
    started: Instant,
    factor: f64,
}

impl Clock {
    pub fn scaled(origin: Millis, factor: f64) -> Clock {
        Clock::Scaled(Arc::new(Scaled {
            origin,
            started: Instant::now(),
            factor,
        }))
    }

    pub async fn now(&self, store: &Store) -> Result<Millis, store::StoreError> {
        match self {
            Clock::Database => store.clock_now().await,
            Clock::Scaled(s) => {
                Ok(s.origin + (s.started.elapsed().as_secs_f64() * 1000.0 * s.factor) as Millis)
            }
            Clock::Manual(m) => Ok(m.now()),
        }
    }

    /// A synchronous reading of this clock, for components that stamp events (the API).
    /// For the database clock it is the host's wall clock: NTP keeps the two within
    /// milliseconds, far below any response window.
    pub fn now_fn(&self) -> Arc<dyn Fn() -> Millis + Send + Sync> {
        match self {
            Clock::Database => Arc::new(store::wall_now),
            Clock::Scaled(s) => {
                let s = s.clone();
                Arc::new(move || {
                    s.origin + (s.started.elapsed().as_secs_f64() * 1000.0 * s.factor) as Millis
                })
            }
            Clock::Manual(m) => {
                let m = m.clone();
                Arc::new(move || m.now())
            }
        }
    }

    /// How many clock milliseconds pass during `real` real time. Leases are real-time
    /// promises (a worker needs real seconds to send a batch), so they are converted here;
    /// under a scaled clock a lease of "60 s" of campaign time would expire mid-batch.
    /// Under a manual clock a lease is that span of the manual clock: no real time passes
    /// for it, so a lease runs out exactly when a test advances the clock past it.
    pub fn span_of(&self, real: Duration) -> i64 {
        match self {
            Clock::Database | Clock::Manual(_) => real.as_millis() as i64,
            Clock::Scaled(s) => {
                (real.as_secs_f64() * 1000.0 * s.factor).min(i64::MAX as f64 / 4.0) as i64
            }
        }
    }

    /// How long `clock_ms` of clock time lasts in real time. A manual clock never gets
    /// there by itself; the 1:1 answer keeps a waiting loop polling at a sane pace.
    pub fn real(&self, clock_ms: i64) -> Duration {
        let ms = clock_ms.max(0) as f64;
        match self {
            Clock::Database | Clock::Manual(_) => Duration::from_millis(ms as u64),
            Clock::Scaled(s) => Duration::from_secs_f64(ms / 1000.0 / s.factor),
        }
    }
}
