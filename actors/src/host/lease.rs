//! Shard leases: which node owns each shard, and the epoch it owns it at, kept in the entity
//! state store with compare-and-set.
//!
//! Taking a lease raises its epoch; releasing keeps the epoch and clears the owner. Entities
//! persist their state under their shard's lease epoch, so once a new owner has written an
//! entity, a previous owner's save fails its compare-and-set (it is fenced).

use lanmesh_bus::{NodeId, ShardId};
use lanmesh_storage::{EntityKey, EntityStateStore, StateVersion, StoreError, StoredEntityState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use thiserror::Error;

/// Storage kind of lease records (not an entity kind: no actor ever runs for it).
const LEASE_KIND: &str = "shard-lease";

#[derive(Debug, Default, Serialize, Deserialize)]
struct LeaseRecord {
    owner_opt: Option<String>,
}

/// A shard's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The owning node; `None` when never taken or released.
    pub owner_opt: Option<String>,
    /// The stored version; `None` when never taken.
    pub version_opt: Option<StateVersion>,
}

/// A lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    /// The shard.
    pub shard: ShardId,
    /// This node's epoch of the shard; entity state is saved under it.
    pub epoch: u64,
    version: StateVersion,
}

/// Why a lease operation failed.
#[derive(Debug, Error)]
pub enum LeaseError {
    /// Another node changed the lease first.
    #[error("lease of shard {shard} changed concurrently")]
    Lost {
        /// The shard.
        shard: u16,
    },
    /// The stored lease does not decode.
    #[error("lease of shard {shard} does not decode: {reason}")]
    Corrupt {
        /// The shard.
        shard: u16,
        /// What the decoder said.
        reason: String,
    },
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(StoreError),
}

/// The leases of one cluster's shards.
#[derive(Clone)]
pub struct LeaseStore {
    store: Arc<dyn EntityStateStore>,
    cluster_name: String,
}

impl LeaseStore {
    /// Leases of cluster `cluster_name`, kept in `store`.
    pub fn new(store: Arc<dyn EntityStateStore>, cluster_name: impl Into<String>) -> Self {
        Self {
            store,
            cluster_name: cluster_name.into(),
        }
    }

    fn key(&self, shard: ShardId) -> EntityKey {
        EntityKey::new(LEASE_KIND, format!("{}.{}", self.cluster_name, shard.0))
    }

    fn storage_error(shard: ShardId, error: StoreError) -> LeaseError {
        match error {
            StoreError::Conflict { .. } => LeaseError::Lost { shard: shard.0 },
            other => LeaseError::Storage(other),
        }
    }

    async fn write(
        &self,
        shard: ShardId,
        expected_opt: Option<StateVersion>,
        version: StateVersion,
        owner_opt: Option<String>,
    ) -> Result<(), LeaseError> {
        let state = rmp_serde::to_vec_named(&LeaseRecord { owner_opt }).map_err(|error| {
            LeaseError::Corrupt {
                shard: shard.0,
                reason: error.to_string(),
            }
        })?;
        self.store
            .compare_and_set(
                &self.key(shard),
                expected_opt,
                StoredEntityState { version, state },
            )
            .await
            .map_err(|error| Self::storage_error(shard, error))
    }

    /// Reads the lease of `shard`.
    pub async fn read(&self, shard: ShardId) -> Result<Lease, LeaseError> {
        let stored_opt = self
            .store
            .load(&self.key(shard))
            .await
            .map_err(|error| Self::storage_error(shard, error))?;
        let Some(stored) = stored_opt else {
            return Ok(Lease {
                owner_opt: None,
                version_opt: None,
            });
        };
        let record: LeaseRecord =
            rmp_serde::from_slice(&stored.state).map_err(|error| LeaseError::Corrupt {
                shard: shard.0,
                reason: error.to_string(),
            })?;
        Ok(Lease {
            owner_opt: record.owner_opt,
            version_opt: Some(stored.version),
        })
    }

    /// Takes the lease of `shard` for `node`, replacing `current` (as read) with the next epoch.
    pub async fn take(
        &self,
        shard: ShardId,
        current: &Lease,
        node: &NodeId,
    ) -> Result<HeldLease, LeaseError> {
        let epoch = current
            .version_opt
            .map_or(1, |version| version.epoch.saturating_add(1));
        let version = StateVersion::new(epoch, 0);
        self.write(shard, current.version_opt, version, Some(node.to_string()))
            .await?;
        Ok(HeldLease {
            shard,
            epoch,
            version,
        })
    }

    /// Releases a held lease: same epoch, no owner.
    pub async fn release(&self, held: HeldLease) -> Result<(), LeaseError> {
        let released = StateVersion::new(held.epoch, held.version.version.saturating_add(1));
        self.write(held.shard, Some(held.version), released, None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanmesh_storage::{SqliteConfig, StorageConfig};

    async fn leases(directory: &tempfile::TempDir) -> LeaseStore {
        let config = StorageConfig {
            sqlite: SqliteConfig {
                path: directory.path().join("leases.db"),
                ..SqliteConfig::default()
            },
            scylla: None,
        };
        let stores = lanmesh_storage::open(&config).await.unwrap();
        LeaseStore::new(stores.entity_state, "test")
    }

    #[tokio::test]
    async fn each_take_raises_the_epoch_and_a_stale_reader_loses() {
        let directory = tempfile::tempdir().unwrap();
        let leases = leases(&directory).await;
        let shard = ShardId(7);
        let node_a = NodeId::new("a").unwrap();
        let node_b = NodeId::new("b").unwrap();

        let fresh = leases.read(shard).await.unwrap();
        assert_eq!(fresh.owner_opt, None);
        let held_a = leases.take(shard, &fresh, &node_a).await.unwrap();
        assert_eq!(held_a.epoch, 1);
        // A node that read the lease before A took it cannot take it too.
        assert!(matches!(
            leases.take(shard, &fresh, &node_b).await,
            Err(LeaseError::Lost { shard: 7 })
        ));

        leases.release(held_a).await.unwrap();
        let released = leases.read(shard).await.unwrap();
        assert_eq!(released.owner_opt, None);
        let held_b = leases.take(shard, &released, &node_b).await.unwrap();
        assert_eq!(held_b.epoch, 2);
        assert_eq!(
            leases.read(shard).await.unwrap().owner_opt.as_deref(),
            Some("b")
        );
        // A's old lease can no longer be released over B's.
        assert!(leases.release(held_a).await.is_err());
    }
}
