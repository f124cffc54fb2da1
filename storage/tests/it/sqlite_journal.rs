//! The ledger journal on SQLite across restarts: what was acknowledged is in the file when it
//! is opened again, and a reopened store still refuses a sequence reused for another record.

use lanmesh_storage::sqlite::{SqliteStore, integrity_check};
use lanmesh_storage::{JournalRecord, LedgerJournalStore, StoreError};

use crate::harness::{sqlite_config, temp_database};

const BASE_UNIX_MS: i64 = 1_795_132_800_000;
const LEDGER: &str = "campaign-1/gateway-1";
const OTHER_LEDGER: &str = "campaign-1/gateway-2";

fn records(sequences: std::ops::RangeInclusive<u64>, tag: &str) -> Vec<JournalRecord> {
    sequences
        .map(|sequence| JournalRecord {
            sequence,
            at_unix_ms: BASE_UNIX_MS + i64::try_from(sequence).unwrap(),
            body: format!("{tag}-{sequence}").into_bytes(),
        })
        .collect()
}

async fn whole_journal(store: &SqliteStore, ledger_id: &str) -> Vec<JournalRecord> {
    store.read(ledger_id, 0, 10_000).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_survives_reopening_the_file() {
    let (_temp_dir, path) = temp_database();
    let config = sqlite_config(path.clone()).sqlite;

    // First run: several appends, then a tidy close.
    let store = SqliteStore::open(&config).await.unwrap();
    for batch in records(1..=50, "entry").chunks(7) {
        LedgerJournalStore::append(&store, LEDGER, batch)
            .await
            .unwrap();
    }
    LedgerJournalStore::append(&store, OTHER_LEDGER, &records(1..=3, "other"))
        .await
        .unwrap();
    store.close().await;

    // Second run: everything is there, retries are still accepted and conflicts refused.
    let store = SqliteStore::open(&config).await.unwrap();
    assert_eq!(
        whole_journal(&store, LEDGER).await,
        records(1..=50, "entry")
    );
    assert_eq!(
        whole_journal(&store, OTHER_LEDGER).await,
        records(1..=3, "other")
    );
    assert_eq!(store.last_sequence(LEDGER).await.unwrap(), 50);
    LedgerJournalStore::append(&store, LEDGER, &records(45..=60, "entry"))
        .await
        .unwrap();
    let error = LedgerJournalStore::append(&store, LEDGER, &records(60..=61, "changed"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::JournalConflict { ref ledger_id, sequence: 60 } if ledger_id == LEDGER),
        "{error:?}"
    );
    // Dropped without closing: acknowledged appends are committed all the same.
    drop(store);

    // Third run, through `open` as a node does.
    let stores = lanmesh_storage::open(&sqlite_config(path.clone()))
        .await
        .unwrap();
    assert_eq!(
        stores.ledger_journal.read(LEDGER, 0, 10_000).await.unwrap(),
        records(1..=60, "entry")
    );
    assert_eq!(
        stores.ledger_journal.last_sequence(LEDGER).await.unwrap(),
        60
    );
    assert_eq!(
        stores
            .ledger_journal
            .last_sequence(OTHER_LEDGER)
            .await
            .unwrap(),
        3
    );
    drop(stores);

    let path_for_check = path.clone();
    let messages = tokio::task::spawn_blocking(move || integrity_check(&path_for_check))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(messages, vec!["ok".to_owned()]);
    let connection = rusqlite::Connection::open(&path).unwrap();
    let schema_version: i64 = connection
        .query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(schema_version, 3);
}
