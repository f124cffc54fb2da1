//! Entity kinds: wire messages and behaviours that translate them into model calls.

pub mod partner;
pub mod probe;
pub mod user;

use lanmesh_bus::codec::{CodecError, FrameLimits, decode_message, encode_message};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes an entity message or reply (named-field MessagePack).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, CodecError> {
    encode_message(message, &FrameLimits::default())
}

/// Decodes an entity message or reply.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    decode_message(payload, &FrameLimits::default())
}
