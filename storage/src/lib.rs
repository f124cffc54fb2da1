//! Durable state of lanmesh: store traits by area, an embedded SQLite backend (the default) and
//! a ScyllaDB backend (clusters), which behave the same.
//!
//! # Areas
//!
//! Domain code sees only traits, one per area, each object-safe and `Send + Sync`:
//!
//! * [`EntityStateStore`]: the snapshot of each entity actor, versioned by `(epoch, version)`,
//!   written only by compare-and-set.
//! * [`PresenceSampleStore`]: high-volume presence samples of segments and window figures
//!   (logins, distinct accounts, concurrent peak, online time), computed by the pure
//!   [`presence_window`] module for both backends.
//! * [`AuditStore`]: the audit trail, one immutable event per state change, queried by entity
//!   and time range with stable keyset paging.
//! * [`MessageStore`]: one-to-one chat messages, idempotent by client-chosen message id (an id
//!   reused for a different message is refused), read by conversation newest first with stable
//!   keyset paging.
//! * [`LedgerJournalStore`]: the append-only journal of each quota ledger, opaque records
//!   numbered by sequence per ledger, idempotent for retries (a sequence reused for a different
//!   record is refused), replayed in sequence order.
//!
//! [`open`] reads a [`StorageConfig`] and returns [`Stores`], one `Arc<dyn ...>` per area.
//!
//! # Backends
//!
//! * [`sqlite::SqliteStore`] (`storage.sqlite.path`, default `./data/lanmesh.db`): one file in
//!   WAL mode; a writer thread per process groups concurrent writes into one transaction;
//!   readers run on a small pool of blocking connections. Several processes may share the file
//!   (compare-and-set runs inside `BEGIN IMMEDIATE`, so it is correct across processes).
//!   Embedded migrations with a `schema_version` table; a file that is not a lanmesh database
//!   (`PRAGMA application_id`) or has a newer schema is refused with a typed error.
//! * [`scylladb::ScyllaStore`] (`storage.scylla.nodes`): one shared session, prepared
//!   statements, token-aware routing, single-partition batches, paged reads, lightweight
//!   transactions for compare-and-set, for claiming chat message ids and for appending to ledger
//!   journals. Schema in `ops/scylla/schema.cql`.
//!
//! Both pass one conformance suite (`storage/tests/it/conformance.rs`).
//!
//! # Invariants
//!
//! * Compare-and-set is the only way entity state is written, and a save never overwrites a
//!   version other than the one the writer expected: of two racing writers exactly one wins, and
//!   a stale owner (older epoch) can never overwrite a newer owner's state.
//! * An acknowledged write is committed: `Ok` from `append` or `compare_and_set` is returned
//!   only after the data is durable (SQLite: after `COMMIT` with `synchronous=FULL`; ScyllaDB:
//!   after the write reached the requested consistency).
//! * Appends are idempotent for retries: a repeated audit event id is stored once, a repeated
//!   presence sample does not change any figure, a repeated chat message (same id, same
//!   fields) or journal record (same ledger, sequence, time and body) is stored once.
//! * A chat message id names one message forever: a batch reusing a stored id for different
//!   fields fails as a whole with `MessageIdReused`.
//! * A journal sequence names one entry forever: a batch storing a different time or body under
//!   a ledger's stored sequence fails with `JournalConflict`, and nothing of it is written
//!   (on ScyllaDB, barring two concurrent writers of one ledger; see [`LedgerJournalStore`]).
//! * No blocking I/O runs on the async reactor: SQLite work runs on its writer thread or in
//!   `spawn_blocking`.
//! * Opening never modifies a file that is not a lanmesh database, nor one with a newer schema.

pub mod audit;
pub mod config;
pub mod entity_state;
pub mod error;
pub mod ledger_journal;
pub mod messages;
pub mod presence;
pub mod presence_window;
pub mod scylladb;
pub mod sqlite;
mod stores;

pub use crate::audit::{AuditEvent, AuditStore, MAX_PAGE_LIMIT, Page, PageCursor, PageRequest};
pub use crate::config::{BackendKind, ScyllaConfig, SqliteConfig, StorageConfig};
pub use crate::entity_state::{EntityKey, EntityStateStore, StateVersion, StoredEntityState};
pub use crate::error::{ConfigError, StoreError};
pub use crate::ledger_journal::{
    JournalRecord, LedgerJournalStore, MAX_JOURNAL_BATCH_RECORDS, MAX_JOURNAL_BODY_BYTES,
    MAX_JOURNAL_READ_LIMIT, MAX_LEDGER_ID_BYTES,
};
pub use crate::messages::{ChatMessage, MAX_MESSAGE_TEXT_BYTES, MessageStore};
pub use crate::presence::{
    MAX_PRESENCE_WINDOW_DAYS, PresenceEvent, PresenceSample, PresenceSampleStore,
    SegmentWindowFigures,
};
pub use crate::stores::{Stores, open};
