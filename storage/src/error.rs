//! Errors of the storage crate: one enum for every store operation, one for configuration.

use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use crate::entity_state::{EntityKey, StateVersion, display_version_opt};

/// Boxed error of the ScyllaDB driver (its error types differ per operation).
pub type ScyllaDriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A configuration value that cannot be used, with the key as written in the node's config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key has a value that cannot work.
    #[error("invalid value {value} for {key}: {expected}")]
    InvalidValue {
        /// Full key, e.g. `storage.scylla.nodes`.
        key: &'static str,
        /// The offending value as text.
        value: String,
        /// What would be accepted, phrased as advice.
        expected: &'static str,
    },
}

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Compare-and-set lost: the stored version is not the expected one.
    #[error(
        "entity state conflict on {key}: expected version {}, stored version {}",
        display_version_opt(.expected_opt),
        display_version_opt(.current_opt)
    )]
    Conflict {
        /// The entity.
        key: EntityKey,
        /// The version the caller expected (`None` = no row).
        expected_opt: Option<StateVersion>,
        /// The version stored now (`None` = no row).
        current_opt: Option<StateVersion>,
    },

    /// Compare-and-set called with a new version not greater than the expected one (a bug in
    /// the caller, distinct from a lost race).
    #[error("new version {new} of {key} is not greater than expected version {expected}")]
    NonIncreasingVersion {
        /// The entity.
        key: EntityKey,
        /// The expected version.
        expected: StateVersion,
        /// The proposed new version.
        new: StateVersion,
    },

    /// A time window whose start is after its end.
    #[error("window start {from_unix_ms} is after window end {to_unix_ms}")]
    InvalidWindow {
        /// Start of the window (inclusive), Unix ms.
        from_unix_ms: i64,
        /// End of the window (exclusive), Unix ms.
        to_unix_ms: i64,
    },

    /// A presence window longer than the stores accept.
    #[error(
        "window {from_unix_ms}..{to_unix_ms} is longer than {max_days} days; query shorter windows"
    )]
    WindowTooLong {
        /// Start of the window (inclusive), Unix ms.
        from_unix_ms: i64,
        /// End of the window (exclusive), Unix ms.
        to_unix_ms: i64,
        /// Longest accepted window, in days.
        max_days: u32,
    },

    /// A page size outside `1..=max`.
    #[error("page limit {limit} is outside 1..={max}")]
    InvalidPageLimit {
        /// The requested limit.
        limit: u32,
        /// The largest accepted limit.
        max: u32,
    },

    /// A page cursor that this store did not produce.
    #[error("page cursor {cursor:?} is not valid")]
    InvalidCursor {
        /// The cursor as received.
        cursor: String,
    },

    /// A value a store refuses to write or query with (too long, empty, inconsistent),
    /// rejected before any I/O.
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// Which value, e.g. `message.text`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A chat message id that is already stored (or used earlier in the same batch) for a
    /// message with different fields. Nothing of the refused batch was stored.
    #[error("message id {message_id} was already used for a different message")]
    MessageIdReused {
        /// The reused id.
        message_id: Uuid,
    },

    /// A ledger journal sequence that is already stored with a different time or body. Nothing
    /// of the refused batch was stored.
    #[error(
        "journal sequence {sequence} of ledger {ledger_id:?} is already stored with a different \
         time or body"
    )]
    JournalConflict {
        /// The ledger.
        ledger_id: String,
        /// The sequence stored with other content.
        sequence: u64,
    },

    /// The configuration cannot be used.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),

    /// The data directory could not be created.
    #[error("cannot create data directory {path}")]
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The file exists but is not a SQLite database (or is encrypted or corrupt at the header).
    #[error(
        "{path} is not a SQLite database; point storage.sqlite.path at a lanmesh database or at a \
         new file"
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },

    /// The file is a SQLite database that belongs to another application.
    #[error(
        "{path} is a SQLite database of another application (application_id {application_id:#x}); \
         refusing to modify it"
    )]
    ForeignDatabase {
        /// The file.
        path: PathBuf,
        /// The `application_id` found in the file header.
        application_id: i32,
    },

    /// The database was written by a newer lanmesh with a schema this code does not know.
    #[error(
        "{path} has schema version {found}, newer than the {supported} this lanmesh supports; \
         upgrade lanmesh"
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// Schema version found in the file.
        found: i64,
        /// Newest schema version this code knows.
        supported: i64,
    },

    /// The database or its directory cannot be opened (missing permissions, read-only directory,
    /// missing parent, ...).
    #[error("cannot open database {path}: {reason}")]
    CannotOpen {
        /// The file.
        path: PathBuf,
        /// SQLite's explanation.
        reason: String,
    },

    /// The database is read-only (file or directory permissions, read-only file system).
    #[error("database {path} is read-only: {reason}")]
    ReadOnly {
        /// The file.
        path: PathBuf,
        /// SQLite's explanation.
        reason: String,
    },

    /// The disk, or the configured size cap of the database, is full. Nothing of the failed
    /// write was stored; earlier acknowledged writes are intact.
    #[error("database {path} is full (disk full or storage.sqlite.max_size_bytes reached)")]
    StorageFull {
        /// The file.
        path: PathBuf,
    },

    /// Another process kept the database locked longer than the busy timeout.
    #[error("database {path} stayed locked longer than storage.sqlite.busy_timeout_ms")]
    Busy {
        /// The file.
        path: PathBuf,
    },

    /// SQLite detected corruption in the file.
    #[error("database {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's explanation.
        reason: String,
    },

    /// Any other SQLite failure.
    #[error("sqlite {operation} failed on {path}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What the store was doing.
        operation: &'static str,
        /// The SQLite error (shared, as one failure can answer several grouped requests).
        #[source]
        source: Arc<rusqlite::Error>,
    },

    /// A stored row could not be decoded (written by something else, or damaged).
    #[error("stored row in {table} is invalid: {reason}")]
    InvalidRow {
        /// The table.
        table: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The SQLite store was closed (or its writer thread stopped).
    #[error("sqlite store for {path} is closed")]
    Closed {
        /// The file.
        path: PathBuf,
    },

    /// A blocking task running SQLite work was cancelled or panicked.
    #[error("blocking storage task failed")]
    BlockingTask(#[source] tokio::task::JoinError),

    /// Connecting to ScyllaDB failed.
    #[error("cannot connect to scylladb nodes {nodes}")]
    ScyllaConnect {
        /// The contact points, comma-separated.
        nodes: String,
        /// The driver's error.
        #[source]
        source: ScyllaDriverError,
    },

    /// A ScyllaDB statement or schema change failed.
    #[error("scylladb {operation} failed")]
    Scylla {
        /// What the store was doing.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: ScyllaDriverError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let errors = [
            StoreError::Conflict {
                key: EntityKey::new("user", "alice"),
                expected_opt: Some(StateVersion::new(1, 2)),
                current_opt: None,
            },
            StoreError::NotADatabase {
                path: PathBuf::from("/tmp/x.db"),
            },
            StoreError::InvalidConfig(ConfigError::InvalidValue {
                key: "storage.scylla.nodes",
                value: "[]".to_owned(),
                expected: "a list of at least one host:port",
            }),
            StoreError::InvalidValue {
                field: "message.text",
                reason: "text has 5000 bytes, more than the 4096 allowed".to_owned(),
            },
            StoreError::MessageIdReused {
                message_id: Uuid::nil(),
            },
            StoreError::JournalConflict {
                ledger_id: "campaign-1/gateway-2".to_owned(),
                sequence: 7,
            },
        ];
        for error in errors {
            let message = error.to_string();
            assert!(!message.ends_with('.'), "{message}");
            let first = message.chars().next().unwrap();
            assert!(!first.is_uppercase(), "{message}");
        }
        let conflict = StoreError::Conflict {
            key: EntityKey::new("user", "alice"),
            expected_opt: Some(StateVersion::new(1, 2)),
            current_opt: None,
        };
        assert_eq!(
            conflict.to_string(),
            "entity state conflict on user/alice: expected version 1.2, stored version none"
        );
        assert_eq!(
            StoreError::MessageIdReused {
                message_id: Uuid::nil()
            }
            .to_string(),
            "message id 00000000-0000-0000-0000-000000000000 was already used for a different \
             message"
        );
        assert_eq!(
            StoreError::JournalConflict {
                ledger_id: "campaign-1/gateway-2".to_owned(),
                sequence: 7,
            }
            .to_string(),
            "journal sequence 7 of ledger \"campaign-1/gateway-2\" is already stored with a \
             different time or body"
        );
    }
}
