//! SQLite schema: embedded migrations, the `schema_version` table, and the checks that refuse
//! foreign or too-new database files.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::StoreError;
use crate::sqlite::errors::sqlite_error;

/// `PRAGMA application_id` of lanmesh databases: ASCII "LMSH".
pub(crate) const APPLICATION_ID: i32 = 0x4c4d_5348;

/// One schema step, applied once, in order, inside the opening transaction.
struct Migration {
    version: i64,
    sql: &'static str,
}

/// Every migration this code knows; the last one's version is [`SCHEMA_VERSION`].
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: "
        CREATE TABLE entity_state (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            version INTEGER NOT NULL,
            state BLOB NOT NULL,
            PRIMARY KEY (kind, id)
        ) WITHOUT ROWID;

        CREATE TABLE presence_sample (
            segment TEXT NOT NULL,
            at_unix_ms INTEGER NOT NULL,
            address TEXT NOT NULL,
            account TEXT NOT NULL,
            event INTEGER NOT NULL
        );
        CREATE INDEX presence_sample_by_segment_time ON presence_sample (segment, at_unix_ms);

        CREATE TABLE audit_event (
            event_id BLOB NOT NULL PRIMARY KEY,
            entity_kind TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            at_unix_ms INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail BLOB NOT NULL,
            msg_id BLOB
        ) WITHOUT ROWID;
        CREATE INDEX audit_event_by_entity_time
            ON audit_event (entity_kind, entity_id, at_unix_ms, event_id);
    ",
    },
    // Chat messages: keyed by the client-chosen id (16 UUID bytes, so ids of the same
    // millisecond sort bytewise, as on ScyllaDB); `conversation` is the sorted account pair
    // joined by U+001F (`messages::conversation_key`).
    Migration {
        version: 2,
        sql: "
        CREATE TABLE chat_message (
            message_id BLOB NOT NULL PRIMARY KEY,
            conversation TEXT NOT NULL,
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            text TEXT NOT NULL,
            sent_at_unix_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX chat_message_by_conversation_time
            ON chat_message (conversation, sent_at_unix_ms DESC, message_id DESC);
    ",
    },
    // Ledger journals: append-only, one row per (ledger, sequence), never updated or deleted.
    // The primary key clusters each ledger's entries in sequence order, so a replay and the
    // last sequence are range reads of the key. Bodies are opaque MessagePack, usually small
    // (at most `ledger_journal::MAX_JOURNAL_BODY_BYTES`).
    Migration {
        version: 3,
        sql: "
        CREATE TABLE ledger_journal (
            ledger_id TEXT NOT NULL,
            sequence INTEGER NOT NULL CHECK (sequence > 0),
            at_unix_ms INTEGER NOT NULL,
            body BLOB NOT NULL,
            PRIMARY KEY (ledger_id, sequence)
        ) WITHOUT ROWID;
    ",
    },
];

/// Newest schema version this code knows.
pub(crate) const SCHEMA_VERSION: i64 = 3;

/// What [`prepare_database`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SchemaReport {
    /// Schema version found when opening (0 for a new file).
    pub(crate) found_version: i64,
    /// Schema version after migrating.
    pub(crate) current_version: i64,
}

/// Checks that `connection` is a new or lanmesh database, migrates it to [`SCHEMA_VERSION`] in
/// one `BEGIN IMMEDIATE` transaction (safe when several processes open the file at once), then
/// switches it to WAL. A foreign, corrupt or too-new file is left untouched.
pub(crate) fn prepare_database(
    connection: &mut Connection,
    path: &Path,
) -> Result<SchemaReport, StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error(path, "begin schema check"))?;

    let application_id: i32 = transaction
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(sqlite_error(path, "read application_id"))?;
    let n_schema_objects: i64 = transaction
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(sqlite_error(path, "read schema"))?;

    let found_version = if application_id == APPLICATION_ID {
        let has_version_table = transaction
            .query_row(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map_err(sqlite_error(path, "read schema"))?
            .is_some();
        if !has_version_table {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: "lanmesh application id but no schema_version table".to_owned(),
            });
        }
        transaction
            .query_row("SELECT max(version) FROM schema_version", [], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .map_err(sqlite_error(path, "read schema version"))?
            .unwrap_or(0)
    } else if application_id == 0 && n_schema_objects == 0 {
        transaction
            .pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sqlite_error(path, "set application_id"))?;
        transaction
            .execute_batch(
                "CREATE TABLE schema_version (
                    version INTEGER NOT NULL PRIMARY KEY,
                    applied_at_unix_ms INTEGER NOT NULL
                )",
            )
            .map_err(sqlite_error(path, "create schema_version"))?;
        0
    } else {
        return Err(StoreError::ForeignDatabase {
            path: path.to_path_buf(),
            application_id,
        });
    };

    if found_version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: found_version,
            supported: SCHEMA_VERSION,
        });
    }

    let now_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    for migration in MIGRATIONS
        .iter()
        .filter(|migration| migration.version > found_version)
    {
        transaction
            .execute_batch(migration.sql)
            .map_err(sqlite_error(path, "apply migration"))?;
        transaction
            .execute(
                "INSERT INTO schema_version (version, applied_at_unix_ms) VALUES (?1, ?2)",
                params![migration.version, now_unix_ms],
            )
            .map_err(sqlite_error(path, "record migration"))?;
    }
    transaction
        .commit()
        .map_err(sqlite_error(path, "commit schema"))?;

    let journal_mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(sqlite_error(path, "enable wal"))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::CannotOpen {
            path: path.to_path_buf(),
            reason: format!("cannot switch to WAL journal mode (still {journal_mode})"),
        });
    }

    Ok(SchemaReport {
        found_version,
        current_version: SCHEMA_VERSION,
    })
}

/// Builds, on a new database, the schema the code of schema `version` created: the
/// application id, `schema_version` and the migrations up to `version`, as that code would
/// have applied them (before WAL, which does not change the schema). For migration tests.
#[cfg(test)]
pub(crate) fn create_database_at_version(connection: &Connection, version: i64) {
    connection
        .pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap();
    connection
        .execute_batch(
            "CREATE TABLE schema_version (
                version INTEGER NOT NULL PRIMARY KEY,
                applied_at_unix_ms INTEGER NOT NULL
            )",
        )
        .unwrap();
    for migration in MIGRATIONS
        .iter()
        .filter(|migration| migration.version <= version)
    {
        connection.execute_batch(migration.sql).unwrap();
        connection
            .execute(
                "INSERT INTO schema_version (version, applied_at_unix_ms) VALUES (?1, 0)",
                params![migration.version],
            )
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_end_at_schema_version() {
        let versions: Vec<i64> = MIGRATIONS
            .iter()
            .map(|migration| migration.version)
            .collect();
        let expected: Vec<i64> = (1..=SCHEMA_VERSION).collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn new_database_is_migrated_once() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("a.db");
        let mut connection = Connection::open(&path).unwrap();
        let first = prepare_database(&mut connection, &path).unwrap();
        assert_eq!(first.found_version, 0);
        assert_eq!(first.current_version, SCHEMA_VERSION);
        let second = prepare_database(&mut connection, &path).unwrap();
        assert_eq!(second.found_version, SCHEMA_VERSION);
        let n_rows: i64 = connection
            .query_row("SELECT count(*) FROM schema_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(n_rows, SCHEMA_VERSION);
    }

    #[test]
    fn version_1_database_is_migrated_keeping_its_rows() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("v1.db");
        let mut connection = Connection::open(&path).unwrap();
        create_database_at_version(&connection, 1);
        connection
            .execute(
                "INSERT INTO entity_state (kind, id, epoch, version, state) \
                 VALUES ('user', 'alice', 1, 1, x'00')",
                [],
            )
            .unwrap();

        let report = prepare_database(&mut connection, &path).unwrap();
        assert_eq!(report.found_version, 1);
        assert_eq!(report.current_version, SCHEMA_VERSION);
        let n_states: i64 = connection
            .query_row("SELECT count(*) FROM entity_state", [], |row| row.get(0))
            .unwrap();
        assert_eq!(n_states, 1);
        let n_messages: i64 = connection
            .query_row("SELECT count(*) FROM chat_message", [], |row| row.get(0))
            .unwrap();
        assert_eq!(n_messages, 0);
    }

    #[test]
    fn version_2_database_is_migrated_keeping_its_rows() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("v2.db");
        let mut connection = Connection::open(&path).unwrap();
        create_database_at_version(&connection, 2);
        connection
            .execute(
                "INSERT INTO chat_message \
                 (message_id, conversation, sender, recipient, text, sent_at_unix_ms) \
                 VALUES (x'00000000000000000000000000000001', 'a\u{1f}b', 'a', 'b', 'hi', 1)",
                [],
            )
            .unwrap();
        let has_journal = |connection: &Connection| {
            connection
                .query_row(
                    "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'ledger_journal'",
                    [],
                    |_| Ok(()),
                )
                .optional()
                .unwrap()
                .is_some()
        };
        assert!(!has_journal(&connection));

        let report = prepare_database(&mut connection, &path).unwrap();
        assert_eq!(report.found_version, 2);
        assert_eq!(report.current_version, SCHEMA_VERSION);
        assert!(has_journal(&connection));
        let versions: Vec<i64> = connection
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
        let n_messages: i64 = connection
            .query_row("SELECT count(*) FROM chat_message", [], |row| row.get(0))
            .unwrap();
        assert_eq!(n_messages, 1);
        let n_entries: i64 = connection
            .query_row("SELECT count(*) FROM ledger_journal", [], |row| row.get(0))
            .unwrap();
        assert_eq!(n_entries, 0);
        // The journal table refuses what the store never writes.
        let error = connection
            .execute(
                "INSERT INTO ledger_journal (ledger_id, sequence, at_unix_ms, body) \
                 VALUES ('l', 0, 0, x'')",
                [],
            )
            .unwrap_err();
        assert!(error.to_string().contains("CHECK"), "{error}");
    }
}
