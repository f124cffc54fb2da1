//! Opening SQLite connections with the pragmas each role needs.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::config::SqliteConfig;
use crate::error::StoreError;
use crate::sqlite::errors::sqlite_error;

/// What a connection is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionRole {
    /// The single writer of this process: `synchronous=FULL` (a commit is on disk before it is
    /// acknowledged) and the configured size cap.
    Writer,
    /// A pooled reader: `query_only`, so it can never write by mistake.
    Reader,
}

/// Opens a connection to `config.path` (creating the file for the writer) and applies the
/// role's pragmas. Does not touch the schema.
pub(crate) fn open_connection(
    config: &SqliteConfig,
    role: ConnectionRole,
) -> Result<Connection, StoreError> {
    let path: &Path = &config.path;
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_EXRESCODE;
    if role == ConnectionRole::Writer {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let connection =
        Connection::open_with_flags(path, flags).map_err(sqlite_error(path, "open"))?;
    connection
        .busy_timeout(Duration::from_millis(u64::from(config.busy_timeout_ms)))
        .map_err(sqlite_error(path, "set busy_timeout"))?;
    connection.set_prepared_statement_cache_capacity(32);
    match role {
        ConnectionRole::Writer => {
            connection
                .pragma_update(None, "synchronous", "FULL")
                .map_err(sqlite_error(path, "set synchronous"))?;
            if let Some(max_size_bytes) = config.max_size_bytes {
                let page_size: i64 = connection
                    .pragma_query_value(None, "page_size", |row| row.get(0))
                    .map_err(sqlite_error(path, "read page_size"))?;
                let max_page_count =
                    i64::try_from(max_size_bytes).unwrap_or(i64::MAX) / page_size.max(1);
                connection
                    .pragma_update(None, "max_page_count", max_page_count)
                    .map_err(sqlite_error(path, "set max_page_count"))?;
            }
        }
        ConnectionRole::Reader => {
            connection
                .pragma_update(None, "query_only", true)
                .map_err(sqlite_error(path, "set query_only"))?;
        }
    }
    Ok(connection)
}
