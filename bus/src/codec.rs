//! The MessagePack codec for envelopes and the domain messages inside them.
//!
//! Frames are encoded as maps with named fields (`rmp_serde::to_vec_named`). Decoding is total:
//! any byte string, however malformed, truncated, oversized or mistyped, yields a typed
//! [`CodecError`] and never a panic or an allocation larger than the frame cap.

use crate::envelope::{Envelope, EnvelopeError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::Cursor;
use thiserror::Error;

/// Default cap on one frame: 1 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Nesting depth accepted while decoding (envelopes are shallow; this stops stack abuse).
const MAX_NESTING_DEPTH: usize = 64;

/// Size limits applied to every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest frame accepted or produced, in bytes.
    pub max_frame_bytes: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The frame is larger than the cap.
    #[error("frame of {n_bytes} bytes exceeds the {max_bytes}-byte limit")]
    Oversized {
        /// Its size.
        n_bytes: usize,
        /// The cap.
        max_bytes: usize,
    },
    /// The frame ends before the value does.
    #[error("frame is truncated")]
    Truncated,
    /// The frame is not the MessagePack the receiver expects (bad marker, wrong type, unknown
    /// variant, missing field, bad UTF-8, ...).
    #[error("malformed frame: {reason}")]
    Malformed {
        /// What the decoder found.
        reason: String,
    },
    /// Bytes follow the value.
    #[error("{n_bytes} unexpected bytes after the value")]
    TrailingBytes {
        /// How many.
        n_bytes: usize,
    },
    /// The envelope parsed but breaks an invariant.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(#[from] EnvelopeError),
    /// The value could not be serialized.
    #[error("cannot encode: {reason}")]
    Encode {
        /// What the encoder said.
        reason: String,
    },
}

fn check_size(n_bytes: usize, limits: &FrameLimits) -> Result<(), CodecError> {
    if n_bytes > limits.max_frame_bytes {
        return Err(CodecError::Oversized {
            n_bytes,
            max_bytes: limits.max_frame_bytes,
        });
    }
    Ok(())
}

fn classify_decode_error(error: rmp_serde::decode::Error) -> CodecError {
    use rmp_serde::decode::Error as DecodeError;
    match error {
        DecodeError::InvalidMarkerRead(io_error) | DecodeError::InvalidDataRead(io_error)
            if io_error.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            CodecError::Truncated
        }
        other => CodecError::Malformed {
            reason: other.to_string(),
        },
    }
}

/// Encodes any serializable message as a named-field MessagePack frame within `limits`.
pub fn encode_message<T: Serialize>(
    message: &T,
    limits: &FrameLimits,
) -> Result<Vec<u8>, CodecError> {
    let frame = rmp_serde::to_vec_named(message).map_err(|error| CodecError::Encode {
        reason: error.to_string(),
    })?;
    check_size(frame.len(), limits)?;
    Ok(frame)
}

/// Decodes one message from a frame that must hold exactly that message.
pub fn decode_message<T: DeserializeOwned>(
    frame: &[u8],
    limits: &FrameLimits,
) -> Result<T, CodecError> {
    check_size(frame.len(), limits)?;
    let mut deserializer = rmp_serde::Deserializer::new(Cursor::new(frame));
    deserializer.set_max_depth(MAX_NESTING_DEPTH);
    let message = T::deserialize(&mut deserializer).map_err(classify_decode_error)?;
    let n_consumed = usize::try_from(deserializer.position()).unwrap_or(usize::MAX);
    let n_trailing = frame.len().saturating_sub(n_consumed);
    if n_trailing > 0 {
        return Err(CodecError::TrailingBytes {
            n_bytes: n_trailing,
        });
    }
    Ok(message)
}

/// Encodes an envelope after checking its invariants, so nothing a receiver would refuse is sent.
pub fn encode_envelope(envelope: &Envelope, limits: &FrameLimits) -> Result<Vec<u8>, CodecError> {
    envelope.validate()?;
    encode_message(envelope, limits)
}

/// Decodes and validates an envelope.
pub fn decode_envelope(frame: &[u8], limits: &FrameLimits) -> Result<Envelope, CodecError> {
    let envelope: Envelope = decode_message(frame, limits)?;
    envelope.validate()?;
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{EntityAddress, NodeId};
    use crate::envelope::TraceContext;
    use proptest::prelude::*;
    use serde::Deserialize;
    use uuid::Uuid;

    fn limits() -> FrameLimits {
        FrameLimits::default()
    }

    fn full_envelope() -> Envelope {
        let mut envelope = Envelope::new(
            EntityAddress::new("segment", "10.1.0.0/16").unwrap(),
            NodeId::new("node-a").unwrap(),
            b"payload".to_vec(),
        )
        .with_timeout(std::time::Duration::from_secs(5))
        .with_trace(TraceContext::new_root());
        envelope.sender_entity_opt = Some(EntityAddress::new("user", "7").unwrap());
        envelope.correlation_id_opt = Some(Uuid::now_v7());
        envelope.reply_to_opt = Some(NodeId::new("node-b").unwrap());
        envelope
    }

    fn arbitrary_name(pattern: &'static str) -> impl Strategy<Value = String> {
        proptest::string::string_regex(pattern).unwrap()
    }

    prop_compose! {
        fn arbitrary_address()(kind in arbitrary_name("[a-z0-9_-]{1,32}"),
                               id in "[^\\p{Cc}]{1,64}") -> EntityAddress {
            EntityAddress { kind, id }
        }
    }

    prop_compose! {
        fn arbitrary_envelope()(
            target in arbitrary_address(),
            sender in arbitrary_name("[A-Za-z0-9._-]{1,64}"),
            sender_entity_opt in proptest::option::of(arbitrary_address()),
            has_correlation in any::<bool>(),
            reply_to_opt in proptest::option::of(arbitrary_name("[A-Za-z0-9._-]{1,64}")),
            deadline_unix_ms_opt in proptest::option::of(any::<u64>()),
            has_trace in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..512),
        ) -> Envelope {
            let mut envelope = Envelope::new(target, NodeId::new(sender).unwrap(), payload);
            envelope.sender_entity_opt = sender_entity_opt;
            envelope.correlation_id_opt = has_correlation.then(Uuid::now_v7);
            envelope.reply_to_opt = reply_to_opt.map(|id| NodeId::new(id).unwrap());
            envelope.deadline_unix_ms_opt = deadline_unix_ms_opt;
            envelope.trace_opt = has_trace.then(TraceContext::new_root);
            envelope
        }
    }

    proptest! {
        #[test]
        fn envelopes_round_trip(envelope in arbitrary_envelope()) {
            let frame = encode_envelope(&envelope, &limits()).unwrap();
            prop_assert_eq!(decode_envelope(&frame, &limits()).unwrap(), envelope);
        }

        #[test]
        fn garbage_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..2048)) {
            // Any outcome is fine except a panic; a success must still be a valid envelope.
            if let Ok(envelope) = decode_envelope(&frame, &limits()) {
                prop_assert!(envelope.validate().is_ok());
            }
        }

        #[test]
        fn flipped_bytes_never_panic(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut frame = encode_envelope(&full_envelope(), &limits()).unwrap();
            let position = index.index(frame.len());
            frame[position] = byte;
            if let Ok(envelope) = decode_envelope(&frame, &limits()) {
                prop_assert!(envelope.validate().is_ok());
            }
        }
    }

    #[test]
    fn truncation_at_every_byte_is_a_typed_error() {
        let frame = encode_envelope(&full_envelope(), &limits()).unwrap();
        for length in 0..frame.len() {
            let result = decode_envelope(&frame[..length], &limits());
            assert!(
                matches!(result, Err(CodecError::Truncated)),
                "prefix of {length} bytes gave {result:?}"
            );
        }
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let tight = FrameLimits {
            max_frame_bytes: 64,
        };
        let envelope = full_envelope();
        assert!(matches!(
            encode_envelope(&envelope, &tight),
            Err(CodecError::Oversized { max_bytes: 64, .. })
        ));
        let frame = encode_envelope(&envelope, &limits()).unwrap();
        let error = decode_envelope(&frame, &tight).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("frame of {} bytes exceeds the 64-byte limit", frame.len())
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut frame = encode_envelope(&full_envelope(), &limits()).unwrap();
        frame.extend_from_slice(&[0xc0, 0xc0]);
        assert!(matches!(
            decode_envelope(&frame, &limits()),
            Err(CodecError::TrailingBytes { n_bytes: 2 })
        ));
    }

    /// A hand-built map with one field replaced, to test wrong types field by field.
    fn envelope_map_with(field: &str, value: rmpv_like::Value) -> Vec<u8> {
        let envelope = full_envelope();
        let mut entries = vec![
            (
                "msg_id",
                rmpv_like::Value::Bin(envelope.msg_id.as_bytes().to_vec()),
            ),
            (
                "target",
                rmpv_like::Value::Map(vec![
                    ("kind", rmpv_like::Value::Str("user".into())),
                    ("id", rmpv_like::Value::Str("1".into())),
                ]),
            ),
            ("sender", rmpv_like::Value::Str("node-a".into())),
            ("payload", rmpv_like::Value::Bin(vec![1])),
        ];
        match entries.iter_mut().find(|(name, _)| *name == field) {
            Some(entry) => entry.1 = value,
            None => entries.push((Box::leak(field.to_owned().into_boxed_str()), value)),
        }
        rmpv_like::encode(&rmpv_like::Value::Map(entries))
    }

    /// Just enough of a MessagePack writer to build frames the typed encoder would never make.
    mod rmpv_like {
        pub enum Value {
            Str(String),
            Bin(Vec<u8>),
            Int(i64),
            Bool(bool),
            Map(Vec<(&'static str, Value)>),
        }

        pub fn encode(value: &Value) -> Vec<u8> {
            let mut frame = Vec::new();
            write(&mut frame, value);
            frame
        }

        fn write(frame: &mut Vec<u8>, value: &Value) {
            match value {
                Value::Str(text) => rmp::encode::write_str(frame, text).unwrap(),
                Value::Bin(bytes) => rmp::encode::write_bin(frame, bytes).unwrap(),
                Value::Int(number) => {
                    rmp::encode::write_sint(frame, *number).unwrap();
                }
                Value::Bool(flag) => rmp::encode::write_bool(frame, *flag).unwrap(),
                Value::Map(entries) => {
                    rmp::encode::write_map_len(frame, entries.len() as u32).unwrap();
                    for (name, entry) in entries {
                        rmp::encode::write_str(frame, name).unwrap();
                        write(frame, entry);
                    }
                }
            }
        }
    }

    #[test]
    fn the_hand_built_baseline_decodes() {
        let frame = envelope_map_with("sender", rmpv_like::Value::Str("node-a".into()));
        let envelope = decode_envelope(&frame, &limits()).unwrap();
        assert_eq!(envelope.sender.as_str(), "node-a");
    }

    #[test]
    fn unknown_fields_are_ignored_for_evolution() {
        let frame = envelope_map_with("added_in_v2", rmpv_like::Value::Int(5));
        assert!(decode_envelope(&frame, &limits()).is_ok());
    }

    #[test]
    fn bad_inputs_yield_typed_errors() {
        use rmpv_like::Value;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "frame is truncated"),
            ("nil", vec![0xc0], "malformed frame"),
            ("reserved marker", vec![0xc1], "malformed frame"),
            ("array instead of map", vec![0x91, 0x01], "malformed frame"),
            (
                "msg_id as integer",
                envelope_map_with("msg_id", Value::Int(7)),
                "malformed frame",
            ),
            (
                "msg_id of 3 bytes",
                envelope_map_with("msg_id", Value::Bin(vec![1, 2, 3])),
                "malformed frame",
            ),
            (
                "msg_id version 4",
                envelope_map_with("msg_id", Value::Bin(Uuid::new_v4().as_bytes().to_vec())),
                "invalid envelope: msg_id must be a version 7 uuid, got version 4",
            ),
            (
                "target as string",
                envelope_map_with("target", Value::Str("user/1".into())),
                "malformed frame",
            ),
            (
                "sender as bool",
                envelope_map_with("sender", Value::Bool(true)),
                "malformed frame",
            ),
            (
                "sender with space",
                envelope_map_with("sender", Value::Str("node a".into())),
                "invalid envelope: sender: node id contains ' '",
            ),
            (
                "payload as integer",
                envelope_map_with("payload", Value::Int(-1)),
                "malformed frame",
            ),
            (
                "deadline negative",
                envelope_map_with("deadline_unix_ms", Value::Int(-5)),
                "malformed frame",
            ),
        ];
        for (name, frame, expected_prefix) in cases {
            let error = decode_envelope(&frame, &limits()).unwrap_err();
            assert!(
                error.to_string().starts_with(expected_prefix),
                "{name}: got {error}"
            );
        }
    }

    #[test]
    fn missing_fields_are_reported() {
        let frame = rmpv_like::encode(&rmpv_like::Value::Map(vec![(
            "sender",
            rmpv_like::Value::Str("node-a".into()),
        )]));
        let error = decode_envelope(&frame, &limits()).unwrap_err();
        assert!(error.to_string().contains("missing field"), "{error}");
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        // 100k nested one-element arrays inside an unknown field.
        let mut frame = vec![0x85];
        let baseline = envelope_map_with("sender", rmpv_like::Value::Str("node-a".into()));
        frame.extend_from_slice(&baseline[1..]);
        rmp::encode::write_str(&mut frame, "deep").unwrap();
        frame.extend(std::iter::repeat_n(0x91, 100_000));
        frame.push(0xc0);
        let error = decode_envelope(&frame, &limits()).unwrap_err();
        assert!(error.to_string().contains("depth limit"), "{error}");
    }

    #[test]
    fn huge_claimed_lengths_do_not_allocate() {
        // A bin32 header claiming 4 GiB with nothing behind it.
        let frame = envelope_map_with("payload", rmpv_like::Value::Int(0));
        let mut forged = frame[..frame.len() - 1].to_vec();
        forged.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_envelope(&forged, &limits()),
            Err(CodecError::Truncated)
        ));
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Command {
        Deposit { amount: u64 },
        Close,
    }

    #[test]
    fn domain_messages_round_trip_and_unknown_variants_are_typed_errors() {
        let frame = encode_message(&Command::Deposit { amount: 5 }, &limits()).unwrap();
        assert_eq!(
            decode_message::<Command>(&frame, &limits()).unwrap(),
            Command::Deposit { amount: 5 }
        );
        let unit = encode_message(&Command::Close, &limits()).unwrap();
        assert_eq!(
            decode_message::<Command>(&unit, &limits()).unwrap(),
            Command::Close
        );
        let mut unknown = Vec::new();
        rmp::encode::write_map_len(&mut unknown, 1).unwrap();
        rmp::encode::write_str(&mut unknown, "Withdraw").unwrap();
        rmp::encode::write_map_len(&mut unknown, 0).unwrap();
        let error = decode_message::<Command>(&unknown, &limits()).unwrap_err();
        assert!(error.to_string().contains("unknown variant"), "{error}");
        let wrong_type = encode_message(&("Deposit", "five"), &limits()).unwrap();
        assert!(decode_message::<Command>(&wrong_type, &limits()).is_err());
    }
}
