//! The nonces a partner site has seen: each is remembered until its request's timestamp falls
//! out of the window (after that the timestamp check refuses a replay anyway). The memory is
//! bounded; when it is full the site refuses new requests instead of forgetting nonces early.

use std::collections::{BTreeSet, HashMap};

/// What the window says about a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NonceCheck {
    /// Never seen; now recorded.
    Fresh,
    /// Seen within the window.
    Replayed,
    /// Too many live nonces to record another one.
    Full,
}

/// Nonces seen, each with the site-clock second after which it can be forgotten.
#[derive(Debug)]
pub(super) struct NonceWindow {
    expiry_by_nonce: HashMap<String, u64>,
    by_expiry: BTreeSet<(u64, String)>,
    capacity: usize,
}

impl NonceWindow {
    /// A window remembering at most `capacity` live nonces.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            expiry_by_nonce: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity,
        }
    }

    /// Checks `nonce` at site time `now` and records it, until `expires_at`, when fresh.
    pub(super) fn check_and_record(
        &mut self,
        nonce: &str,
        expires_at: u64,
        now: u64,
    ) -> NonceCheck {
        self.forget_expired(now);
        if self.expiry_by_nonce.contains_key(nonce) {
            return NonceCheck::Replayed;
        }
        if self.expiry_by_nonce.len() >= self.capacity {
            return NonceCheck::Full;
        }
        self.expiry_by_nonce.insert(nonce.to_owned(), expires_at);
        self.by_expiry.insert((expires_at, nonce.to_owned()));
        NonceCheck::Fresh
    }

    /// Forgets the nonces that expired before `now`.
    fn forget_expired(&mut self, now: u64) {
        while let Some((expires_at, _)) = self.by_expiry.first()
            && *expires_at < now
        {
            if let Some((_, nonce)) = self.by_expiry.pop_first() {
                self.expiry_by_nonce.remove(&nonce);
            }
        }
    }

    /// How many nonces are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.expiry_by_nonce.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_refused_until_they_expire() {
        let mut window = NonceWindow::new(10);
        assert_eq!(window.check_and_record("a", 160, 100), NonceCheck::Fresh);
        assert_eq!(window.check_and_record("a", 160, 150), NonceCheck::Replayed);
        assert_eq!(window.check_and_record("a", 160, 160), NonceCheck::Replayed);
        assert_eq!(window.check_and_record("b", 200, 161), NonceCheck::Fresh);
        assert_eq!(window.len(), 1, "a expired");
        assert_eq!(window.check_and_record("a", 221, 161), NonceCheck::Fresh);
    }

    #[test]
    fn a_full_window_refuses_until_nonces_expire() {
        let mut window = NonceWindow::new(2);
        assert_eq!(window.check_and_record("a", 110, 100), NonceCheck::Fresh);
        assert_eq!(window.check_and_record("b", 120, 100), NonceCheck::Fresh);
        assert_eq!(window.check_and_record("c", 130, 100), NonceCheck::Full);
        assert_eq!(window.check_and_record("a", 110, 105), NonceCheck::Replayed);
        assert_eq!(window.check_and_record("c", 130, 111), NonceCheck::Fresh);
        assert_eq!(window.len(), 2);
    }
}
