//! How pushes travel from entities to the nodes holding client sessions: the host groups an
//! entity's pushes by node and by content, and sends each group to that node's inbox as one
//! [`SessionPushes`] message, so a change watched by a hundred sessions on one node costs one
//! publish, not a hundred.

use serde::{Deserialize, Serialize};

/// The entity id a batch of pushes is addressed to (kind `session`): the batch names its
/// sessions itself.
pub const SESSION_PUSHES_ID: &str = "*";

/// One push for several sessions of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPushes {
    /// The sessions, all held by the receiving node.
    pub session_ids: Vec<String>,
    /// The push, encoded by the entity kind that made it.
    #[serde(with = "serde_bytes")]
    pub push: Vec<u8>,
}
