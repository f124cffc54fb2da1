//! Entity state area: the versioned snapshot each entity actor persists, and its store trait.

use std::cmp::Ordering;
use std::fmt;

use async_trait::async_trait;

use crate::error::StoreError;

/// Identifies one entity: its kind (`user`, `gateway`, `ledger`, ...) and its id within the kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    /// Entity kind, e.g. `user` or `segment`.
    pub kind: String,
    /// Entity id within its kind, e.g. an account id or a canonical CIDR.
    pub id: String,
}

impl EntityKey {
    /// Builds a key from its kind and id.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.kind, self.id)
    }
}

/// Version of a stored entity state, ordered lexicographically by `(epoch, version)`.
///
/// The epoch is the ownership epoch of the node that wrote the state (a new owner writes with a
/// higher epoch); the version counts saves within one epoch. Both are stored as the 64-bit two's
/// complement pattern of the value, and databases only ever compare them for equality, so the
/// whole `u64` range is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StateVersion {
    /// Ownership epoch of the writer.
    pub epoch: u64,
    /// Save counter within the epoch.
    pub version: u64,
}

impl StateVersion {
    /// Builds a version from its epoch and counter.
    pub const fn new(epoch: u64, version: u64) -> Self {
        Self { epoch, version }
    }
}

impl Ord for StateVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.epoch, self.version).cmp(&(other.epoch, other.version))
    }
}

impl PartialOrd for StateVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for StateVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}", self.epoch, self.version)
    }
}

/// Formats an optional version for error messages: the version, or `none`.
pub(crate) fn display_version_opt(version_opt: &Option<StateVersion>) -> String {
    match version_opt {
        Some(version) => version.to_string(),
        None => "none".to_owned(),
    }
}

/// One entity's persisted state: an opaque snapshot (the entity decides its encoding) and the
/// version it was saved with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntityState {
    /// Version this snapshot was saved with.
    pub version: StateVersion,
    /// Opaque snapshot bytes.
    pub state: Vec<u8>,
}

/// Checks the arguments of a compare-and-set before any I/O: the new version must be strictly
/// greater than the expected one (any version is greater than "no row yet").
pub(crate) fn check_version_increases(
    key: &EntityKey,
    expected_opt: Option<StateVersion>,
    new_version: StateVersion,
) -> Result<(), StoreError> {
    match expected_opt {
        Some(expected) if new_version <= expected => Err(StoreError::NonIncreasingVersion {
            key: key.clone(),
            expected,
            new: new_version,
        }),
        _ => Ok(()),
    }
}

/// Durable entity state with compare-and-set saves.
///
/// Compare-and-set is the only way entity state is written: a save succeeds only if the stored
/// version is exactly `expected_opt` (`None` = no row yet), so of two writers that loaded the
/// same version exactly one wins and the other gets [`StoreError::Conflict`] carrying the
/// current version. This is also the fence against a stale owner: a new owner saves with a
/// higher epoch, after which every save of the old owner (still expecting an older version)
/// conflicts.
#[async_trait]
pub trait EntityStateStore: Send + Sync {
    /// Loads the latest saved state of `key`, or `None` if it was never saved.
    async fn load(&self, key: &EntityKey) -> Result<Option<StoredEntityState>, StoreError>;

    /// Saves `new` if the stored version equals `expected_opt`.
    ///
    /// `new.version` must be greater than `expected_opt` (lexicographic `(epoch, version)`),
    /// otherwise [`StoreError::NonIncreasingVersion`] is returned without touching storage.
    /// If another version is stored, [`StoreError::Conflict`] is returned with the version
    /// currently stored (`None` if there is no row). `Ok(())` means the save is durable.
    async fn compare_and_set(
        &self,
        key: &EntityKey,
        expected_opt: Option<StateVersion>,
        new: StoredEntityState,
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_epoch_then_version() {
        assert!(StateVersion::new(1, 9) < StateVersion::new(2, 0));
        assert!(StateVersion::new(2, 1) > StateVersion::new(2, 0));
        assert_eq!(StateVersion::new(3, 3), StateVersion::new(3, 3));
        assert!(StateVersion::new(0, u64::MAX) < StateVersion::new(1, 0));
    }

    #[test]
    fn version_must_increase() {
        let key = EntityKey::new("user", "alice");
        let check = |expected_opt: Option<StateVersion>, new: StateVersion, ok: bool| {
            let result = check_version_increases(&key, expected_opt, new);
            assert_eq!(
                result.is_ok(),
                ok,
                "{expected_opt:?} -> {new:?}: {result:?}"
            );
        };
        check(None, StateVersion::new(0, 0), true);
        check(None, StateVersion::new(5, 1), true);
        check(Some(StateVersion::new(1, 1)), StateVersion::new(1, 2), true);
        check(Some(StateVersion::new(1, 1)), StateVersion::new(2, 0), true);
        check(
            Some(StateVersion::new(1, 1)),
            StateVersion::new(1, 1),
            false,
        );
        check(
            Some(StateVersion::new(2, 0)),
            StateVersion::new(1, 5),
            false,
        );
    }

    #[test]
    fn display_is_compact() {
        assert_eq!(EntityKey::new("user", "alice").to_string(), "user/alice");
        assert_eq!(StateVersion::new(3, 7).to_string(), "3.7");
        assert_eq!(display_version_opt(&None), "none");
    }
}
