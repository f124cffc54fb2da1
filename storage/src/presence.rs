//! Presence sample area: what a segment entity records about client logins, and its store trait.

use std::net::IpAddr;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::presence_window::compute_window_figures;

/// What happened to a client's presence at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PresenceEvent {
    /// The account logged in from the address: opens a presence interval.
    Login,
    /// The account logged out: closes its presence interval.
    Logout,
    /// The session ended without a logout (disconnect, replaced, expired): closes the interval.
    SessionEnd,
}

impl PresenceEvent {
    /// Stable small-integer code used by both backends' schemas.
    pub const fn code(self) -> i8 {
        match self {
            Self::Login => 1,
            Self::Logout => 2,
            Self::SessionEnd => 3,
        }
    }

    /// Inverse of [`PresenceEvent::code`].
    pub const fn from_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(Self::Login),
            2 => Some(Self::Logout),
            3 => Some(Self::SessionEnd),
            _ => None,
        }
    }

    /// True for the events that close a presence interval.
    pub const fn is_close(self) -> bool {
        matches!(self, Self::Logout | Self::SessionEnd)
    }
}

/// One observation of a client's presence in a segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresenceSample {
    /// The segment (canonical CIDR, e.g. `10.1.2.0/24`) the client address maps to.
    pub segment: String,
    /// The client address.
    pub address: IpAddr,
    /// The account that logged in or out.
    pub account: String,
    /// What happened.
    pub event: PresenceEvent,
    /// When it happened, milliseconds since the Unix epoch (UTC).
    pub at_unix_ms: i64,
}

/// Figures of one segment over one time window; see [`crate::presence_window`] for the exact
/// semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentWindowFigures {
    /// Number of distinct login samples in the window.
    pub n_logins: u64,
    /// Number of distinct accounts with at least one sample in the window.
    pub n_distinct_accounts: u64,
    /// Largest number of presence intervals open at the same instant.
    pub peak_concurrent: u64,
    /// Sum of the lengths of all presence intervals, clipped to the window, in milliseconds.
    pub online_ms: u64,
}

/// Longest presence window a query may ask for, in days (bounds the partitions a ScyllaDB query
/// visits; enforced by every backend so they accept the same queries).
pub const MAX_PRESENCE_WINDOW_DAYS: u32 = 366;

/// Checks that a window `[from_unix_ms, to_unix_ms)` is well-formed.
pub(crate) fn check_window(from_unix_ms: i64, to_unix_ms: i64) -> Result<(), StoreError> {
    if from_unix_ms > to_unix_ms {
        return Err(StoreError::InvalidWindow {
            from_unix_ms,
            to_unix_ms,
        });
    }
    Ok(())
}

/// Checks a presence window: well-formed and at most [`MAX_PRESENCE_WINDOW_DAYS`] long.
pub(crate) fn check_presence_window(from_unix_ms: i64, to_unix_ms: i64) -> Result<(), StoreError> {
    check_window(from_unix_ms, to_unix_ms)?;
    let max_span_ms = u64::from(MAX_PRESENCE_WINDOW_DAYS) * 86_400_000;
    if to_unix_ms.abs_diff(from_unix_ms) > max_span_ms {
        return Err(StoreError::WindowTooLong {
            from_unix_ms,
            to_unix_ms,
            max_days: MAX_PRESENCE_WINDOW_DAYS,
        });
    }
    Ok(())
}

/// High-volume, append-only presence samples with per-segment window queries.
///
/// Samples are facts: appending the same sample twice is harmless because figures are computed
/// over distinct samples. `Ok(())` from `append` means every sample of the call is durable.
#[async_trait]
pub trait PresenceSampleStore: Send + Sync {
    /// Appends samples (any mix of segments and instants); durable when this returns `Ok`.
    async fn append(&self, samples: Vec<PresenceSample>) -> Result<(), StoreError>;

    /// Returns the samples of `segment` with `from_unix_ms <= at_unix_ms < to_unix_ms`, in no
    /// particular order and possibly with exact duplicates. The window may span at most
    /// [`MAX_PRESENCE_WINDOW_DAYS`].
    async fn samples_in_window(
        &self,
        segment: &str,
        from_unix_ms: i64,
        to_unix_ms: i64,
    ) -> Result<Vec<PresenceSample>, StoreError>;

    /// Computes the figures of `segment` over `[from_unix_ms, to_unix_ms)` (at most
    /// [`MAX_PRESENCE_WINDOW_DAYS`] long).
    ///
    /// Every backend uses this provided method: it fetches the window's samples and runs the
    /// pure [`compute_window_figures`], so both backends give identical figures by construction.
    async fn window_figures(
        &self,
        segment: &str,
        from_unix_ms: i64,
        to_unix_ms: i64,
    ) -> Result<SegmentWindowFigures, StoreError> {
        check_presence_window(from_unix_ms, to_unix_ms)?;
        let samples = self
            .samples_in_window(segment, from_unix_ms, to_unix_ms)
            .await?;
        Ok(compute_window_figures(&samples, from_unix_ms, to_unix_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_round_trip() {
        for event in [
            PresenceEvent::Login,
            PresenceEvent::Logout,
            PresenceEvent::SessionEnd,
        ] {
            assert_eq!(PresenceEvent::from_code(event.code()), Some(event));
        }
        assert_eq!(PresenceEvent::from_code(0), None);
        assert_eq!(PresenceEvent::from_code(4), None);
    }

    #[test]
    fn presence_window_length_is_capped() {
        let max_ms = i64::from(MAX_PRESENCE_WINDOW_DAYS) * 86_400_000;
        assert!(check_presence_window(0, max_ms).is_ok());
        assert!(matches!(
            check_presence_window(0, max_ms + 1),
            Err(StoreError::WindowTooLong { .. })
        ));
        assert!(matches!(
            check_presence_window(i64::MIN, i64::MAX),
            Err(StoreError::WindowTooLong { .. })
        ));
    }

    #[test]
    fn window_must_not_be_reversed() {
        assert!(check_window(5, 5).is_ok());
        assert!(check_window(5, 6).is_ok());
        assert!(matches!(
            check_window(6, 5),
            Err(StoreError::InvalidWindow {
                from_unix_ms: 6,
                to_unix_ms: 5
            })
        ));
    }
}
