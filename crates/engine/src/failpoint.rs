//! Named failure points, as a crash would hit them: a test arms one (feature `test-util`),
//! the engine step that reaches it returns [`crate::EngineError::FailPoint`] there and does
//! nothing after it, and the test inspects the store and recovers with a new `Engine` on it.
//! A point can also pause the step there until the test resumes it, to interleave two
//! engines deterministically. Without the feature nothing can arm a point and every check
//! is a no-op.

/// Where a step can be made to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailPoint {
    /// A dispatcher round claimed its batch (leased) and sends nothing.
    AfterClaim,
    /// The channel accepted the batch; the outcomes are never settled.
    AfterSendBeforeSettle,
    /// Housekeeping found a due window timer and does not fire it.
    BeforeTimerFire,
    /// A wave was planned (its decision committed, its first batch of contacts written);
    /// its other batches are not written.
    AfterWavePlanned,
    /// A window timer fired and its wave closed; the next wave is not planned.
    AfterTimerFire,
    /// Housekeeping computed a due schedule slot and has not recorded it yet.
    BeforeSlotStart,
    /// A run was finished (and its report mail queued); nothing after it happens.
    AfterRunFinished,
    /// The mailer accepted a queued mail; the mail is never settled.
    AfterMailSendBeforeSettle,
    /// The database refuses one write of the gateway's answers, as in an outage (a store
    /// error, not a crash: the dispatcher holds the answers and writes them on its next try).
    DatabaseDownAtSettle,
}

#[cfg(feature = "test-util")]
enum Action {
    Fail,
    /// Fails every step that reaches the point until the test clears it (an outage).
    FailUntilCleared,
    Pause {
        reached: tokio::sync::oneshot::Sender<()>,
        resume: tokio::sync::oneshot::Receiver<()>,
    },
}

/// The points armed on one engine. Each armed point acts once.
#[derive(Default)]
pub(crate) struct FailPoints {
    #[cfg(feature = "test-util")]
    armed: std::sync::Mutex<std::collections::HashMap<FailPoint, Action>>,
}

/// A step held at a paused point (feature `test-util`).
#[cfg(feature = "test-util")]
pub struct Paused {
    reached: tokio::sync::oneshot::Receiver<()>,
    resume: tokio::sync::oneshot::Sender<()>,
}

#[cfg(feature = "test-util")]
impl Paused {
    /// Waits until a step is held at the point.
    pub async fn reached(&mut self) {
        let _ = (&mut self.reached).await;
    }

    /// Lets the held step go on.
    pub fn resume(self) {
        let _ = self.resume.send(());
    }
}

impl FailPoints {
    #[cfg(feature = "test-util")]
    pub(crate) fn arm(&self, point: FailPoint) {
        self.lock().insert(point, Action::Fail);
    }

    #[cfg(feature = "test-util")]
    pub(crate) fn fail_until_cleared(&self, point: FailPoint) {
        self.lock().insert(point, Action::FailUntilCleared);
    }

    #[cfg(feature = "test-util")]
    pub(crate) fn clear(&self, point: FailPoint) {
        self.lock().remove(&point);
    }

    #[cfg(feature = "test-util")]
    pub(crate) fn pause(&self, point: FailPoint) -> Paused {
        let (reached_tx, reached) = tokio::sync::oneshot::channel();
        let (resume, resume_rx) = tokio::sync::oneshot::channel();
        self.lock().insert(
            point,
            Action::Pause {
                reached: reached_tx,
                resume: resume_rx,
            },
        );
        Paused { reached, resume }
    }

    #[cfg(feature = "test-util")]
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<FailPoint, Action>> {
        self.armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err` when `point` is armed to fail; waits for the test when it is armed to pause.
    /// Always `Ok` at once without `test-util`.
    #[inline]
    pub(crate) async fn reach(&self, point: FailPoint) -> Result<(), crate::EngineError> {
        #[cfg(feature = "test-util")]
        {
            let action = {
                let mut armed = self.lock();
                match armed.get(&point) {
                    Some(Action::FailUntilCleared) => {
                        return Err(crate::EngineError::FailPoint(point));
                    }
                    _ => armed.remove(&point),
                }
            };
            match action {
                None | Some(Action::FailUntilCleared) => {}
                Some(Action::Fail) => return Err(crate::EngineError::FailPoint(point)),
                Some(Action::Pause { reached, resume }) => {
                    let _ = reached.send(());
                    let _ = resume.await;
                }
            }
        }
        let _ = point;
        Ok(())
    }
}
