//! A circuit breaker for one partner site, as a pure state machine (the caller passes `now`).
//!
//! Closed: calls go through; `failure_threshold` failures in a row open it. Open: calls fail
//! at once for `open_for`, so a site that is down or slow costs logins nothing but a quick
//! error. Then half-open: one trial call goes through; its success closes the breaker, its
//! failure opens it again. A trial that never reports (its caller gave up) is replaced after
//! `trial_timeout`.

use std::time::{Duration, Instant};

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failures in a row that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before a trial call.
    pub open_for: Duration,
    /// How long a trial call may take before another is allowed.
    pub trial_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_started: Instant },
}

/// The breaker of one site.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    state: BreakerState,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
        }
    }

    /// May a call go out now? `Err` carries how long until one may.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } if now < until => Err(until - now),
            BreakerState::HalfOpen { trial_started }
                if now < trial_started + self.policy.trial_timeout =>
            {
                Err(trial_started + self.policy.trial_timeout - now)
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::HalfOpen { trial_started: now };
                Ok(())
            }
        }
    }

    /// The call succeeded (the site answered).
    pub fn record_success(&mut self) {
        self.state = BreakerState::Closed {
            consecutive_failures: 0,
        };
    }

    /// The call failed (no answer in time, no connection, or a 5xx).
    pub fn record_failure(&mut self, now: Instant) {
        self.state = match self.state {
            BreakerState::Closed {
                consecutive_failures,
            } if consecutive_failures + 1 < self.policy.failure_threshold => BreakerState::Closed {
                consecutive_failures: consecutive_failures + 1,
            },
            _ => BreakerState::Open {
                until: now + self.policy.open_for,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failure_threshold: 3,
        open_for: Duration::from_secs(10),
        trial_timeout: Duration::from_secs(2),
    };

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn opens_after_the_threshold_in_a_row_and_a_success_resets_the_count() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(POLICY);
        breaker.record_failure(start);
        breaker.record_failure(start);
        breaker.record_success();
        breaker.record_failure(start);
        breaker.record_failure(start);
        assert_eq!(breaker.admit(start), Ok(()));
        breaker.record_failure(at(start, 1));
        assert_eq!(breaker.admit(at(start, 1)), Err(Duration::from_secs(10)));
        assert_eq!(breaker.admit(at(start, 7)), Err(Duration::from_secs(4)));
    }

    #[test]
    fn half_open_lets_one_trial_through_which_closes_or_reopens_it() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(POLICY);
        for _ in 0..3 {
            breaker.record_failure(start);
        }
        // After open_for: one trial, others wait for it.
        assert_eq!(breaker.admit(at(start, 10)), Ok(()));
        assert_eq!(breaker.admit(at(start, 11)), Err(Duration::from_secs(1)));
        // The trial fails: open again for the full period.
        breaker.record_failure(at(start, 11));
        assert_eq!(breaker.admit(at(start, 12)), Err(Duration::from_secs(9)));
        // The next trial succeeds: closed, and one failure no longer opens it.
        assert_eq!(breaker.admit(at(start, 21)), Ok(()));
        breaker.record_success();
        breaker.record_failure(at(start, 22));
        assert_eq!(breaker.admit(at(start, 22)), Ok(()));
    }

    #[test]
    fn a_trial_that_never_reports_is_replaced() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(POLICY);
        for _ in 0..3 {
            breaker.record_failure(start);
        }
        assert_eq!(breaker.admit(at(start, 10)), Ok(()));
        assert!(breaker.admit(at(start, 11)).is_err());
        assert_eq!(breaker.admit(at(start, 12)), Ok(()));
    }
}
