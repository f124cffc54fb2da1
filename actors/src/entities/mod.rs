//! Entity kinds: wire messages and behaviours that translate them into model calls.

pub mod campaign;
pub mod campaign_directory;
pub mod certification_policy;
pub mod claim_book;
pub mod gateway;
pub mod ledger;
pub mod offer_cell;
pub mod partner;
pub mod probe;
pub mod segment;
pub mod segment_directory;
pub mod share;
pub mod user;

#[cfg(test)]
mod test_support;

use lanmesh_bus::codec::{CodecError, FrameLimits, decode_message, encode_message};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes an entity message or reply (named-field MessagePack).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, CodecError> {
    encode_message(message, &FrameLimits::default())
}

/// Decodes the request an entity received; one that does not decode can never be handled.
pub fn decode_request<T: DeserializeOwned>(
    message: &crate::host::behavior::IncomingMessage<'_>,
) -> Result<T, crate::host::behavior::HandleError> {
    decode(message.payload).map_err(|error| crate::host::behavior::HandleError::Malformed {
        reason: error.to_string(),
    })
}

/// Decodes an entity message or reply.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    decode_message(payload, &FrameLimits::default())
}
