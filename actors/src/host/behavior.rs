//! What an entity kind implements to be hosted: its persisted state and a handler that turns
//! one message into a new state, a reply and messages to other entities — with no I/O.

use crate::model::entity_kind::EntityKind;
use lanmesh_bus::EntityAddress;
use lanmesh_storage::PresenceSample;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// Which owner is applying a message: the node and its ownership epoch of the entity's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerStamp {
    /// The node hosting the entity.
    pub node_id: String,
    /// The node's lease epoch of the shard; persisted state carries it as its fence.
    pub epoch: u64,
}

/// One message as an entity sees it.
#[derive(Debug)]
pub struct IncomingMessage<'a> {
    /// The entity's own id.
    pub entity_id: &'a str,
    /// The message's id (the de-duplication key).
    pub msg_id: Uuid,
    /// The entity that sent it, if an entity did (else a client or a node).
    pub sender_entity_opt: Option<&'a EntityAddress>,
    /// The domain message, MessagePack encoded.
    pub payload: &'a [u8],
    /// Who is applying it.
    pub owner: &'a OwnerStamp,
    /// Wall-clock time of handling, in Unix milliseconds.
    pub now_unix_ms: u64,
}

/// A message an entity sends to another entity (one way; the receiver may answer the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The receiving entity.
    pub target: EntityAddress,
    /// The domain message, MessagePack encoded.
    pub payload: Vec<u8>,
}

/// A message pushed to a client session on the node that holds it: best effort (a session
/// that is gone re-syncs when it resumes), never retried, never de-duplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The node holding the session.
    pub node_id: String,
    /// The session.
    pub session_id: String,
    /// The push, MessagePack encoded.
    pub payload: Vec<u8>,
}

/// One audit event to record with the state change (the host adds ids, time and entity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditNote {
    /// What happened, e.g. `friend.accepted`.
    pub action: String,
    /// Details, never secret.
    pub detail: String,
}

/// One entry for the entity's append-only journal (quota ledgers keep one): appended under the
/// entity's id after the state is durable and before the acknowledgement, and remembered with
/// the processed message, so a redelivery appends the identical entry again (the journal store
/// keeps one entry per sequence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalNote {
    /// The entry's number in the entity's journal (1, 2, 3… without gaps).
    pub sequence: u64,
    /// When it was made, in Unix milliseconds.
    pub at_unix_ms: u64,
    /// The entry, encoded by the entity kind.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// What handling one message produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Whether the state changed (and so must be persisted before the message is acknowledged).
    pub state_changed: bool,
    /// The reply, sent when the message asked for one.
    pub reply_opt: Option<Vec<u8>>,
    /// Messages to other entities, sent after the state is durable.
    pub outgoing: Vec<Outgoing>,
    /// Pushes to client sessions, sent after the messages.
    pub pushes: Vec<Push>,
    /// Audit events, appended after the state is durable and before the acknowledgement.
    pub audit: Vec<AuditNote>,
    /// Presence samples, appended before the acknowledgement. Samples are idempotent in the
    /// store, so they are not remembered for redeliveries: a redelivery appends them again
    /// and changes no figure. Their times must come from the message, never from `now`.
    pub samples: Vec<PresenceSample>,
    /// Journal entries, appended after the state is durable and before anything is sent.
    pub journal: Vec<JournalNote>,
}

/// A message an entity cannot handle, ever (it is dead-lettered).
#[derive(Debug, Error)]
pub enum HandleError {
    /// The payload is not a message of this kind.
    #[error("malformed message: {reason}")]
    Malformed {
        /// What the decoder said.
        reason: String,
    },
    /// The reply or an outgoing message could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(#[from] lanmesh_bus::codec::CodecError),
}

/// One kind of hosted entity.
pub trait EntityBehavior: Send + 'static {
    /// The kind this behaviour serves.
    const KIND: EntityKind;
    /// The entity's persisted state; `Default` is the state of an entity never seen before.
    type State: Serialize + DeserializeOwned + Default + Send + Unpin + 'static;

    /// Handles one message. Must be deterministic and do no I/O: the host persists the state,
    /// sends the reply and the outgoing messages, and de-duplicates redeliveries.
    fn handle(
        state: &mut Self::State,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError>;
}
