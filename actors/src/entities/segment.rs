//! The segment entity (the first monitor, S0 step 2): one per registered LAN segment, whose id
//! is the segment's canonical CIDR. Every client login, logout and session end from an address
//! inside the segment comes here and becomes a presence sample in storage; the window figures
//! (logins, distinct accounts, concurrent peak, online time) are computed from those samples.
//!
//! The entity keeps no state of its own: samples are idempotent in the store and carry the
//! time the edge saw the event, so a redelivery appends the same sample and changes nothing.

use crate::entities::decode_request;
use crate::host::behavior::{Effects, EntityBehavior, HandleError, IncomingMessage};
use crate::model::entity_kind::EntityKind;
use crate::model::segment::Segment;
use lanmesh_storage::{PresenceEvent, PresenceSample};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What a client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientEvent {
    /// Logged in (a session opened or was joined).
    Login,
    /// Logged out.
    Logout,
    /// The session ended without a logout (the connection went away).
    SessionEnd,
}

/// A request to a segment entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentRequest {
    /// A client's presence changed at an address inside the segment.
    Presence {
        /// The account.
        account: String,
        /// The client's address.
        address: IpAddr,
        /// What happened.
        event: ClientEvent,
        /// When the edge saw it.
        at_unix_ms: i64,
    },
}

/// The segment behaviour.
#[derive(Debug)]
pub struct SegmentEntity;

impl EntityBehavior for SegmentEntity {
    const KIND: EntityKind = EntityKind::Segment;
    type State = ();

    fn handle(_state: &mut (), message: &IncomingMessage<'_>) -> Result<Effects, HandleError> {
        let malformed = |reason: String| HandleError::Malformed { reason };
        let segment = Segment::from_canonical_str(message.entity_id)
            .map_err(|error| malformed(format!("segment entity id: {error}")))?;
        let request: SegmentRequest = decode_request(message)?;
        let SegmentRequest::Presence {
            account,
            address,
            event,
            at_unix_ms,
        } = request;
        if !segment.contains(address) {
            return Err(malformed(format!("{address} is not in {segment}")));
        }
        let sample = PresenceSample {
            segment: segment.to_string(),
            address: crate::model::segment::canonical_address(address),
            account,
            event: match event {
                ClientEvent::Login => PresenceEvent::Login,
                ClientEvent::Logout => PresenceEvent::Logout,
                ClientEvent::SessionEnd => PresenceEvent::SessionEnd,
            },
            at_unix_ms,
        };
        Ok(Effects {
            samples: vec![sample],
            ..Effects::default()
        })
    }
}
