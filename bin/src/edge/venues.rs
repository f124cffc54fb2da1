//! The node's segment index (S0): which registered venue segment a client address belongs
//! to, by longest prefix. It is a copy of the segment directory entity, refreshed by polling
//! the directory's revision (one small request per interval while nothing changes) and at
//! once after a registration through this node. Polling rather than a broadcast: a node that
//! missed a broadcast (restarting, reconnecting) would keep a stale index until the next
//! change; a poll heals within one interval whatever happened.
//!
//! The edge uses it for the first monitor: logins, logouts and session ends from an address
//! inside a segment are told to that segment's entity.

use crate::edge::Edge;
use lanmesh_actors::entities::segment::{ClientEvent, SegmentRequest};
use lanmesh_actors::entities::segment_directory::{DirectoryReply, DirectoryRequest};
use lanmesh_actors::model::entity_kind::{EntityKind, SEGMENT_DIRECTORY_ID};
use lanmesh_actors::model::segment::{Segment, SegmentIndex};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The node's copy of the segment directory.
#[derive(Default)]
pub struct VenueIndex {
    current: RwLock<(u64, SegmentIndex<String>)>,
}

impl VenueIndex {
    /// The segment a client address belongs to.
    pub fn segment_of(&self, address: IpAddr) -> Option<Segment> {
        self.venue_of(address).map(|(segment, _gateway_id)| segment)
    }

    /// The venue a client address belongs to: its segment and the segment's gateway.
    pub fn venue_of(&self, address: IpAddr) -> Option<(Segment, String)> {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current
            .1
            .lookup(address)
            .map(|(segment, gateway_id)| (*segment, gateway_id.clone()))
    }

    /// Every gateway holding a segment.
    pub fn gateway_ids(&self) -> std::collections::BTreeSet<String> {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current
            .1
            .iter()
            .map(|(_segment, gateway_id)| gateway_id.clone())
            .collect()
    }

    fn revision(&self) -> u64 {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    fn replace(&self, revision: u64, entries: Vec<(Segment, String)>) {
        let mut index = SegmentIndex::new();
        for (segment, gateway_id) in entries {
            if let Err(conflict) = index.insert(segment, gateway_id) {
                tracing::error!(error = %conflict, "the segment directory holds overlapping segments");
            }
        }
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (revision, index);
    }
}

impl Edge {
    /// Brings this node's segment index up to the directory's revision.
    pub async fn refresh_venues(&self) {
        let request = DirectoryRequest::Snapshot {
            known_revision: self.venues.revision(),
        };
        match self
            .ask_entity(
                EntityKind::SegmentDirectory,
                SEGMENT_DIRECTORY_ID,
                &request,
                None,
            )
            .await
        {
            Ok(DirectoryReply::Snapshot { revision, entries }) => {
                tracing::debug!(
                    revision,
                    n_segments = entries.len(),
                    "segment index refreshed"
                );
                let metrics = &self.deps.metrics;
                metrics
                    .venue_index_revision
                    .set(i64::try_from(revision).unwrap_or(i64::MAX));
                metrics
                    .venue_segments
                    .set(i64::try_from(entries.len()).unwrap_or(i64::MAX));
                self.venues.replace(revision, entries);
            }
            Ok(DirectoryReply::Unchanged) => {}
            Ok(other) => {
                tracing::error!(reply = ?other, "unexpected answer from the segment directory");
            }
            Err(error) => {
                tracing::debug!(error = %error.message, "segment directory not reachable; index kept");
            }
        }
    }

    /// Tells the segment holding `address` (if any) what a client did there.
    pub async fn tell_segment(&self, account: &str, address: IpAddr, event: ClientEvent) {
        let Some(segment) = self.venues.segment_of(address) else {
            return;
        };
        let request = SegmentRequest::Presence {
            account: account.to_owned(),
            address,
            event,
            at_unix_ms: i64::try_from(self.deps.clock.now_unix_ms()).unwrap_or(i64::MAX),
        };
        self.tell_entity(EntityKind::Segment, &segment.to_string(), &request)
            .await;
    }
}

/// Refreshes `edge`'s segment index every `interval` until the edge is dropped.
pub fn spawn_refresh(edge: &Arc<Edge>, interval: Duration) {
    crate::edge::spawn_periodic(edge, interval, |edge| async move {
        edge.refresh_venues().await;
    });
}
