//! The SQLite writer's grouping: concurrent requests share one transaction, a failing request
//! does not fail its neighbours, and a closed store refuses further calls.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanmesh_storage::sqlite::{SqliteStore, WriterStats};
use lanmesh_storage::{
    AuditEvent, AuditStore, EntityKey, EntityStateStore, PageRequest, PresenceEvent,
    PresenceSample, PresenceSampleStore, SqliteConfig, StateVersion, StoreError, StoredEntityState,
};
use rusqlite::Connection;
use tokio::task::JoinHandle;

use crate::harness::{sqlite_config, temp_database};

const BASE_UNIX_MS: i64 = 1_795_132_800_000;
const SEGMENT: &str = "10.3.0.0/16";

fn samples(batch: i64, n_samples: i64) -> Vec<PresenceSample> {
    (0..n_samples)
        .map(|index| PresenceSample {
            segment: SEGMENT.to_owned(),
            address: IpAddr::from([10, 3, 0, 1]),
            account: format!("account-{batch}-{index}-{}", "y".repeat(100)),
            event: PresenceEvent::Login,
            at_unix_ms: BASE_UNIX_MS + batch * 100_000 + index,
        })
        .collect()
}

/// Another "process" holding SQLite's write lock until it commits.
fn hold_write_lock(path: &Path) -> Connection {
    let connection = Connection::open(path).unwrap();
    connection.execute_batch("BEGIN IMMEDIATE").unwrap();
    connection
}

/// Waits (yielding, with a deadline) until the writer's counters satisfy `condition`.
async fn wait_for_stats(store: &SqliteStore, condition: impl Fn(&WriterStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = store.writer_stats();
        if condition(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "writer never reached the state: {stats:?}"
        );
        tokio::task::yield_now().await;
    }
}

fn spawn_append(
    store: &Arc<SqliteStore>,
    batch: i64,
    n_samples: i64,
) -> JoinHandle<Result<(), StoreError>> {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        PresenceSampleStore::append(store.as_ref(), samples(batch, n_samples)).await
    })
}

async fn count_samples(store: &SqliteStore) -> usize {
    store
        .samples_in_window(SEGMENT, BASE_UNIX_MS, BASE_UNIX_MS + 86_400_000)
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_one_transaction() {
    let (_temp_dir, path) = temp_database();
    let store = Arc::new(
        SqliteStore::open(&sqlite_config(path.clone()).sqlite)
            .await
            .unwrap(),
    );
    let lock = hold_write_lock(&path);
    let n_requests = 20;
    let tasks: Vec<_> = (0..n_requests)
        .map(|batch| spawn_append(&store, batch, 10))
        .collect();
    // The writer took a first group and waits for the lock; everything else queues behind it.
    wait_for_stats(&store, |stats| {
        stats.n_received_requests >= 1
            && stats.n_received_requests + stats.n_queued_requests == n_requests as u64
    })
    .await;
    lock.execute_batch("COMMIT").unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // The group taken before the lock was released, then one group with everything queued.
    let stats = store.writer_stats();
    assert!(
        (1..=2).contains(&stats.n_committed_transactions),
        "{stats:?}"
    );
    assert_eq!(stats.n_committed_requests, 20);
    assert_eq!(stats.n_committed_rows, 200);
    assert_eq!(count_samples(&store).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_request_does_not_fail_its_group() {
    let (_temp_dir, path) = temp_database();
    let config = SqliteConfig {
        max_size_bytes: Some(64 * 1024),
        ..sqlite_config(path.clone()).sqlite
    };
    let store = Arc::new(SqliteStore::open(&config).await.unwrap());
    let lock = hold_write_lock(&path);
    // First request: taken alone while the writer waits for the lock.
    let first = spawn_append(&store, 0, 5);
    wait_for_stats(&store, |stats| stats.n_received_requests == 1).await;
    // Then a request too large for the size cap between two small ones, all in one group.
    let too_large = spawn_append(&store, 1, 2_000);
    wait_for_stats(&store, |stats| stats.n_queued_requests == 1).await;
    let second = spawn_append(&store, 2, 5);
    wait_for_stats(&store, |stats| stats.n_queued_requests == 2).await;
    let third = spawn_append(&store, 3, 5);
    wait_for_stats(&store, |stats| stats.n_queued_requests == 3).await;
    lock.execute_batch("COMMIT").unwrap();

    first.await.unwrap().unwrap();
    let error = too_large.await.unwrap().unwrap_err();
    assert!(matches!(error, StoreError::StorageFull { .. }), "{error:?}");
    second.await.unwrap().unwrap();
    third.await.unwrap().unwrap();
    assert_eq!(count_samples(&store).await, 15);
    // The group failed as a whole, then its requests ran one per transaction.
    assert_eq!(store.writer_stats().n_committed_transactions, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_compare_and_set_in_a_group_leaves_neighbours_committed() {
    let (_temp_dir, path) = temp_database();
    let store = Arc::new(
        SqliteStore::open(&sqlite_config(path.clone()).sqlite)
            .await
            .unwrap(),
    );
    let key = EntityKey::new("user", "grouped");
    let lock = hold_write_lock(&path);
    let first = spawn_append(&store, 0, 1);
    wait_for_stats(&store, |stats| stats.n_received_requests == 1).await;

    let save = |expected_opt: Option<StateVersion>, version: u64| {
        let store = Arc::clone(&store);
        let key = key.clone();
        tokio::spawn(async move {
            let new = StoredEntityState {
                version: StateVersion::new(1, version),
                state: version.to_be_bytes().to_vec(),
            };
            store.compare_and_set(&key, expected_opt, new).await
        })
    };
    let winning_save = save(None, 1);
    wait_for_stats(&store, |stats| stats.n_queued_requests == 1).await;
    let losing_save = save(None, 2);
    wait_for_stats(&store, |stats| stats.n_queued_requests == 2).await;
    let audited = {
        let store = Arc::clone(&store);
        let key = key.clone();
        tokio::spawn(async move {
            let event = AuditEvent {
                event_id: uuid::Uuid::now_v7(),
                actor: "test".to_owned(),
                entity: key,
                action: "user.saved".to_owned(),
                detail: Vec::new(),
                at_unix_ms: BASE_UNIX_MS,
                msg_id_opt: None,
            };
            AuditStore::append(store.as_ref(), vec![event]).await
        })
    };
    wait_for_stats(&store, |stats| stats.n_queued_requests == 3).await;
    lock.execute_batch("COMMIT").unwrap();

    first.await.unwrap().unwrap();
    winning_save.await.unwrap().unwrap();
    let error = losing_save.await.unwrap().unwrap_err();
    assert!(
        matches!(error, StoreError::Conflict { current_opt: Some(current), .. } if current == StateVersion::new(1, 1)),
        "{error:?}"
    );
    audited.await.unwrap().unwrap();
    assert_eq!(store.writer_stats().n_committed_transactions, 2);
    assert_eq!(
        store.load(&key).await.unwrap().map(|stored| stored.version),
        Some(StateVersion::new(1, 1))
    );
    let page = store
        .query(&key, BASE_UNIX_MS, BASE_UNIX_MS + 1, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
}

#[tokio::test]
async fn closed_store_refuses_calls() {
    let (_temp_dir, path) = temp_database();
    let store = SqliteStore::open(&sqlite_config(path.clone()).sqlite)
        .await
        .unwrap();
    let clone = store.clone();
    PresenceSampleStore::append(&store, samples(0, 3))
        .await
        .unwrap();
    store.close().await;
    let error = PresenceSampleStore::append(&clone, samples(1, 3))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Closed { .. }), "{error:?}");
    let error = clone.load(&EntityKey::new("user", "x")).await.unwrap_err();
    assert!(matches!(error, StoreError::Closed { .. }), "{error:?}");
    assert!(error.to_string().contains("is closed"));
    // Closing twice is harmless; the acknowledged write is in the file.
    clone.close().await;
    let reopened = SqliteStore::open(&sqlite_config(path).sqlite)
        .await
        .unwrap();
    assert_eq!(count_samples(&reopened).await, 3);
}
