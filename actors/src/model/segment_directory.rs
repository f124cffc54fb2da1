//! The directory of registered venue segments (S0 step 1) as a pure state machine: which
//! gateway each segment belongs to. A gateway claims its whole set of segments at once; a
//! claim that overlaps another gateway's segment is refused naming every conflict and changes
//! nothing. Every change bumps the revision, which nodes poll to refresh their own index.

use crate::model::segment::{Segment, SegmentConflict, SegmentIndex};
use serde::{Deserialize, Serialize};

/// Most segments one gateway registers.
pub const MAX_SEGMENTS_PER_GATEWAY: usize = 16;

/// Every registered segment and its gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "StoredDirectory", into = "StoredDirectory")]
pub struct SegmentDirectory {
    index: SegmentIndex<String>,
    revision: u64,
}

/// The persisted form: the index is rebuilt from its entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredDirectory {
    revision: u64,
    entries: Vec<(Segment, String)>,
}

impl From<StoredDirectory> for SegmentDirectory {
    fn from(stored: StoredDirectory) -> Self {
        let mut index = SegmentIndex::new();
        for (segment, gateway_id) in stored.entries {
            // Stored entries were disjoint when written; a conflict cannot arise here.
            let _ = index.insert(segment, gateway_id);
        }
        Self {
            index,
            revision: stored.revision,
        }
    }
}

impl From<SegmentDirectory> for StoredDirectory {
    fn from(directory: SegmentDirectory) -> Self {
        Self {
            revision: directory.revision,
            entries: directory.entries(),
        }
    }
}

impl SegmentDirectory {
    /// Replaces `gateway_id`'s segments with `segments`, all or nothing.
    pub fn claim(
        &mut self,
        gateway_id: &str,
        segments: &[Segment],
    ) -> Result<(), SegmentConflict<String>> {
        let previous = self.index.remove_owner(&gateway_id.to_owned());
        for segment in segments {
            if let Err(conflict) = self.index.insert(*segment, gateway_id.to_owned()) {
                self.index.remove_owner(&gateway_id.to_owned());
                for kept in previous {
                    let _ = self.index.insert(kept, gateway_id.to_owned());
                }
                return Err(conflict);
            }
        }
        self.revision += 1;
        Ok(())
    }

    /// Forgets `gateway_id`'s segments; returns them.
    pub fn release(&mut self, gateway_id: &str) -> Vec<Segment> {
        let released = self.index.remove_owner(&gateway_id.to_owned());
        if !released.is_empty() {
            self.revision += 1;
        }
        released
    }

    /// Bumped by every change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Every segment and its gateway, in segment order.
    pub fn entries(&self) -> Vec<(Segment, String)> {
        self.index
            .iter()
            .map(|(segment, gateway_id)| (*segment, gateway_id.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::segment::{SegmentLimits, parse_segment};

    fn segment(text: &str) -> Segment {
        parse_segment(text, &SegmentLimits::default()).unwrap()
    }

    #[test]
    fn claims_are_all_or_nothing_and_name_the_conflict() {
        let mut directory = SegmentDirectory::default();
        directory
            .claim(
                "g1",
                &[segment("203.0.113.0/24"), segment("198.51.100.0/25")],
            )
            .unwrap();
        assert_eq!(directory.revision(), 1);
        let before = directory.entries();
        let conflict = directory
            .claim(
                "g2",
                &[segment("192.0.2.0/24"), segment("203.0.113.128/25")],
            )
            .unwrap_err();
        assert_eq!(
            conflict.conflicts,
            vec![(segment("203.0.113.0/24"), "g1".to_owned())]
        );
        assert_eq!(
            directory.entries(),
            before,
            "a refused claim changes nothing"
        );
        assert_eq!(directory.revision(), 1);
        // A gateway may replace its own segments, and a refused replacement keeps the old.
        directory.claim("g1", &[segment("203.0.113.0/25")]).unwrap();
        directory
            .claim("g2", &[segment("203.0.113.128/25")])
            .unwrap();
        assert!(directory.claim("g1", &[segment("203.0.113.0/24")]).is_err());
        assert_eq!(
            directory.entries(),
            vec![
                (segment("203.0.113.0/25"), "g1".to_owned()),
                (segment("203.0.113.128/25"), "g2".to_owned())
            ]
        );
        assert_eq!(directory.release("g1"), vec![segment("203.0.113.0/25")]);
        assert_eq!(
            directory.entries(),
            vec![(segment("203.0.113.128/25"), "g2".to_owned())]
        );
        assert_eq!(directory.release("g1"), Vec::new());
    }

    #[test]
    fn the_directory_round_trips_through_its_stored_form() {
        let mut directory = SegmentDirectory::default();
        directory.claim("g1", &[segment("203.0.113.0/24")]).unwrap();
        directory
            .claim("g2", &[segment("2001:db8:1::/48")])
            .unwrap();
        let bytes = rmp_serde::to_vec_named(&directory).unwrap();
        let mut restored: SegmentDirectory = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(restored.entries(), directory.entries());
        assert_eq!(restored.revision(), 2);
        assert!(
            restored
                .claim("g3", &[segment("2001:db8:1:8000::/49")])
                .is_err(),
            "the restored index still refuses overlaps"
        );
    }
}
