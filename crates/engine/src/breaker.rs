//! A circuit breaker per gateway account (one per channel the engine dispatches on).
//!
//! While a gateway is down, sending to it only burns the contacts' attempts and floods the
//! log; the breaker stops the dispatcher from claiming for that channel instead, so queued
//! contacts wait with their attempts untouched. States:
//!
//! - **closed**: claims as usual; counts consecutive transient failures and opens after
//!   `threshold` of them. Any answer from the gateway (an acceptance, or a refusal of one
//!   message) resets the count: the gateway is up.
//! - **open** until a time: no claims. Entered after the threshold (for `cool_down`), on
//!   the gateway's own request to slow down (`429`/`503` with `Retry-After`, for that long),
//!   or forced by an error no retry can fix (rejected credentials, wrong URL), which stays
//!   open until [`Breaker::reset`] and is reported to the operator.
//! - **half-open**: after the cool-down one round claims a single message (the probe); an
//!   answer closes the breaker, a transient failure opens it for another cool-down.
//!
//! Pure state: every call takes the time (clock milliseconds) from its caller, so the unit
//! tests drive it with numbers instead of sleeps, and the engine with its clock.

use std::time::Duration;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the breaker. Default: 5.
    pub threshold: u32,
    /// How long it stays open before a probe (clock milliseconds). Default: 10 s.
    pub cool_down_ms: i64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 5,
            cool_down_ms: 10_000,
        }
    }
}

impl BreakerConfig {
    pub fn new(threshold: u32, cool_down: Duration) -> BreakerConfig {
        BreakerConfig {
            threshold: threshold.max(1),
            cool_down_ms: i64::try_from(cool_down.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Closed {
        /// Transient failures in a row.
        failures: u32,
    },
    Open {
        /// Clock time the probe may go.
        until: i64,
        reason: String,
    },
    /// The gateway refused campaignd itself (credentials, URL): no retry helps, an
    /// operator must act. Left by [`Breaker::reset`] (a restart with a fixed config).
    Forced { reason: String },
    HalfOpen {
        /// A probe round is out; other dispatchers of the channel wait for its verdict.
        probing: bool,
    },
}

/// What a dispatcher round may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Claim a full batch.
    Batch,
    /// Claim one message: the half-open probe. Report its verdict, or
    /// [`Breaker::abandon_probe`] when it claimed nothing.
    Probe,
    /// Claim nothing until this clock time (`None`: until an operator acts).
    Wait(Option<i64>),
}

/// What the gateway said about one message, as the breaker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The gateway answered (took the message, or refused that one message): it is up.
    Answered,
    /// No usable answer (connection refused, timeout, 5xx).
    Transient(String),
    /// The gateway asked to slow down for `for_ms` (429/503 with Retry-After).
    Throttled { for_ms: i64, reason: String },
    /// The gateway refused campaignd itself (credentials, URL).
    Refused(String),
}

/// A state change, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: &'static str,
    pub to: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: State,
}

impl State {
    /// Why it is not closed.
    pub fn reason(&self) -> Option<&str> {
        match self {
            State::Open { reason, .. } | State::Forced { reason } => Some(reason),
            State::Closed { .. } | State::HalfOpen { .. } => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::Forced { .. } => "forced_open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Breaker {
        Breaker {
            cfg,
            state: State::Closed { failures: 0 },
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether a round may claim at `now`, and how much.
    pub fn admit(&mut self, now: i64) -> (Admit, Option<Transition>) {
        match &self.state {
            State::Closed { .. } => (Admit::Batch, None),
            State::Forced { .. } => (Admit::Wait(None), None),
            State::HalfOpen { probing: true } => (Admit::Wait(Some(now)), None),
            State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                (Admit::Probe, None)
            }
            State::Open { until, .. } if now < *until => (Admit::Wait(Some(*until)), None),
            State::Open { .. } => {
                let t = self.go(
                    State::HalfOpen { probing: true },
                    "cool-down over; probing".into(),
                );
                (Admit::Probe, Some(t))
            }
        }
    }

    /// The probe round claimed nothing (queue empty) or stopped before sending: the next
    /// round probes instead.
    pub fn abandon_probe(&mut self) {
        if self.state == (State::HalfOpen { probing: true }) {
            self.state = State::HalfOpen { probing: false };
        }
    }

    /// Takes one message's verdict at `now`.
    pub fn record(&mut self, now: i64, verdict: Verdict) -> Option<Transition> {
        if matches!(self.state, State::Forced { .. }) {
            // Only an operator's fix leaves this state; answers to messages already in
            // flight when it was forced do not.
            return None;
        }
        match verdict {
            Verdict::Answered => match self.state {
                State::Closed { .. } => {
                    self.state = State::Closed { failures: 0 };
                    None
                }
                // An answer after the breaker opened (the rest of a batch in flight) or
                // the probe's: the gateway is up.
                _ => Some(self.go(State::Closed { failures: 0 }, "gateway answered".into())),
            },
            Verdict::Transient(reason) => match self.state {
                State::Closed { failures } if failures + 1 < self.cfg.threshold => {
                    self.state = State::Closed {
                        failures: failures + 1,
                    };
                    None
                }
                State::Closed { .. } | State::HalfOpen { .. } => {
                    let until = now.saturating_add(self.cfg.cool_down_ms);
                    Some(self.go(State::Open { until, reason }, String::new()))
                }
                // Already open: the rest of the batch in flight failing too changes nothing.
                State::Open { .. } | State::Forced { .. } => None,
            },
            Verdict::Throttled { for_ms, reason } => {
                let until = now.saturating_add(for_ms.max(0));
                match &self.state {
                    State::Open { until: u, .. } if *u >= until => None,
                    _ => Some(self.go(State::Open { until, reason }, String::new())),
                }
            }
            Verdict::Refused(reason) => Some(self.go(State::Forced { reason }, String::new())),
        }
    }

    /// Closes a forced breaker (the operator fixed the gateway account).
    pub fn reset(&mut self) -> Option<Transition> {
        match self.state {
            State::Closed { .. } => None,
            _ => Some(self.go(State::Closed { failures: 0 }, "reset".into())),
        }
    }

    fn go(&mut self, to: State, why: String) -> Transition {
        let reason = match &to {
            State::Open { reason, .. } | State::Forced { reason } if why.is_empty() => {
                reason.clone()
            }
            _ => why,
        };
        let t = Transition {
            from: self.state.name(),
            to: to.name(),
            reason,
        };
        self.state = to;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            threshold: 3,
            cool_down_ms: 10_000,
        })
    }

    fn fail() -> Verdict {
        Verdict::Transient("connection refused".into())
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_transient_failures() {
        let mut b = breaker();
        assert_eq!(b.record(0, fail()), None);
        assert_eq!(b.record(1, fail()), None);
        assert_eq!(b.admit(1).0, Admit::Batch);
        let t = b.record(2, fail()).expect("third failure opens");
        assert_eq!((t.from, t.to), ("closed", "open"));
        assert_eq!(t.reason, "connection refused");
        assert_eq!(b.admit(3).0, Admit::Wait(Some(10_002)));
        assert_eq!(b.admit(10_001).0, Admit::Wait(Some(10_002)));
    }

    #[test]
    fn an_answer_resets_the_count() {
        let mut b = breaker();
        b.record(0, fail());
        b.record(0, fail());
        assert_eq!(b.record(0, Verdict::Answered), None);
        b.record(0, fail());
        b.record(0, fail());
        assert_eq!(b.admit(0).0, Admit::Batch, "{:?}", b.state());
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_and_its_answer_closes() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record(0, fail());
        }
        let (admit, t) = b.admit(10_000);
        assert_eq!(admit, Admit::Probe);
        assert_eq!(t.unwrap().to, "half_open");
        // A second dispatcher of the channel waits for the probe.
        assert!(matches!(b.admit(10_000).0, Admit::Wait(_)));
        let t = b.record(10_050, Verdict::Answered).unwrap();
        assert_eq!((t.from, t.to), ("half_open", "closed"));
        assert_eq!(b.admit(10_050).0, Admit::Batch);
    }

    #[test]
    fn a_failed_probe_opens_for_another_cool_down() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record(0, fail());
        }
        assert_eq!(b.admit(10_000).0, Admit::Probe);
        let t = b.record(10_100, fail()).unwrap();
        assert_eq!((t.from, t.to), ("half_open", "open"));
        assert_eq!(b.admit(10_200).0, Admit::Wait(Some(20_100)));
        assert_eq!(b.admit(20_100).0, Admit::Probe);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_round_probe() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record(0, fail());
        }
        assert_eq!(b.admit(10_000).0, Admit::Probe);
        b.abandon_probe();
        assert_eq!(b.admit(10_001).0, Admit::Probe);
    }

    #[test]
    fn throttling_pauses_for_the_asked_time_without_counting_failures() {
        let mut b = breaker();
        let t = b
            .record(
                5,
                Verdict::Throttled {
                    for_ms: 2_000,
                    reason: "HTTP 429".into(),
                },
            )
            .unwrap();
        assert_eq!((t.from, t.to), ("closed", "open"));
        assert_eq!(b.admit(1_000).0, Admit::Wait(Some(2_005)));
        // A shorter request while paused does not shorten the pause.
        assert_eq!(
            b.record(
                6,
                Verdict::Throttled {
                    for_ms: 100,
                    reason: "HTTP 429".into()
                }
            ),
            None
        );
        assert_eq!(b.admit(2_005).0, Admit::Probe);
    }

    #[test]
    fn a_refusal_forces_it_open_until_reset() {
        let mut b = breaker();
        let t = b
            .record(0, Verdict::Refused("HTTP 403 Authorization failed".into()))
            .unwrap();
        assert_eq!((t.from, t.to), ("closed", "forced_open"));
        assert_eq!(b.admit(i64::MAX).0, Admit::Wait(None));
        // Answers to messages still in flight do not close it.
        assert_eq!(b.record(1, Verdict::Answered), None);
        assert_eq!(b.admit(2).0, Admit::Wait(None));
        assert_eq!(b.reset().unwrap().to, "closed");
        assert_eq!(b.admit(3).0, Admit::Batch);
    }
}
