//! Ledger journals on SQLite: appends checked and written in the writer thread's transaction
//! (committed with `synchronous=FULL`), replays and last sequences read from the pool on the
//! `ledger_journal` primary key.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::StoreError;
use crate::ledger_journal::{
    JournalReadQuery, JournalRecord, LedgerJournalStore, check_append, check_ledger_id,
    same_or_conflict, sequence_from_stored, stored_sequence,
};
use crate::sqlite::SqliteStore;
use crate::sqlite::errors::sqlite_error;
use crate::sqlite::writer::WriteCommand;

/// The table, as named in errors about its rows.
const TABLE: &str = "ledger_journal";

/// SQL of one replay page.
const READ_SQL: &str = "SELECT sequence, at_unix_ms, body FROM ledger_journal \
     WHERE ledger_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3";

/// SQL of the last sequence of a ledger (no row for an empty journal): one step of a backward
/// walk of the primary key.
const LAST_SEQUENCE_SQL: &str = "SELECT sequence FROM ledger_journal WHERE ledger_id = ?1 \
     ORDER BY sequence DESC LIMIT 1";

/// Inserts validated records of one ledger inside the writer's open transaction: first checks
/// every sequence against the stored records, so a conflict refuses the batch before anything of
/// it is written, then inserts the new ones (a stored identical record is left as it is).
///
/// The outer error is a SQLite failure (the transaction must be abandoned); the inner result is
/// the append's own outcome.
pub(crate) fn insert_journal_records(
    connection: &Connection,
    ledger_id: &str,
    records: &[JournalRecord],
) -> Result<Result<(), StoreError>, rusqlite::Error> {
    let mut stored_sequences = Vec::with_capacity(records.len());
    for record in records {
        match stored_sequence(record.sequence) {
            Ok(sequence) => stored_sequences.push(sequence),
            Err(error) => return Ok(Err(error)),
        }
    }
    let mut select = connection.prepare_cached(
        "SELECT at_unix_ms, body FROM ledger_journal WHERE ledger_id = ?1 AND sequence = ?2",
    )?;
    for (record, sequence) in records.iter().zip(&stored_sequences) {
        let stored_opt = select
            .query_row(params![ledger_id, sequence], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .optional()?;
        if let Some((stored_at_unix_ms, stored_body)) = stored_opt
            && let Err(conflict) =
                same_or_conflict(ledger_id, record, stored_at_unix_ms, &stored_body)
        {
            return Ok(Err(conflict));
        }
    }
    let mut insert = connection.prepare_cached(
        "INSERT INTO ledger_journal (ledger_id, sequence, at_unix_ms, body) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (ledger_id, sequence) DO NOTHING",
    )?;
    for (record, sequence) in records.iter().zip(&stored_sequences) {
        insert.execute(params![ledger_id, sequence, record.at_unix_ms, record.body])?;
    }
    Ok(Ok(()))
}

#[async_trait]
impl LedgerJournalStore for SqliteStore {
    async fn append(&self, ledger_id: &str, records: &[JournalRecord]) -> Result<(), StoreError> {
        check_append(ledger_id, records)?;
        if records.is_empty() {
            return Ok(());
        }
        self.writer
            .write(WriteCommand::AppendJournal {
                ledger_id: ledger_id.to_owned(),
                records: records.to_vec(),
            })
            .await
    }

    async fn read(
        &self,
        ledger_id: &str,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<JournalRecord>, StoreError> {
        let query = JournalReadQuery::new(ledger_id, after_sequence, limit)?;
        let Some(after_stored_sequence) = query.after_stored_sequence_opt else {
            return Ok(Vec::new());
        };
        let ledger_id = ledger_id.to_owned();
        self.readers
            .read(move |connection, config| {
                let rows = connection
                    .prepare_cached(READ_SQL)
                    .and_then(|mut statement| {
                        statement
                            .query_map(
                                params![ledger_id, after_stored_sequence, i64::from(query.limit)],
                                |row| {
                                    Ok((
                                        row.get::<_, i64>(0)?,
                                        row.get::<_, i64>(1)?,
                                        row.get::<_, Vec<u8>>(2)?,
                                    ))
                                },
                            )?
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(sqlite_error(&config.path, "read ledger journal"))?;
                rows.into_iter()
                    .map(|(sequence, at_unix_ms, body)| {
                        Ok(JournalRecord {
                            sequence: sequence_from_stored(sequence, TABLE)?,
                            at_unix_ms,
                            body,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn last_sequence(&self, ledger_id: &str) -> Result<u64, StoreError> {
        check_ledger_id(ledger_id)?;
        let ledger_id = ledger_id.to_owned();
        self.readers
            .read(move |connection, config| {
                let last_opt = connection
                    .prepare_cached(LAST_SEQUENCE_SQL)
                    .and_then(|mut statement| {
                        statement
                            .query_row(params![ledger_id], |row| row.get::<_, i64>(0))
                            .optional()
                    })
                    .map_err(sqlite_error(&config.path, "read last journal sequence"))?;
                last_opt.map_or(Ok(0), |last| sequence_from_stored(last, TABLE))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::SqliteConfig;
    use crate::messages::MessageStore;
    use crate::sqlite::schema::{create_database_at_version, prepare_database};

    fn query_plan(path: &Path, sql: &str, values: impl rusqlite::Params) -> String {
        let mut connection = Connection::open(path).unwrap();
        prepare_database(&mut connection, path).unwrap();
        let plan: Vec<String> = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(values, |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        plan.join("\n")
    }

    #[test]
    fn replays_and_last_sequences_read_the_primary_key_in_order() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("plan.db");
        for (sql, plan) in [
            (
                READ_SQL,
                query_plan(&path, READ_SQL, params!["ledger", 0, 10]),
            ),
            (
                LAST_SEQUENCE_SQL,
                query_plan(&path, LAST_SEQUENCE_SQL, params!["ledger"]),
            ),
        ] {
            assert!(plan.contains("USING PRIMARY KEY"), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
    }

    #[tokio::test]
    async fn version_2_database_opened_by_the_store_takes_journal_appends() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("v2.db");
        {
            let connection = Connection::open(&path).unwrap();
            create_database_at_version(&connection, 2);
            connection
                .execute(
                    "INSERT INTO chat_message \
                     (message_id, conversation, sender, recipient, text, sent_at_unix_ms) \
                     VALUES (x'00000000000000000000000000000001', 'a\u{1f}b', 'a', 'b', 'hi', 1)",
                    [],
                )
                .unwrap();
        }
        let store = SqliteStore::open(&SqliteConfig {
            path: path.clone(),
            ..SqliteConfig::default()
        })
        .await
        .unwrap();
        let conversation = store
            .conversation("a", "b", crate::audit::PageRequest::first(10))
            .await
            .unwrap();
        assert_eq!(conversation.items.len(), 1);
        assert_eq!(conversation.items[0].text, "hi");

        let records = vec![
            JournalRecord {
                sequence: 1,
                at_unix_ms: 10,
                body: b"first".to_vec(),
            },
            JournalRecord {
                sequence: 2,
                at_unix_ms: 11,
                body: b"second".to_vec(),
            },
        ];
        LedgerJournalStore::append(&store, "ledger", &records)
            .await
            .unwrap();
        assert_eq!(store.read("ledger", 0, 10).await.unwrap(), records);
        assert_eq!(store.last_sequence("ledger").await.unwrap(), 2);
        store.close().await;
    }
}
