//! One account's daily allowance for traffic sharing (S4's limits against abuse): how many
//! bytes it may offer and ask for per UTC day, and how many shares it may take part in. The
//! account's user entity keeps it; the edge reserves against it before an offer is made or a
//! request is matched, and releases what a request that found no offer reserved.

use crate::model::share::Party;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Milliseconds in a UTC day.
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The per-account limits of one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyShareCaps {
    /// Most bytes offered.
    pub max_offered_bytes: u64,
    /// Most bytes asked for.
    pub max_requested_bytes: u64,
    /// Most offers and requests together.
    pub max_shares: u32,
}

/// A reservation refused.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum AllowanceError {
    /// Today's bytes for this role would pass the cap.
    #[error("{role:?} bytes today would be {would_be}, above the daily cap of {cap}", role = role)]
    BytesCap {
        /// Offering or asking.
        role: Party,
        /// Today's total with this one.
        would_be: u64,
        /// The cap.
        cap: u64,
    },
    /// Today's number of shares would pass the cap.
    #[error("{cap} offers and requests a day at most")]
    SharesCap {
        /// The cap.
        cap: u32,
    },
    /// The key was reserved before for something else.
    #[error("reservation {key:?} was made before with other terms")]
    KeyReused {
        /// The reservation's key.
        key: String,
    },
}

/// What one reservation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Reservation {
    role: Party,
    bytes: u64,
}

/// Today's reservations, by key (an offer's share id, or a request's id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareAllowance {
    /// The UTC day (days since 1970-01-01) the reservations are for.
    day: u64,
    reservations: BTreeMap<String, Reservation>,
}

impl ShareAllowance {
    /// Starts a new day's count when `now` is past the kept day.
    fn roll(&mut self, now_unix_ms: u64) {
        let today = now_unix_ms / DAY_MS;
        if today != self.day {
            self.day = today;
            self.reservations.clear();
        }
    }

    /// Bytes reserved today for `role`.
    fn bytes_of(&self, role: Party) -> u64 {
        self.reservations
            .values()
            .filter(|reservation| reservation.role == role)
            .map(|reservation| reservation.bytes)
            .fold(0, u64::saturating_add)
    }

    /// Reserves `bytes` for `role` under `key`, within today's caps. Reserving the same again
    /// changes nothing (a redelivery); the same key with other terms is refused. Returns
    /// whether anything changed.
    pub fn reserve(
        &mut self,
        key: &str,
        role: Party,
        bytes: u64,
        caps: DailyShareCaps,
        now_unix_ms: u64,
    ) -> Result<bool, AllowanceError> {
        self.roll(now_unix_ms);
        let wanted = Reservation { role, bytes };
        if let Some(kept) = self.reservations.get(key) {
            return if *kept == wanted {
                Ok(false)
            } else {
                Err(AllowanceError::KeyReused {
                    key: key.to_owned(),
                })
            };
        }
        if self.reservations.len() >= usize::try_from(caps.max_shares).unwrap_or(usize::MAX) {
            return Err(AllowanceError::SharesCap {
                cap: caps.max_shares,
            });
        }
        let cap = match role {
            Party::Sharer => caps.max_offered_bytes,
            Party::Requester => caps.max_requested_bytes,
        };
        let would_be = self.bytes_of(role).saturating_add(bytes);
        if would_be > cap {
            return Err(AllowanceError::BytesCap {
                role,
                would_be,
                cap,
            });
        }
        self.reservations.insert(key.to_owned(), wanted);
        Ok(true)
    }

    /// Gives back a reservation made today (a request that matched no offer). Returns whether
    /// it was there.
    pub fn release(&mut self, key: &str, now_unix_ms: u64) -> bool {
        self.roll(now_unix_ms);
        self.reservations.remove(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CAPS: DailyShareCaps = DailyShareCaps {
        max_offered_bytes: 1000,
        max_requested_bytes: 500,
        max_shares: 3,
    };
    const NOON: u64 = 20_000 * DAY_MS + DAY_MS / 2;

    #[test]
    fn bytes_are_capped_per_role_and_day() {
        let mut allowance = ShareAllowance::default();
        assert_eq!(
            allowance.reserve("a", Party::Requester, 400, CAPS, NOON),
            Ok(true)
        );
        assert_eq!(
            allowance.reserve("b", Party::Requester, 101, CAPS, NOON),
            Err(AllowanceError::BytesCap {
                role: Party::Requester,
                would_be: 501,
                cap: 500
            })
        );
        // Exactly at the cap is allowed.
        assert_eq!(
            allowance.reserve("b", Party::Requester, 100, CAPS, NOON),
            Ok(true)
        );
        // Asking is full for today.
        assert_eq!(
            allowance.reserve("e", Party::Requester, 1, CAPS, NOON),
            Err(AllowanceError::BytesCap {
                role: Party::Requester,
                would_be: 501,
                cap: 500
            })
        );
        // Offering has its own cap.
        assert_eq!(
            allowance.reserve("c", Party::Sharer, 1000, CAPS, NOON),
            Ok(true)
        );
        // The next UTC day starts from nothing.
        let tomorrow = NOON + DAY_MS / 2;
        assert_eq!(
            allowance.reserve("d", Party::Requester, 500, CAPS, tomorrow),
            Ok(true)
        );
    }

    #[test]
    fn shares_are_capped_and_released_ones_do_not_count() {
        let mut allowance = ShareAllowance::default();
        for key in ["a", "b", "c"] {
            assert_eq!(
                allowance.reserve(key, Party::Sharer, 1, CAPS, NOON),
                Ok(true)
            );
        }
        assert_eq!(
            allowance.reserve("d", Party::Sharer, 1, CAPS, NOON),
            Err(AllowanceError::SharesCap { cap: 3 })
        );
        assert!(allowance.release("b", NOON));
        assert!(!allowance.release("b", NOON));
        assert_eq!(
            allowance.reserve("d", Party::Sharer, 1, CAPS, NOON),
            Ok(true)
        );
    }

    #[test]
    fn a_repeated_reservation_changes_nothing_and_a_reused_key_is_refused() {
        let mut allowance = ShareAllowance::default();
        assert_eq!(
            allowance.reserve("a", Party::Sharer, 10, CAPS, NOON),
            Ok(true)
        );
        assert_eq!(
            allowance.reserve("a", Party::Sharer, 10, CAPS, NOON),
            Ok(false)
        );
        assert_eq!(
            allowance.reserve("a", Party::Sharer, 11, CAPS, NOON),
            Err(AllowanceError::KeyReused {
                key: "a".to_owned()
            })
        );
        // Only the first 10 bytes count against the cap of 1000.
        assert!(matches!(
            allowance.reserve("b", Party::Sharer, 991, CAPS, NOON),
            Err(AllowanceError::BytesCap { would_be: 1001, .. })
        ));
        assert_eq!(
            allowance.reserve("b", Party::Sharer, 990, CAPS, NOON),
            Ok(true)
        );
    }
}
