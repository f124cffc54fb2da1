//! The probe entity's wire messages and its behaviour (see [`crate::model::probe`]).

use crate::host::behavior::{Effects, EntityBehavior, HandleError, IncomingMessage, Outgoing};
use crate::model::entity_kind::EntityKind;
use crate::model::probe::ProbeState;
use serde::{Deserialize, Serialize};

/// A message to a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeRequest {
    /// Apply sequence number `seq` (senders count from 1 per probe); replies `Recorded`.
    Record {
        /// The sender's sequence number for this probe.
        seq: u64,
    },
    /// Send one `Bump` to the probe `target_id`; replies `Relayed`.
    Relay {
        /// The receiving probe's id.
        target_id: String,
    },
    /// Count one bump (sent by another probe; no reply).
    Bump,
    /// Reply with everything recorded (`Report`); changes nothing.
    Inspect,
}

/// A probe's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeReply {
    /// The sequence number was applied; this many have been in all.
    Recorded {
        /// Sequence numbers applied so far.
        n_applied: u64,
    },
    /// The bump was sent.
    Relayed,
    /// What the probe recorded.
    Report(ProbeReport),
    /// The request could not be applied.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A sequence number that did not follow the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeGap {
    /// The number that should have come next.
    pub expected: u64,
    /// The number that came.
    pub received: u64,
}

/// A run of messages applied by one (node, epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOwnerSpan {
    /// The node.
    pub node_id: String,
    /// Its lease epoch of the probe's shard.
    pub epoch: u64,
    /// Messages applied in the run.
    pub n_applied: u64,
}

/// Everything a probe recorded, as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Sequence numbers applied.
    pub n_applied: u64,
    /// The last one applied (0 = none).
    pub last_seq: u64,
    /// Numbers that did not follow their predecessor.
    pub gaps: Vec<ProbeGap>,
    /// Bumps received from other probes.
    pub n_bumps: u64,
    /// Who applied what, oldest first.
    pub owners: Vec<ProbeOwnerSpan>,
    /// Whether the owner history shows two owners at once.
    pub owners_overlap: bool,
}

impl From<&ProbeState> for ProbeReport {
    fn from(state: &ProbeState) -> Self {
        Self {
            n_applied: state.n_applied,
            last_seq: state.last_seq,
            gaps: state
                .gaps
                .iter()
                .map(|gap| ProbeGap {
                    expected: gap.expected,
                    received: gap.received,
                })
                .collect(),
            n_bumps: state.n_bumps,
            owners: state
                .owners
                .iter()
                .map(|span| ProbeOwnerSpan {
                    node_id: span.node_id.clone(),
                    epoch: span.epoch,
                    n_applied: span.n_applied,
                })
                .collect(),
            owners_overlap: state.owners_overlap(),
        }
    }
}

use super::decode_request;
pub use super::{decode, encode};

fn encode_reply(reply: &ProbeReply) -> Result<Option<Vec<u8>>, HandleError> {
    encode(reply).map(Some).map_err(HandleError::from)
}

/// The probe behaviour.
#[derive(Debug)]
pub struct ProbeEntity;

impl EntityBehavior for ProbeEntity {
    const KIND: EntityKind = EntityKind::Probe;
    type State = ProbeState;

    fn handle(
        state: &mut ProbeState,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: ProbeRequest = decode_request(message)?;
        let owner = message.owner;
        Ok(match request {
            ProbeRequest::Record { seq } => {
                state.record(seq, &owner.node_id, owner.epoch);
                Effects {
                    state_changed: true,
                    reply_opt: encode_reply(&ProbeReply::Recorded {
                        n_applied: state.n_applied,
                    })?,
                    ..Effects::default()
                }
            }
            ProbeRequest::Relay { target_id } => match EntityKind::Probe.address(target_id) {
                Ok(target) => Effects {
                    state_changed: false,
                    reply_opt: encode_reply(&ProbeReply::Relayed)?,
                    outgoing: vec![Outgoing {
                        target,
                        payload: encode(&ProbeRequest::Bump)?,
                    }],
                    ..Effects::default()
                },
                Err(error) => Effects {
                    reply_opt: encode_reply(&ProbeReply::Refused {
                        reason: error.to_string(),
                    })?,
                    ..Effects::default()
                },
            },
            ProbeRequest::Bump => {
                state.bump(&owner.node_id, owner.epoch);
                Effects {
                    state_changed: true,
                    ..Effects::default()
                }
            }
            ProbeRequest::Inspect => Effects {
                reply_opt: encode_reply(&ProbeReply::Report(ProbeReport::from(&*state)))?,
                ..Effects::default()
            },
        })
    }
}
