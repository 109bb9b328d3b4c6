//! Time for the engine. In production "now" is the database's clock, so replicas on
//! different hosts agree on what is due. The demo runs a scaled clock: campaign days pass in
//! seconds, and every component reads time from here, never from the OS directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{Millis, Store};

#[derive(Clone)]
pub enum Clock {
    /// The database's clock.
    Database,
    /// `factor` clock milliseconds pass per real millisecond, starting at `origin`.
    Scaled(Arc<Scaled>),
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
            Clock::Database => store.db_now().await,
            Clock::Scaled(s) => {
                Ok(s.origin + (s.started.elapsed().as_secs_f64() * 1000.0 * s.factor) as Millis)
            }
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
        }
    }

    /// How many clock milliseconds pass during `real` real time. Leases are real-time
    /// promises (a worker needs real seconds to send a batch), so they are converted here;
    /// under a scaled clock a lease of "60 s" of campaign time would expire mid-batch.
    pub fn span_of(&self, real: Duration) -> i64 {
        match self {
            Clock::Database => real.as_millis() as i64,
            Clock::Scaled(s) => {
                (real.as_secs_f64() * 1000.0 * s.factor).min(i64::MAX as f64 / 4.0) as i64
            }
        }
    }

    /// How long `clock_ms` of clock time lasts in real time.
    pub fn real(&self, clock_ms: i64) -> Duration {
        let ms = clock_ms.max(0) as f64;
        match self {
            Clock::Database => Duration::from_millis(ms as u64),
            Clock::Scaled(s) => Duration::from_secs_f64(ms / 1000.0 / s.factor),
        }
    }
}
