//! The bundle of stores handed to the node and the entity host, and `open`, which picks the
//! backend from the configuration.

use std::fmt;
use std::sync::Arc;

use crate::audit::AuditStore;
use crate::config::{BackendKind, StorageConfig};
use crate::entity_state::EntityStateStore;
use crate::error::StoreError;
use crate::ledger_journal::LedgerJournalStore;
use crate::messages::MessageStore;
use crate::presence::PresenceSampleStore;
use crate::scylladb::ScyllaStore;
use crate::sqlite::SqliteStore;

/// Every store area, backed by one backend. Cloning shares the backend.
#[derive(Clone)]
pub struct Stores {
    /// Which backend serves the stores.
    pub backend: BackendKind,
    /// Entity snapshots with compare-and-set saves.
    pub entity_state: Arc<dyn EntityStateStore>,
    /// Presence samples and segment window figures.
    pub presence: Arc<dyn PresenceSampleStore>,
    /// The audit trail.
    pub audit: Arc<dyn AuditStore>,
    /// One-to-one chat messages.
    pub messages: Arc<dyn MessageStore>,
    /// The journals of quota ledgers.
    pub ledger_journal: Arc<dyn LedgerJournalStore>,
}

impl Stores {
    /// Bundles one backend implementing every area.
    pub fn from_backend<Backend>(backend_kind: BackendKind, backend: Arc<Backend>) -> Self
    where
        Backend: EntityStateStore
            + PresenceSampleStore
            + AuditStore
            + MessageStore
            + LedgerJournalStore
            + 'static,
    {
        Self {
            backend: backend_kind,
            entity_state: Arc::clone(&backend) as Arc<dyn EntityStateStore>,
            presence: Arc::clone(&backend) as Arc<dyn PresenceSampleStore>,
            audit: Arc::clone(&backend) as Arc<dyn AuditStore>,
            messages: Arc::clone(&backend) as Arc<dyn MessageStore>,
            ledger_journal: backend as Arc<dyn LedgerJournalStore>,
        }
    }
}

impl fmt::Debug for Stores {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Stores")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Validates `config` and opens the backend it selects: ScyllaDB when `storage.scylla` is set,
/// the SQLite file at `storage.sqlite.path` otherwise.
pub async fn open(config: &StorageConfig) -> Result<Stores, StoreError> {
    match (config.validate()?, &config.scylla) {
        (BackendKind::Scylla, Some(scylla_config)) => {
            let store = ScyllaStore::open(scylla_config).await?;
            Ok(Stores::from_backend(BackendKind::Scylla, Arc::new(store)))
        }
        _ => {
            let store = SqliteStore::open(&config.sqlite).await?;
            Ok(Stores::from_backend(BackendKind::Sqlite, Arc::new(store)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_shareable_across_tasks<T: Send + Sync + 'static>() {}

    #[test]
    fn handles_and_errors_cross_tasks_and_threads() {
        assert_shareable_across_tasks::<Stores>();
        assert_shareable_across_tasks::<SqliteStore>();
        assert_shareable_across_tasks::<ScyllaStore>();
        assert_shareable_across_tasks::<StoreError>();
    }
}
