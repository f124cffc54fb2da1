//! The domain clock: the time entities and the edge reason with (monitoring windows, key
//! expiry, presence sample times, certification at a window's end). It is the wall clock
//! plus an offset that only ever grows. The offset is zero unless an operator advances it on
//! a node that allows simulation (`clock.allow_simulation`), which is how a rehearsal or test
//! cluster lives through a week of certification windows in seconds.
//!
//! Transport time (message deadlines, broker expirations, heartbeats) stays on the wall clock:
//! the broker and the other nodes share that one.

use lanmesh_bus::envelope::now_unix_ms;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// The furthest a clock may be advanced in total: ten years.
pub const MAX_OFFSET_MS: u64 = 10 * 366 * 86_400_000;

/// Why an advance was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdvanceError {
    /// The total offset would pass [`MAX_OFFSET_MS`].
    #[error(
        "the clock may be advanced by at most {MAX_OFFSET_MS} ms in total; it is at {offset_ms} ms"
    )]
    TooFar {
        /// The offset already applied.
        offset_ms: u64,
    },
}

/// The wall clock plus a forward-only offset; clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct DomainClock {
    offset_ms: Arc<AtomicU64>,
}

impl DomainClock {
    /// The wall clock, not advanced.
    pub fn system() -> Self {
        Self::default()
    }

    /// Now, in Unix milliseconds.
    pub fn now_unix_ms(&self) -> u64 {
        now_unix_ms().saturating_add(self.offset_ms())
    }

    /// How far this clock runs ahead of the wall clock.
    pub fn offset_ms(&self) -> u64 {
        self.offset_ms.load(Ordering::Acquire)
    }

    /// Moves the clock `by_ms` forward; returns the new offset.
    pub fn advance(&self, by_ms: u64) -> Result<u64, AdvanceError> {
        self.offset_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |offset_ms| {
                offset_ms
                    .checked_add(by_ms)
                    .filter(|advanced| *advanced <= MAX_OFFSET_MS)
            })
            .map(|previous| previous + by_ms)
            .map_err(|offset_ms| AdvanceError::TooFar { offset_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advance_moves_every_clone_forward() {
        let clock = DomainClock::system();
        let clone = clock.clone();
        let before = clone.now_unix_ms();
        assert_eq!(clock.advance(86_400_000), Ok(86_400_000));
        assert_eq!(clock.advance(1_000), Ok(86_401_000));
        assert_eq!(clone.offset_ms(), 86_401_000);
        assert!(clone.now_unix_ms() >= before + 86_401_000);
    }

    #[test]
    fn an_advance_past_the_limit_is_refused_and_changes_nothing() {
        let clock = DomainClock::system();
        assert_eq!(clock.advance(MAX_OFFSET_MS - 5), Ok(MAX_OFFSET_MS - 5));
        assert_eq!(
            clock.advance(6),
            Err(AdvanceError::TooFar {
                offset_ms: MAX_OFFSET_MS - 5
            })
        );
        assert_eq!(
            clock.advance(u64::MAX),
            Err(AdvanceError::TooFar {
                offset_ms: MAX_OFFSET_MS - 5
            })
        );
        assert_eq!(clock.offset_ms(), MAX_OFFSET_MS - 5);
        assert_eq!(clock.advance(5), Ok(MAX_OFFSET_MS));
    }
}
