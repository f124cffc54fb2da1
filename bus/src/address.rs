//! Names on the bus: entity addresses, node ids and shard ids, with their validation rules.
//!
//! Every name that crosses the wire is checked on decode, so code behind the codec can rely on
//! these invariants (non-empty, bounded length, printable) without re-checking.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// Longest accepted entity kind, in bytes.
pub const MAX_KIND_BYTES: usize = 32;
/// Longest accepted entity id, in bytes.
pub const MAX_ENTITY_ID_BYTES: usize = 256;
/// Longest accepted node id, in bytes (it is used as an AMQP routing key and queue name part).
pub const MAX_NODE_ID_BYTES: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty {
        /// Which kind of name.
        what: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{what} is {n_bytes} bytes long, at most {max_bytes} are allowed")]
    TooLong {
        /// Which kind of name.
        what: &'static str,
        /// Its length.
        n_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The name holds a character outside its alphabet.
    #[error("{what} contains {character:?}, allowed: {allowed}")]
    BadCharacter {
        /// Which kind of name.
        what: &'static str,
        /// The first offending character.
        character: char,
        /// A description of the allowed alphabet.
        allowed: &'static str,
    },
}

fn check_length(what: &'static str, value: &str, max_bytes: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > max_bytes {
        return Err(NameError::TooLong {
            what,
            n_bytes: value.len(),
            max_bytes,
        });
    }
    Ok(())
}

fn check_alphabet(
    what: &'static str,
    value: &str,
    allowed: &'static str,
    is_allowed: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    match value.chars().find(|character| !is_allowed(*character)) {
        Some(character) => Err(NameError::BadCharacter {
            what,
            character,
            allowed,
        }),
        None => Ok(()),
    }
}

/// Checks an entity kind: lowercase ASCII letters, digits, `_` and `-`.
pub fn validate_kind(kind: &str) -> Result<(), NameError> {
    check_length("entity kind", kind, MAX_KIND_BYTES)?;
    check_alphabet("entity kind", kind, "a-z 0-9 _ -", |character| {
        character.is_ascii_lowercase()
            || character.is_ascii_digit()
            || character == '_'
            || character == '-'
    })
}

/// Checks an entity id: any UTF-8 without control characters.
pub fn validate_entity_id(id: &str) -> Result<(), NameError> {
    check_length("entity id", id, MAX_ENTITY_ID_BYTES)?;
    check_alphabet("entity id", id, "printable characters", |character| {
        !character.is_control()
    })
}

/// Checks a node id: ASCII letters, digits, `.`, `_` and `-`.
pub fn validate_node_id(id: &str) -> Result<(), NameError> {
    check_length("node id", id, MAX_NODE_ID_BYTES)?;
    check_alphabet("node id", id, "A-Z a-z 0-9 . _ -", |character| {
        character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-')
    })
}

/// The address of one entity: its kind (e.g. `user`) and its id within that kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityAddress {
    /// The entity kind; see [`validate_kind`].
    pub kind: String,
    /// The id within the kind; see [`validate_entity_id`].
    pub id: String,
}

impl EntityAddress {
    /// Builds a checked address.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Result<Self, NameError> {
        let address = Self {
            kind: kind.into(),
            id: id.into(),
        };
        address.validate()?;
        Ok(address)
    }

    /// Checks both parts.
    pub fn validate(&self) -> Result<(), NameError> {
        validate_kind(&self.kind)?;
        validate_entity_id(&self.id)
    }
}

impl fmt::Display for EntityAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.kind, self.id)
    }
}

/// The id of one node process in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Builds a checked node id.
    pub fn new(id: impl Into<String>) -> Result<Self, NameError> {
        let id = id.into();
        validate_node_id(&id)?;
        Ok(Self(id))
    }

    /// A fresh random node id, `node-` followed by 12 hex digits.
    pub fn generate() -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("node-{}", random.get(..12).unwrap_or(&random)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// One shard of the entity space; see [`crate::shard_map::ShardMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u16);

impl fmt::Display for ShardId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(result: Result<(), NameError>, expected: Result<(), &str>) {
        match (result, expected) {
            (Ok(()), Ok(())) => {}
            (Err(error), Err(expected_message)) => assert_eq!(error.to_string(), expected_message),
            (result, expected) => panic!("got {result:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn kinds() {
        check(validate_kind("user"), Ok(()));
        check(validate_kind("quota-ledger_2"), Ok(()));
        check(validate_kind(""), Err("entity kind is empty"));
        check(
            validate_kind("User"),
            Err("entity kind contains 'U', allowed: a-z 0-9 _ -"),
        );
        check(
            validate_kind(&"k".repeat(33)),
            Err("entity kind is 33 bytes long, at most 32 are allowed"),
        );
    }

    #[test]
    fn entity_ids() {
        check(validate_entity_id("10.0.0.0/24"), Ok(()));
        check(validate_entity_id("用户-7"), Ok(()));
        check(
            validate_entity_id("a\nb"),
            Err("entity id contains '\\n', allowed: printable characters"),
        );
        check(
            validate_entity_id(&"x".repeat(257)),
            Err("entity id is 257 bytes long, at most 256 are allowed"),
        );
    }

    #[test]
    fn node_ids() {
        check(validate_node_id("node-1.eu_west"), Ok(()));
        check(
            validate_node_id("node 1"),
            Err("node id contains ' ', allowed: A-Z a-z 0-9 . _ -"),
        );
        let generated = NodeId::generate();
        assert!(validate_node_id(generated.as_str()).is_ok());
        assert_eq!(generated.as_str().len(), "node-".len() + 12);
        assert_ne!(generated, NodeId::generate());
    }
}
