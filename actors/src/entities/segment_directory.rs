//! The segment-directory entity: the one place that decides which gateway owns which segment,
//! so two venues can never register overlapping segments, even through two nodes at once.
//! Nodes read it to build their own segment index.

use crate::entities::{decode_request, encode};
use crate::host::behavior::{AuditNote, Effects, EntityBehavior, HandleError, IncomingMessage};
use crate::model::entity_kind::EntityKind;
use crate::model::segment::Segment;
use crate::model::segment_directory::SegmentDirectory;
use serde::{Deserialize, Serialize};

/// A request to the segment directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectoryRequest {
    /// Replace the gateway's segments with these, all or nothing.
    Claim {
        /// The gateway.
        gateway_id: String,
        /// Its segments.
        segments: Vec<Segment>,
    },
    /// Every segment and its gateway, unless the caller already has this revision.
    Snapshot {
        /// The revision the caller holds (0: none).
        known_revision: u64,
    },
}

/// The directory's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectoryReply {
    /// The claim holds.
    Claimed {
        /// The directory's revision after it.
        revision: u64,
    },
    /// The claim overlaps other segments (and changed nothing).
    Conflict {
        /// Each conflicting segment and its gateway.
        conflicts: Vec<(Segment, String)>,
    },
    /// The caller's revision is current.
    Unchanged,
    /// Every segment and its gateway.
    Snapshot {
        /// The revision.
        revision: u64,
        /// The entries.
        entries: Vec<(Segment, String)>,
    },
}

/// The segment-directory behaviour.
#[derive(Debug)]
pub struct SegmentDirectoryEntity;

impl EntityBehavior for SegmentDirectoryEntity {
    const KIND: EntityKind = EntityKind::SegmentDirectory;
    type State = SegmentDirectory;

    fn handle(
        state: &mut SegmentDirectory,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: DirectoryRequest = decode_request(message)?;
        let mut effects = Effects::default();
        let reply = match request {
            DirectoryRequest::Claim {
                gateway_id,
                segments,
            } => match state.claim(&gateway_id, &segments) {
                Ok(()) => {
                    effects.state_changed = true;
                    let listed: Vec<String> = segments.iter().map(ToString::to_string).collect();
                    effects.audit.push(AuditNote {
                        action: "segments.claimed".to_owned(),
                        detail: format!("gateway={gateway_id} segments={}", listed.join(",")),
                    });
                    DirectoryReply::Claimed {
                        revision: state.revision(),
                    }
                }
                Err(conflict) => DirectoryReply::Conflict {
                    conflicts: conflict.conflicts,
                },
            },
            DirectoryRequest::Snapshot { known_revision } => {
                if known_revision == state.revision() {
                    DirectoryReply::Unchanged
                } else {
                    DirectoryReply::Snapshot {
                        revision: state.revision(),
                        entries: state.entries(),
                    }
                }
            }
        };
        effects.reply_opt = Some(encode(&reply)?);
        Ok(effects)
    }
}
