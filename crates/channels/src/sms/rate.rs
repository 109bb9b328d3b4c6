//! The messages-per-second limit of a gateway account (`[sms] max_per_second`).
//!
//! Operators buy SMSC throughput per account; going over it gets messages refused or the
//! account throttled. Each message reserves the next free slot, slots `1/rate` apart, and
//! waits for it: no burst, so in any window of one second at most `rate` messages start
//! (a bucket of depth one). Reserving rather than polling keeps the order of arrival and
//! costs one lock per message.
//!
//! [`Pacer`] is the pure arithmetic on a caller's clock (the unit tests pass numbers);
//! [`RateLimit`] puts it on tokio's clock for the Kannel channel.

use std::time::Duration;

/// Slots `interval` apart on a clock measured as a [`Duration`] since some origin.
#[derive(Debug, Clone)]
pub(super) struct Pacer {
    interval: Duration,
    /// The earliest time the next message may start.
    next_free: Duration,
}

impl Pacer {
    /// `per_second` must be positive (the config check refuses 0).
    pub(super) fn new(per_second: u32) -> Pacer {
        Pacer {
            interval: interval(per_second),
            next_free: Duration::ZERO,
        }
    }

    /// Reserves the next slot at or after `now`; returns how long to wait for it.
    pub(super) fn reserve(&mut self, now: Duration) -> Duration {
        let at = self.next_free.max(now);
        self.next_free = at + self.interval;
        at - now
    }
}

/// A [`Pacer`] on tokio's clock, shared by every batch of one gateway account; with
/// [`RateLimit::shared`], by every replica on the database too.
#[derive(Debug)]
pub(super) struct RateLimit {
    origin: tokio::time::Instant,
    pacer: std::sync::Mutex<Pacer>,
    shared: Option<Shared>,
}

/// The slots of an account reserved through the database, a run at a time.
struct Shared {
    store: store::Store,
    account: String,
    interval: Duration,
    /// Slots per reservation: about a quarter second's worth, so the database is asked a few
    /// times a second at most, and a replica that stops sending wastes at most that much.
    run: u32,
    /// The run in hand, on `origin`'s clock: the next free slot and where the run ends.
    /// Held across the reservation, so one task at a time refills.
    held: tokio::sync::Mutex<(Duration, Duration)>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("account", &self.account)
            .field("interval", &self.interval)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

impl RateLimit {
    pub(super) fn new(per_second: u32) -> RateLimit {
        RateLimit {
            origin: tokio::time::Instant::now(),
            pacer: std::sync::Mutex::new(Pacer::new(per_second)),
            shared: None,
        }
    }

    /// A limit that holds across every process sending through `account` on `store`'s
    /// database: each process sends only inside runs of slots the database reserved for it
    /// (`Store::reserve_send_slots`), and runs never overlap.
    pub(super) fn shared(per_second: u32, store: store::Store, account: String) -> RateLimit {
        let interval = interval(per_second);
        RateLimit {
            shared: Some(Shared {
                store,
                account,
                interval,
                run: (per_second / 4).max(1),
                held: tokio::sync::Mutex::new((Duration::ZERO, Duration::ZERO)),
            }),
            ..RateLimit::new(per_second)
        }
    }

    /// Waits for this message's slot.
    pub(super) async fn wait(&self) {
        tokio::time::sleep_until(self.next_start().await).await;
    }

    /// Reserves this message's slot: when it may start.
    async fn next_start(&self) -> tokio::time::Instant {
        // On `origin`'s clock.
        let at = match &self.shared {
            Some(shared) => self.shared_slot(shared).await,
            None => {
                let mut pacer = self
                    .pacer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = self.origin.elapsed();
                now + pacer.reserve(now)
            }
        };
        self.origin + at
    }

    /// The next slot (on `origin`'s clock) inside a reserved run, reserving a new run when the one
    /// in hand is used up or over. The run is placed on this process's clock conservatively:
    /// the database's "now" lies between sending the request and reading the answer, so the
    /// run starts no earlier than (answer + delay) and ends no later than (request + delay +
    /// length). Starts inside runs are `interval` apart and runs do not overlap, so no two
    /// messages of the account, from any replica, start closer than `interval`.
    async fn shared_slot(&self, shared: &Shared) -> Duration {
        let mut held = shared.held.lock().await;
        let mut failures = 0u32;
        loop {
            let now = self.origin.elapsed();
            let (next_free, end) = *held;
            let at = next_free.max(now);
            if at + shared.interval <= end {
                held.0 = at + shared.interval;
                return at;
            }
            let asked = self.origin.elapsed();
            let interval_us = i64::try_from(shared.interval.as_micros()).unwrap_or(i64::MAX);
            match shared
                .store
                .reserve_send_slots(&shared.account, shared.run, interval_us)
                .await
            {
                Ok(slots) => {
                    let answered = self.origin.elapsed();
                    let delay = Duration::from_micros(slots.delay_us.max(0) as u64);
                    *held = (
                        answered + delay,
                        asked + delay + shared.interval * shared.run,
                    );
                    failures = 0;
                }
                Err(e) => {
                    // Without the database no slot is known to be free: sending waits rather
                    // than risk the account's rate with other replicas.
                    failures += 1;
                    let pause = Duration::from_millis(250 * u64::from(failures.min(8)));
                    tracing::warn!(message = "Cannot reserve send slots for the account; waiting.", account = %shared.account, error = %e, retry_in_ms = pause.as_millis() as u64);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// The spacing of `per_second`, rounded up so that a second never holds one more.
fn interval(per_second: u32) -> Duration {
    Duration::from_nanos(1_000_000_000u64.div_ceil(u64::from(per_second.max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Start times of `n` messages all asking at `asked`, on the pacer's clock.
    fn starts(p: &mut Pacer, asked: &[Duration]) -> Vec<Duration> {
        asked.iter().map(|t| *t + p.reserve(*t)).collect()
    }

    #[test]
    fn a_burst_is_spread_one_interval_apart() {
        let mut p = Pacer::new(10);
        let s = starts(&mut p, &[ms(0); 5]);
        assert_eq!(s, vec![ms(0), ms(100), ms(200), ms(300), ms(400)]);
    }

    #[test]
    fn no_window_of_one_second_holds_more_than_the_rate() {
        let mut p = Pacer::new(50);
        // 1,000 messages asking in irregular clumps over about four seconds.
        let mut asked: Vec<Duration> = (0..1000u64).map(|i| ms((i * i) % 4000)).collect();
        asked.sort();
        let s = starts(&mut p, &asked);
        for (i, t) in s.iter().enumerate() {
            let in_window = s[i..].iter().take_while(|u| **u < *t + ms(1000)).count();
            assert!(
                in_window <= 50,
                "{in_window} starts in the second from {t:?}"
            );
        }
    }

    /// Two replicas (two limits on one database) sending through one account at once: every
    /// start, from either, is at least one interval from every other, so no second holds
    /// more than the rate. Checked on the planned starts (one clock, the test's), not on
    /// arrival times a loaded machine would blur.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_sharing_an_account_never_start_closer_than_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::testing::fresh_store(dir.path()).await.unwrap();
        const RATE: u32 = 400;
        let replicas: Vec<std::sync::Arc<RateLimit>> = (0..2)
            .map(|_| {
                std::sync::Arc::new(RateLimit::shared(RATE, store.clone(), "kannel:test".into()))
            })
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        for r in &replicas {
            for _ in 0..150 {
                let r = r.clone();
                tasks.spawn(async move { r.next_start().await });
            }
        }
        let mut starts = Vec::new();
        while let Some(t) = tasks.join_next().await {
            starts.push(t.unwrap());
        }
        starts.sort();
        let interval = interval(RATE);
        for w in starts.windows(2) {
            assert!(
                w[1] - w[0] >= interval,
                "two starts {:?} apart (interval {interval:?})",
                w[1] - w[0]
            );
        }
        for (i, t) in starts.iter().enumerate() {
            let in_second = starts[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(
                in_second <= RATE as usize,
                "{in_second} in the second from {i}"
            );
        }
    }

    #[test]
    fn a_rate_that_does_not_divide_a_second_never_fits_one_more() {
        for rate in [3u32, 7, 30, 333, 1000] {
            let i = interval(rate);
            assert!(i * rate >= Duration::from_secs(1), "{rate}: {i:?}");
        }
    }

    #[test]
    fn an_idle_pacer_lets_the_next_message_go_at_once() {
        let mut p = Pacer::new(2);
        assert_eq!(p.reserve(ms(0)), ms(0));
        assert_eq!(p.reserve(ms(100)), ms(400));
        // Idle for a while: no credit is saved up, and no wait either.
        assert_eq!(p.reserve(ms(5000)), ms(0));
        assert_eq!(p.reserve(ms(5000)), ms(500));
    }
}
