//! The probe: a diagnostic entity that records the sequence numbers it is sent and which owner
//! (node, epoch) applied each run of them, so a test can prove exactly-once, in-order delivery
//! and that no two nodes ever ran it at once.

use serde::{Deserialize, Serialize};

/// Most sequence gaps a probe remembers (more would only repeat the same verdict).
pub const MAX_GAPS_KEPT: usize = 64;
/// Most owner spans a probe remembers; the oldest are dropped first.
pub const MAX_OWNER_SPANS_KEPT: usize = 64;

/// A sequence number that did not follow the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceGap {
    /// The number that should have come next.
    pub expected: u64,
    /// The number that came.
    pub received: u64,
}

/// A run of messages applied by one owner: consecutive applications by the same
/// (node, epoch). Two owners running the entity at once would show as spans whose epochs go
/// back down or a (node, epoch) that appears twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerSpan {
    /// The node that applied the messages.
    pub node_id: String,
    /// Its ownership epoch of the entity's shard.
    pub epoch: u64,
    /// How many messages it applied in this run.
    pub n_applied: u64,
}

/// Everything a probe has recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeState {
    /// Sequence numbers applied (each message once).
    pub n_applied: u64,
    /// The last sequence number applied (0 = none yet; senders start at 1).
    pub last_seq: u64,
    /// Sequence numbers that did not follow their predecessor, oldest first.
    pub gaps: Vec<SequenceGap>,
    /// Relayed bumps received from other probes.
    pub n_bumps: u64,
    /// Who applied what, oldest first.
    pub owners: Vec<OwnerSpan>,
}

impl ProbeState {
    /// Applies sequence number `seq`, sent by a client counting from 1, under `owner`.
    pub fn record(&mut self, seq: u64, node_id: &str, epoch: u64) {
        let expected = self.last_seq.saturating_add(1);
        if seq != expected && self.gaps.len() < MAX_GAPS_KEPT {
            self.gaps.push(SequenceGap {
                expected,
                received: seq,
            });
        }
        self.last_seq = seq;
        self.n_applied = self.n_applied.saturating_add(1);
        self.note_owner(node_id, epoch);
    }

    /// Applies one bump relayed by another probe, under `owner`.
    pub fn bump(&mut self, node_id: &str, epoch: u64) {
        self.n_bumps = self.n_bumps.saturating_add(1);
        self.note_owner(node_id, epoch);
    }

    fn note_owner(&mut self, node_id: &str, epoch: u64) {
        match self.owners.last_mut() {
            Some(span) if span.node_id == node_id && span.epoch == epoch => {
                span.n_applied = span.n_applied.saturating_add(1);
            }
            _ => {
                if self.owners.len() == MAX_OWNER_SPANS_KEPT {
                    self.owners.remove(0);
                }
                self.owners.push(OwnerSpan {
                    node_id: node_id.to_owned(),
                    epoch,
                    n_applied: 1,
                });
            }
        }
    }

    /// Whether the owner history shows two owners at once: an epoch that does not rise from one
    /// span to the next.
    pub fn owners_overlap(&self) -> bool {
        self.owners
            .windows(2)
            .any(|pair| matches!(pair, [earlier, later] if later.epoch <= earlier.epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_sequence_has_no_gaps_and_one_span_per_owner() {
        let mut probe = ProbeState::default();
        for seq in 1..=5 {
            probe.record(seq, "a", 1);
        }
        for seq in 6..=8 {
            probe.record(seq, "b", 2);
        }
        assert_eq!(probe.n_applied, 8);
        assert_eq!(probe.last_seq, 8);
        assert!(probe.gaps.is_empty());
        assert_eq!(
            probe.owners,
            vec![
                OwnerSpan {
                    node_id: "a".into(),
                    epoch: 1,
                    n_applied: 5
                },
                OwnerSpan {
                    node_id: "b".into(),
                    epoch: 2,
                    n_applied: 3
                },
            ]
        );
        assert!(!probe.owners_overlap());
    }

    #[test]
    fn skipped_and_repeated_numbers_are_gaps() {
        let mut probe = ProbeState::default();
        probe.record(1, "a", 1);
        probe.record(3, "a", 1);
        probe.record(3, "a", 1);
        assert_eq!(
            probe.gaps,
            vec![
                SequenceGap {
                    expected: 2,
                    received: 3
                },
                SequenceGap {
                    expected: 4,
                    received: 3
                },
            ]
        );
    }

    #[test]
    fn an_owner_coming_back_with_an_old_epoch_is_an_overlap() {
        let mut probe = ProbeState::default();
        probe.record(1, "a", 1);
        probe.record(2, "b", 2);
        probe.bump("a", 1);
        assert!(probe.owners_overlap());
    }

    #[test]
    fn history_is_bounded() {
        let mut probe = ProbeState::default();
        for epoch in 0..(MAX_OWNER_SPANS_KEPT as u64 + 10) {
            probe.record(epoch + 1, "a", epoch);
        }
        assert_eq!(probe.owners.len(), MAX_OWNER_SPANS_KEPT);
        assert_eq!(probe.owners.first().map(|span| span.epoch), Some(10));
        for seq in 0..200 {
            probe.record(seq * 2, "a", 1_000);
        }
        assert_eq!(probe.gaps.len(), MAX_GAPS_KEPT);
    }
}
