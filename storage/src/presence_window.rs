//! Pure computation of a segment's window figures from its presence samples (no I/O).
//!
//! Both backends fetch the samples of a window and call [`compute_window_figures`], so their
//! figures are identical by construction.
//!
//! # Semantics
//!
//! The window is the half-open interval `[from, to)` in Unix milliseconds. Only samples inside
//! the window are considered (others are ignored), and exact duplicate samples count once
//! (appends are at-least-once, so a retried append must not change any figure).
//!
//! * A **presence interval** belongs to one `(account, address)` pair. A login opens it; a logout
//!   or a session end closes it. A login while the pair's interval is already open changes
//!   nothing; a close when the pair's interval is already closed changes nothing.
//! * A close of a pair with no earlier sample in the window means the client was already
//!   online when the window started: its interval counts from `from`.
//! * An interval still open at the end of the window counts until `to`.
//! * A session that started before the window and has no sample inside it is not visible.
//! * Samples of one pair at the same millisecond are applied closes first, then the login: a
//!   session replaced by a new login at the same instant is one continuous presence.
//! * Intervals are half-open: one ending at `t` and another starting at `t` do not overlap.
//!
//! Figures:
//! * `n_logins`: distinct login samples in the window.
//! * `n_distinct_accounts`: distinct accounts with at least one sample in the window.
//! * `peak_concurrent`: the largest number of intervals (of any pairs) open at one instant;
//!   an interval of zero length never counts.
//! * `online_ms`: the sum of all interval lengths. One account online from two addresses counts
//!   twice, as the segment served two clients.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::presence::{PresenceEvent, PresenceSample, SegmentWindowFigures};

/// One closed presence interval `[start_unix_ms, end_unix_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PresenceInterval {
    start_unix_ms: i64,
    end_unix_ms: i64,
}

/// Where one `(account, address)` pair stands while its samples are replayed in time order.
#[derive(Debug, Clone, Copy)]
enum PairState {
    /// No sample of this pair seen yet in the window.
    Unseen,
    /// Online since the given instant.
    Open { since_unix_ms: i64 },
    /// Seen, currently offline.
    Closed,
}

/// Sort key of a sample: pair first, then time, then closes before logins.
type ReplayKey<'sample> = (&'sample str, IpAddr, i64, u8, i8);

fn replay_key(sample: &PresenceSample) -> ReplayKey<'_> {
    let login_last = u8::from(sample.event == PresenceEvent::Login);
    (
        sample.account.as_str(),
        sample.address,
        sample.at_unix_ms,
        login_last,
        sample.event.code(),
    )
}

/// Computes the figures of the window `[from_unix_ms, to_unix_ms)` from the samples of one
/// segment (the `segment` field is not looked at). See the module documentation for the
/// semantics. A reversed window yields all-zero figures.
pub fn compute_window_figures(
    samples: &[PresenceSample],
    from_unix_ms: i64,
    to_unix_ms: i64,
) -> SegmentWindowFigures {
    let mut ordered: Vec<&PresenceSample> = samples
        .iter()
        .filter(|sample| from_unix_ms <= sample.at_unix_ms && sample.at_unix_ms < to_unix_ms)
        .collect();
    ordered.sort_unstable_by(|left, right| replay_key(left).cmp(&replay_key(right)));
    ordered.dedup_by(|left, right| replay_key(left) == replay_key(right));

    let n_logins = ordered
        .iter()
        .filter(|sample| sample.event == PresenceEvent::Login)
        .count();
    let n_distinct_accounts = ordered
        .iter()
        .map(|sample| sample.account.as_str())
        .collect::<BTreeSet<_>>()
        .len();

    let intervals = replay_intervals(&ordered, from_unix_ms, to_unix_ms);
    let online_ms = intervals
        .iter()
        .map(|interval| interval.end_unix_ms.abs_diff(interval.start_unix_ms))
        .fold(0_u64, u64::saturating_add);

    SegmentWindowFigures {
        n_logins: to_u64(n_logins),
        n_distinct_accounts: to_u64(n_distinct_accounts),
        peak_concurrent: peak_concurrent(&intervals),
        online_ms,
    }
}

/// Replays samples already sorted by [`replay_key`] and returns every presence interval.
fn replay_intervals(
    ordered: &[&PresenceSample],
    from_unix_ms: i64,
    to_unix_ms: i64,
) -> Vec<PresenceInterval> {
    let mut intervals = Vec::new();
    let same_pair = |left: &&PresenceSample, right: &&PresenceSample| {
        left.account == right.account && left.address == right.address
    };
    for pair_samples in ordered.chunk_by(same_pair) {
        replay_pair(pair_samples, from_unix_ms, to_unix_ms, &mut intervals);
    }
    intervals
}

/// Replays the time-ordered samples of one pair, pushing its intervals.
fn replay_pair(
    pair_samples: &[&PresenceSample],
    from_unix_ms: i64,
    to_unix_ms: i64,
    intervals: &mut Vec<PresenceInterval>,
) {
    let mut state = PairState::Unseen;
    for sample in pair_samples {
        let at_unix_ms = sample.at_unix_ms;
        state = match (state, sample.event.is_close()) {
            (PairState::Open { .. }, false) => state,
            (PairState::Unseen | PairState::Closed, false) => PairState::Open {
                since_unix_ms: at_unix_ms,
            },
            (PairState::Open { since_unix_ms }, true) => {
                intervals.push(PresenceInterval {
                    start_unix_ms: since_unix_ms,
                    end_unix_ms: at_unix_ms,
                });
                PairState::Closed
            }
            (PairState::Unseen, true) => {
                intervals.push(PresenceInterval {
                    start_unix_ms: from_unix_ms,
                    end_unix_ms: at_unix_ms,
                });
                PairState::Closed
            }
            (PairState::Closed, true) => PairState::Closed,
        };
    }
    if let PairState::Open { since_unix_ms } = state {
        intervals.push(PresenceInterval {
            start_unix_ms: since_unix_ms,
            end_unix_ms: to_unix_ms,
        });
    }
}

/// Largest number of half-open intervals covering one instant.
fn peak_concurrent(intervals: &[PresenceInterval]) -> u64 {
    // (instant, delta): ends (-1) sort before starts (+1) at the same instant.
    let mut boundaries: Vec<(i64, i8)> = intervals
        .iter()
        .filter(|interval| interval.end_unix_ms > interval.start_unix_ms)
        .flat_map(|interval| [(interval.start_unix_ms, 1), (interval.end_unix_ms, -1)])
        .collect();
    boundaries.sort_unstable();
    let mut current: i64 = 0;
    let mut peak: i64 = 0;
    for (_, delta) in boundaries {
        current += i64::from(delta);
        peak = peak.max(current);
    }
    u64::try_from(peak).unwrap_or(0)
}

fn to_u64(count: usize) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEGMENT: &str = "10.0.0.0/24";

    /// Builds a sample from a compact description: `(at, account, last address octet, event)`.
    fn sample(at_unix_ms: i64, account: &str, octet: u8, event: PresenceEvent) -> PresenceSample {
        PresenceSample {
            segment: SEGMENT.to_owned(),
            address: IpAddr::from([10, 0, 0, octet]),
            account: account.to_owned(),
            event,
            at_unix_ms,
        }
    }

    fn check(
        samples: &[PresenceSample],
        (from_unix_ms, to_unix_ms): (i64, i64),
        expected: (u64, u64, u64, u64),
    ) {
        let figures = compute_window_figures(samples, from_unix_ms, to_unix_ms);
        let actual = (
            figures.n_logins,
            figures.n_distinct_accounts,
            figures.peak_concurrent,
            figures.online_ms,
        );
        assert_eq!(
            actual, expected,
            "(n_logins, n_distinct_accounts, peak_concurrent, online_ms) for {samples:#?}"
        );
    }

    use PresenceEvent::{Login, Logout, SessionEnd};

    #[test]
    fn empty_window_is_all_zero() {
        check(&[], (0, 1000), (0, 0, 0, 0));
        check(&[sample(10, "a", 1, Login)], (10, 10), (0, 0, 0, 0));
    }

    #[test]
    fn login_then_logout_inside_window() {
        check(
            &[sample(100, "a", 1, Login), sample(400, "a", 1, Logout)],
            (0, 1000),
            (1, 1, 1, 300),
        );
    }

    #[test]
    fn open_interval_counts_until_window_end() {
        check(&[sample(600, "a", 1, Login)], (0, 1000), (1, 1, 1, 400));
    }

    #[test]
    fn orphan_close_counts_from_window_start() {
        check(
            &[sample(250, "a", 1, SessionEnd)],
            (100, 1000),
            (0, 1, 1, 150),
        );
    }

    #[test]
    fn samples_outside_window_are_ignored() {
        check(
            &[
                sample(50, "a", 1, Login),
                sample(1000, "b", 2, Login),
                sample(300, "c", 3, Login),
            ],
            (100, 1000),
            (1, 1, 1, 700),
        );
    }

    #[test]
    fn overlapping_clients_give_peak_and_summed_time() {
        // a: [100, 500), b: [200, 300), c: [250, 1000), d: [500, 600)
        // at 250..300 a, b, c are online -> peak 3; d starts when a ends.
        check(
            &[
                sample(100, "a", 1, Login),
                sample(200, "b", 2, Login),
                sample(250, "c", 3, Login),
                sample(300, "b", 2, Logout),
                sample(500, "a", 1, SessionEnd),
                sample(500, "d", 4, Login),
                sample(600, "d", 4, Logout),
            ],
            (0, 1000),
            (4, 4, 3, 400 + 100 + 750 + 100),
        );
    }

    #[test]
    fn touching_intervals_do_not_overlap() {
        check(
            &[
                sample(100, "a", 1, Login),
                sample(200, "a", 1, Logout),
                sample(200, "b", 2, Login),
                sample(300, "b", 2, Logout),
            ],
            (0, 1000),
            (2, 2, 1, 200),
        );
    }

    #[test]
    fn duplicate_samples_count_once() {
        let samples = [
            sample(100, "a", 1, Login),
            sample(100, "a", 1, Login),
            sample(300, "a", 1, Logout),
            sample(300, "a", 1, Logout),
        ];
        check(&samples, (0, 1000), (1, 1, 1, 200));
    }

    #[test]
    fn repeated_login_keeps_first_start_and_extra_close_is_ignored() {
        check(
            &[
                sample(100, "a", 1, Login),
                sample(200, "a", 1, Login),
                sample(300, "a", 1, Logout),
                sample(400, "a", 1, SessionEnd),
            ],
            (0, 1000),
            (2, 1, 1, 200),
        );
    }

    #[test]
    fn same_instant_close_and_login_is_a_reconnect() {
        // The old session ends at 300 when the new login arrives: continuous presence.
        check(
            &[
                sample(100, "a", 1, Login),
                sample(300, "a", 1, Login),
                sample(300, "a", 1, SessionEnd),
                sample(700, "a", 1, Logout),
            ],
            (0, 1000),
            (2, 1, 1, 600),
        );
    }

    #[test]
    fn one_account_on_two_addresses_counts_twice() {
        check(
            &[
                sample(100, "a", 1, Login),
                sample(200, "a", 2, Login),
                sample(400, "a", 1, Logout),
            ],
            (0, 1000),
            (2, 1, 2, 300 + 800),
        );
    }

    #[test]
    fn logins_after_close_reopen() {
        check(
            &[
                sample(100, "a", 1, Login),
                sample(200, "a", 1, Logout),
                sample(500, "a", 1, Login),
            ],
            (0, 1000),
            (2, 1, 1, 100 + 500),
        );
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let mut samples = vec![
            sample(300, "b", 2, Logout),
            sample(100, "a", 1, Login),
            sample(500, "a", 1, SessionEnd),
            sample(200, "b", 2, Login),
        ];
        check(&samples, (0, 1000), (2, 2, 2, 500));
        samples.reverse();
        check(&samples, (0, 1000), (2, 2, 2, 500));
    }

    #[test]
    fn extreme_window_does_not_overflow() {
        check(
            &[sample(0, "a", 1, Login)],
            (i64::MIN, i64::MAX),
            (1, 1, 1, i64::MAX.unsigned_abs()),
        );
    }

    fn arbitrary_sample() -> impl Strategy<Value = PresenceSample> {
        (
            0_i64..200,
            prop::sample::select(vec!["a", "b", "c"]),
            1_u8..3,
            prop::sample::select(vec![Login, Logout, SessionEnd]),
        )
            .prop_map(|(at, account, octet, event)| sample(at, account, octet, event))
    }

    proptest! {
        #[test]
        fn figures_are_bounded_and_order_independent(
            samples in prop::collection::vec(arbitrary_sample(), 0..40),
            from in 0_i64..100,
            length in 0_i64..150,
        ) {
            let to = from + length;
            let figures = compute_window_figures(&samples, from, to);
            let n_pairs = samples
                .iter()
                .filter(|s| from <= s.at_unix_ms && s.at_unix_ms < to)
                .map(|s| (s.account.clone(), s.address))
                .collect::<BTreeSet<_>>()
                .len() as u64;
            prop_assert!(figures.peak_concurrent <= n_pairs);
            prop_assert!(figures.online_ms <= figures.peak_concurrent * length.unsigned_abs());
            prop_assert!(figures.n_distinct_accounts <= 3);

            let mut reordered = samples.clone();
            reordered.reverse();
            reordered.extend(samples.iter().cloned());
            prop_assert_eq!(compute_window_figures(&reordered, from, to), figures);
        }
    }
}
