//! Named failure points, as a crash would hit them: a test arms one (feature `test-util`),
//! the engine step that reaches it returns [`crate::EngineError::FailPoint`] there and does
//! nothing after it, and the test inspects the store and recovers with a new `Engine` on it.
//! Without the feature nothing can arm a point and every check is a no-op.

/// Where a step can be made to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailPoint {
    /// A dispatcher round claimed its batch (leased) and sends nothing.
    AfterClaim,
    /// The channel accepted the batch; the outcomes are never settled.
    AfterSendBeforeSettle,
    /// Housekeeping found a due window timer and does not fire it.
    BeforeTimerFire,
    /// A window timer fired and its wave closed; the next wave is not planned.
    AfterTimerFire,
}

/// The points armed on one engine. Each armed point fires once.
#[derive(Default)]
pub(crate) struct FailPoints {
    #[cfg(feature = "test-util")]
    armed: std::sync::Mutex<std::collections::HashSet<FailPoint>>,
}

impl FailPoints {
    #[cfg(feature = "test-util")]
    pub(crate) fn arm(&self, point: FailPoint) {
        self.armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(point);
    }

    /// `Err` when `point` is armed (disarming it); always `Ok` without `test-util`.
    #[inline]
    pub(crate) fn check(&self, point: FailPoint) -> Result<(), crate::EngineError> {
        #[cfg(feature = "test-util")]
        if self
            .armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&point)
        {
            return Err(crate::EngineError::FailPoint(point));
        }
        let _ = point;
        Ok(())
    }
}
