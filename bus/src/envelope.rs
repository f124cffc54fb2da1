//! The envelope every bus message travels in, and the trace context it carries across nodes.
//!
//! The envelope is itself the wire type: it is encoded as a MessagePack map with named fields
//! (see [`crate::codec`]), so fields can be added later without breaking older readers. Optional
//! fields are left out of the frame when unset.

use crate::address::{EntityAddress, NameError, NodeId};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use uuid::Uuid;

/// Milliseconds since the Unix epoch, the bus's wall-clock unit (deadlines, expirations).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A W3C-style trace context: the trace a message belongs to and the span that sent it.
///
/// Both ids are lowercase hex (32 and 16 digits), never all zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// 128-bit trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// 64-bit id of the sending span, 16 lowercase hex digits.
    pub span_id: String,
}

/// Why a trace context was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TraceContextError {
    /// An id is not lowercase hex of the right length, or is all zeros.
    #[error("{field} must be {n_digits} lowercase hex digits, not all zero")]
    BadId {
        /// `trace_id` or `span_id`.
        field: &'static str,
        /// Expected number of hex digits.
        n_digits: usize,
    },
}

fn is_valid_hex_id(value: &str, n_digits: usize) -> bool {
    value.len() == n_digits
        && value
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        && value.bytes().any(|byte| byte != b'0')
}

fn random_hex(n_digits: usize) -> String {
    let mut digits = String::with_capacity(n_digits);
    while digits.len() < n_digits {
        digits.push_str(&Uuid::new_v4().simple().to_string());
    }
    digits.truncate(n_digits);
    digits
}

impl TraceContext {
    /// Starts a new trace.
    pub fn new_root() -> Self {
        Self {
            trace_id: random_hex(32),
            span_id: random_hex(16),
        }
    }

    /// A context for a message sent from within this one: same trace, new span.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            span_id: random_hex(16),
        }
    }

    /// Checks both ids.
    pub fn validate(&self) -> Result<(), TraceContextError> {
        if !is_valid_hex_id(&self.trace_id, 32) {
            return Err(TraceContextError::BadId {
                field: "trace_id",
                n_digits: 32,
            });
        }
        if !is_valid_hex_id(&self.span_id, 16) {
            return Err(TraceContextError::BadId {
                field: "span_id",
                n_digits: 16,
            });
        }
        Ok(())
    }
}

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id of this message (UUID v7, time-ordered). A retry reuses it, so receivers can
    /// de-duplicate.
    pub msg_id: Uuid,
    /// The entity the message is for.
    pub target: EntityAddress,
    /// The node that sent it.
    pub sender: NodeId,
    /// The entity that sent it, when an entity (not a client or the node itself) is the sender.
    #[serde(
        rename = "sender_entity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sender_entity_opt: Option<EntityAddress>,
    /// For a reply: the `msg_id` of the request it answers.
    #[serde(
        rename = "correlation_id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub correlation_id_opt: Option<Uuid>,
    /// For a request: the node whose inbox takes the reply.
    #[serde(rename = "reply_to", default, skip_serializing_if = "Option::is_none")]
    pub reply_to_opt: Option<NodeId>,
    /// Wall-clock instant (Unix ms) after which nobody waits for this message any more.
    #[serde(
        rename = "deadline_unix_ms",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deadline_unix_ms_opt: Option<u64>,
    /// Trace context of the sender, so handlers can continue the trace.
    #[serde(rename = "trace", default, skip_serializing_if = "Option::is_none")]
    pub trace_opt: Option<TraceContext>,
    /// The domain message, itself MessagePack-encoded by the layer above the bus.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Why an envelope was refused after it was parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// `msg_id` is not a version 7 UUID.
    #[error("msg_id must be a version 7 uuid, got version {version}")]
    MsgIdVersion {
        /// The version found.
        version: usize,
    },
    /// A name field is malformed.
    #[error("{field}: {source}")]
    Name {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        source: NameError,
    },
    /// The trace context is malformed.
    #[error("trace: {0}")]
    Trace(#[from] TraceContextError),
}

impl Envelope {
    /// A new message for `target` from `sender`, with a fresh `msg_id` and no options set.
    pub fn new(target: EntityAddress, sender: NodeId, payload: Vec<u8>) -> Self {
        Self {
            msg_id: Uuid::now_v7(),
            target,
            sender,
            sender_entity_opt: None,
            correlation_id_opt: None,
            reply_to_opt: None,
            deadline_unix_ms_opt: None,
            trace_opt: None,
            payload,
        }
    }

    /// Sets the deadline `timeout` from now.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.deadline_unix_ms_opt = Some(now_unix_ms().saturating_add(timeout_ms));
        self
    }

    /// Sets the trace context.
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace_opt = Some(trace);
        self
    }

    /// Checks every field's invariants; the codec calls this on encode and on decode.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        let version = self.msg_id.get_version_num();
        if version != 7 {
            return Err(EnvelopeError::MsgIdVersion { version });
        }
        let name = |field: &'static str| move |source| EnvelopeError::Name { field, source };
        self.target.validate().map_err(name("target"))?;
        crate::address::validate_node_id(self.sender.as_str()).map_err(name("sender"))?;
        if let Some(sender_entity) = &self.sender_entity_opt {
            sender_entity.validate().map_err(name("sender_entity"))?;
        }
        if let Some(reply_to) = &self.reply_to_opt {
            crate::address::validate_node_id(reply_to.as_str()).map_err(name("reply_to"))?;
        }
        if let Some(trace) = &self.trace_opt {
            trace.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope::new(
            EntityAddress::new("user", "42").unwrap(),
            NodeId::new("node-a").unwrap(),
            vec![1, 2, 3],
        )
    }

    #[test]
    fn new_envelopes_are_valid_and_distinct() {
        let first = sample();
        let second = sample();
        assert!(first.validate().is_ok());
        assert_ne!(first.msg_id, second.msg_id);
        assert!(first.msg_id < second.msg_id, "v7 ids are time-ordered");
    }

    #[test]
    fn timeout_sets_a_deadline_from_now() {
        let before = now_unix_ms();
        let envelope = sample().with_timeout(Duration::from_secs(10));
        let deadline = envelope.deadline_unix_ms_opt.unwrap();
        assert!((before + 10_000..=now_unix_ms() + 10_000).contains(&deadline));
    }

    #[test]
    fn validation_names_the_field() {
        let mut envelope = sample();
        envelope.msg_id = Uuid::new_v4();
        assert_eq!(
            envelope.validate().unwrap_err().to_string(),
            "msg_id must be a version 7 uuid, got version 4"
        );
        let mut envelope = sample();
        envelope.target.kind = "Bad Kind".into();
        assert_eq!(
            envelope.validate().unwrap_err().to_string(),
            "target: entity kind contains 'B', allowed: a-z 0-9 _ -"
        );
        let mut envelope = sample().with_trace(TraceContext::new_root());
        envelope.trace_opt.as_mut().unwrap().span_id = "0".repeat(16);
        assert_eq!(
            envelope.validate().unwrap_err().to_string(),
            "trace: span_id must be 16 lowercase hex digits, not all zero"
        );
    }

    #[test]
    fn child_trace_keeps_trace_id() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert!(root.validate().is_ok() && child.validate().is_ok());
        assert_eq!(root.trace_id, child.trace_id);
        assert_ne!(root.span_id, child.span_id);
    }
}
