//! Translation of SQLite failures into typed [`StoreError`]s.

use std::path::Path;
use std::sync::Arc;

use rusqlite::ffi::ErrorCode;

use crate::error::StoreError;

/// Maps a SQLite failure to the [`StoreError`] a caller can act on.
///
/// Takes the error by shared reference so that one failure (e.g. a failed `BEGIN` for a group of
/// requests) can answer several callers.
pub(crate) fn map_sqlite_error(
    path: &Path,
    operation: &'static str,
    error: &Arc<rusqlite::Error>,
) -> StoreError {
    let path = path.to_path_buf();
    let reason = || error.to_string();
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase { path },
        Some(ErrorCode::DiskFull) => StoreError::StorageFull { path },
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly {
            path,
            reason: reason(),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => StoreError::CannotOpen {
            path,
            reason: reason(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy { path },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            reason: reason(),
        },
        _ => StoreError::Sqlite {
            path,
            operation,
            source: Arc::clone(error),
        },
    }
}

/// Shorthand for mapping an owned error once.
pub(crate) fn sqlite_error<'path>(
    path: &'path Path,
    operation: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError + 'path {
    move |error| map_sqlite_error(path, operation, &Arc::new(error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn failure(code: i32) -> Arc<rusqlite::Error> {
        Arc::new(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None))
    }

    #[test]
    fn codes_map_to_typed_errors() {
        let path = Path::new("/data/x.db");
        let check = |code: i32, expected: &str| {
            let error = map_sqlite_error(path, "test", &failure(code));
            let debug = format!("{error:?}");
            assert!(debug.starts_with(expected), "{code}: {debug}");
        };
        check(ffi::SQLITE_NOTADB, "NotADatabase");
        check(ffi::SQLITE_FULL, "StorageFull");
        check(ffi::SQLITE_READONLY, "ReadOnly");
        check(ffi::SQLITE_CANTOPEN, "CannotOpen");
        check(ffi::SQLITE_BUSY, "Busy");
        check(ffi::SQLITE_CORRUPT, "Corrupt");
        check(ffi::SQLITE_IOERR, "Sqlite");
    }
}
