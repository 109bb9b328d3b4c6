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
            interval: Duration::from_secs(1) / per_second.max(1),
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

/// A [`Pacer`] on tokio's clock, shared by every batch of one gateway account.
#[derive(Debug)]
pub(super) struct RateLimit {
    origin: tokio::time::Instant,
    pacer: std::sync::Mutex<Pacer>,
}

impl RateLimit {
    pub(super) fn new(per_second: u32) -> RateLimit {
        RateLimit {
            origin: tokio::time::Instant::now(),
            pacer: std::sync::Mutex::new(Pacer::new(per_second)),
        }
    }

    /// Waits for this message's slot.
    pub(super) async fn wait(&self) {
        let wait = {
            let mut pacer = self
                .pacer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pacer.reserve(self.origin.elapsed())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
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
