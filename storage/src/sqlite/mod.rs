//! SQLite backend: one file, WAL, a grouping writer thread, pooled readers.
//!
//! * Every write (samples, audit events, chat messages, ledger journal records,
//!   compare-and-set) goes through the store's single writer thread (`writer.rs`; one per
//!   opened store, and a node opens one), which groups concurrent requests into one
//!   `BEGIN IMMEDIATE` transaction with `synchronous=FULL` (checked when the writer starts) and
//!   acknowledges each only after the commit.
//! * Compare-and-set, the message-id check of a chat message append and the sequence check of
//!   a journal append read and write inside that immediate transaction, so they are correct
//!   across processes too.
//! * Compare-and-set reads and writes the row inside that immediate transaction, which holds
//!   SQLite's write lock, so it is correct across processes sharing the file (each waits up to
//!   `busy_timeout_ms` for the others).
//! * Reads run on pooled `query_only` connections in blocking tasks (`read_pool.rs`).
//! * Opening checks the file is new or a lanmesh database (`schema.rs`) before changing anything.

mod connection;
mod errors;
mod ledger_journal;
mod messages;
mod read_pool;
mod schema;
mod writer;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use crate::audit::{AuditEvent, AuditQuery, AuditStore, Page, PageRequest};
use crate::config::SqliteConfig;
use crate::entity_state::{
    EntityKey, EntityStateStore, StateVersion, StoredEntityState, check_version_increases,
};
use crate::error::StoreError;
use crate::presence::{PresenceEvent, PresenceSample, PresenceSampleStore, check_presence_window};
use crate::sqlite::connection::{ConnectionRole, open_connection};
use crate::sqlite::errors::sqlite_error;
use crate::sqlite::read_pool::ReadPool;
use crate::sqlite::writer::{WriteCommand, WriterHandle};

pub use crate::sqlite::writer::WriterStats;

/// The SQLite implementation of every store trait. Cloning shares the same writer and pool.
#[derive(Clone)]
pub struct SqliteStore {
    writer: WriterHandle,
    readers: Arc<ReadPool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `config.path`, checks and migrates its
    /// schema, and starts the writer thread. Blocking work runs off the async reactor.
    pub async fn open(config: &SqliteConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let config = config.clone();
        tokio::task::spawn_blocking(move || Self::open_blocking(config))
            .await
            .map_err(StoreError::BlockingTask)?
    }

    fn open_blocking(config: SqliteConfig) -> Result<Self, StoreError> {
        let path = config.path.clone();
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDirectory {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let mut connection = open_connection(&config, ConnectionRole::Writer)?;
        let schema = schema::prepare_database(&mut connection, &path)?;
        tracing::info!(
            path = %path.display(),
            found_version = schema.found_version,
            current_version = schema.current_version,
            "sqlite storage opened"
        );
        let writer = WriterHandle::start(connection, &path)?;
        Ok(Self {
            writer,
            readers: ReadPool::new(config),
        })
    }

    /// Counters of this store's writer (shared by its clones), e.g. for metrics.
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Closes the store: queued writes are committed (and acknowledged), then the connections
    /// are closed, which checkpoints the WAL when no other process has the file open. Every
    /// later call on this store or its clones fails with [`StoreError::Closed`]. Not needed for
    /// durability (acknowledged writes are already committed), only for a tidy shutdown.
    pub async fn close(&self) {
        self.readers.close();
        self.writer.close().await;
    }
}

/// Runs `PRAGMA integrity_check` on the database at `path` and returns its messages (`["ok"]`
/// for a sound database). Blocking: call it from a blocking context (tools and tests).
pub fn integrity_check(path: &Path) -> Result<Vec<String>, StoreError> {
    let connection = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error(path, "open"))?;
    let mut statement = connection
        .prepare("PRAGMA integrity_check")
        .map_err(sqlite_error(path, "integrity check"))?;
    let messages = statement
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(sqlite_error(path, "integrity check"))?;
    Ok(messages)
}

#[async_trait]
impl EntityStateStore for SqliteStore {
    async fn load(&self, key: &EntityKey) -> Result<Option<StoredEntityState>, StoreError> {
        let key = key.clone();
        self.readers
            .read(move |connection, config| {
                connection
                    .prepare_cached(
                        "SELECT epoch, version, state FROM entity_state \
                         WHERE kind = ?1 AND id = ?2",
                    )
                    .and_then(|mut statement| {
                        statement
                            .query_row(params![key.kind, key.id], |row| {
                                Ok(StoredEntityState {
                                    version: StateVersion {
                                        epoch: row.get::<_, i64>(0)?.cast_unsigned(),
                                        version: row.get::<_, i64>(1)?.cast_unsigned(),
                                    },
                                    state: row.get(2)?,
                                })
                            })
                            .optional()
                    })
                    .map_err(sqlite_error(&config.path, "load entity state"))
            })
            .await
    }

    async fn compare_and_set(
        &self,
        key: &EntityKey,
        expected_opt: Option<StateVersion>,
        new: StoredEntityState,
    ) -> Result<(), StoreError> {
        check_version_increases(key, expected_opt, new.version)?;
        self.writer
            .write(WriteCommand::CompareAndSet {
                key: key.clone(),
                expected_opt,
                new,
            })
            .await
    }
}

#[async_trait]
impl PresenceSampleStore for SqliteStore {
    async fn append(&self, samples: Vec<PresenceSample>) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        self.writer
            .write(WriteCommand::AppendSamples(samples))
            .await
    }

    async fn samples_in_window(
        &self,
        segment: &str,
        from_unix_ms: i64,
        to_unix_ms: i64,
    ) -> Result<Vec<PresenceSample>, StoreError> {
        check_presence_window(from_unix_ms, to_unix_ms)?;
        let segment = segment.to_owned();
        self.readers
            .read(move |connection, config| {
                let rows = connection
                    .prepare_cached(
                        "SELECT address, account, event, at_unix_ms FROM presence_sample \
                         WHERE segment = ?1 AND at_unix_ms >= ?2 AND at_unix_ms < ?3",
                    )
                    .and_then(|mut statement| {
                        statement
                            .query_map(params![segment, from_unix_ms, to_unix_ms], |row| {
                                Ok((
                                    row.get::<_, String>(0)?,
                                    row.get::<_, String>(1)?,
                                    row.get::<_, i8>(2)?,
                                    row.get::<_, i64>(3)?,
                                ))
                            })?
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(sqlite_error(&config.path, "read presence samples"))?;
                rows.into_iter()
                    .map(|(address, account, event_code, at_unix_ms)| {
                        Ok(PresenceSample {
                            segment: segment.clone(),
                            address: parse_address(&address)?,
                            account,
                            event: parse_event(event_code)?,
                            at_unix_ms,
                        })
                    })
                    .collect()
            })
            .await
    }
}

fn parse_address(address: &str) -> Result<IpAddr, StoreError> {
    address.parse().map_err(|_| StoreError::InvalidRow {
        table: "presence_sample",
        reason: format!("address {address:?} is not an ip address"),
    })
}

fn parse_event(event_code: i8) -> Result<PresenceEvent, StoreError> {
    PresenceEvent::from_code(event_code).ok_or_else(|| StoreError::InvalidRow {
        table: "presence_sample",
        reason: format!("unknown event code {event_code}"),
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.writer.write(WriteCommand::AppendAudit(events)).await
    }

    async fn query(
        &self,
        entity: &EntityKey,
        from_unix_ms: i64,
        to_unix_ms: i64,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let query = AuditQuery::new(from_unix_ms, to_unix_ms, &page)?;
        let entity = entity.clone();
        self.readers
            .read(move |connection, config| {
                // Without a cursor, start before every event of the window: any 16-byte id
                // sorts after the empty blob.
                let (after_at_unix_ms, after_event_id): (i64, Vec<u8>) = match query.after_opt {
                    Some(after) => (after.at_unix_ms, after.event_id.as_bytes().to_vec()),
                    None => (i64::MIN, Vec::new()),
                };
                let fetch_limit = i64::from(query.limit) + 1;
                let rows = connection
                    .prepare_cached(
                        "SELECT event_id, actor, action, detail, at_unix_ms, msg_id \
                         FROM audit_event \
                         WHERE entity_kind = ?1 AND entity_id = ?2 \
                         AND at_unix_ms >= ?3 AND at_unix_ms < ?4 \
                         AND (at_unix_ms, event_id) > (?5, ?6) \
                         ORDER BY at_unix_ms, event_id LIMIT ?7",
                    )
                    .and_then(|mut statement| {
                        statement
                            .query_map(
                                params![
                                    entity.kind,
                                    entity.id,
                                    query.from_unix_ms,
                                    query.to_unix_ms,
                                    after_at_unix_ms,
                                    after_event_id,
                                    fetch_limit,
                                ],
                                |row| {
                                    Ok((
                                        row.get::<_, Vec<u8>>(0)?,
                                        row.get::<_, String>(1)?,
                                        row.get::<_, String>(2)?,
                                        row.get::<_, Vec<u8>>(3)?,
                                        row.get::<_, i64>(4)?,
                                        row.get::<_, Option<Vec<u8>>>(5)?,
                                    ))
                                },
                            )?
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(sqlite_error(&config.path, "query audit events"))?;
                let events = rows
                    .into_iter()
                    .map(
                        |(event_id, actor, action, detail, at_unix_ms, msg_id_opt)| {
                            Ok(AuditEvent {
                                event_id: parse_uuid(&event_id)?,
                                actor,
                                entity: entity.clone(),
                                action,
                                detail,
                                at_unix_ms,
                                msg_id_opt: msg_id_opt.as_deref().map(parse_uuid).transpose()?,
                            })
                        },
                    )
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok(query.into_page(events))
            })
            .await
    }
}

fn parse_uuid(bytes: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::InvalidRow {
        table: "audit_event",
        reason: format!("id of {} bytes is not a uuid", bytes.len()),
    })
}
