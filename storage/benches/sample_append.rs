//! Benchmark of the presence-sample append path against raw rusqlite, plus compare-and-set
//! saves and chat message appends per second, all measured in one run on fresh files.
//!
//! Run: `cargo bench -p lanmesh-storage --bench sample_append`
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark aborts on any failure"
)]

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanmesh_storage::sqlite::SqliteStore;
use lanmesh_storage::{
    ChatMessage, EntityKey, EntityStateStore, MessageStore, PresenceEvent, PresenceSample,
    PresenceSampleStore, SqliteConfig, StateVersion, StoredEntityState,
};
use rusqlite::{Connection, params};

/// Samples inserted by each measured run.
const N_SAMPLES: usize = 400_000;
/// Rows per transaction of the raw baseline.
const RAW_ROWS_PER_TRANSACTION: usize = 1000;
/// Concurrent callers of the store's append path.
const N_APPEND_TASKS: usize = 8;
/// Samples per `append` call.
const SAMPLES_PER_APPEND: usize = 100;
/// Compare-and-set saves per measured run.
const N_SAVES: u64 = 20_000;
/// Concurrent entities saving in the compare-and-set run.
const N_SAVE_TASKS: u64 = 8;
/// Chat messages appended by the message run.
const N_MESSAGES: usize = 40_000;
/// Concurrent callers of the message append path.
const N_MESSAGE_TASKS: usize = 8;
/// Messages per `append` call (a client's small burst).
const MESSAGES_PER_APPEND: usize = 4;

fn make_samples(n_samples: usize) -> Vec<PresenceSample> {
    let base_unix_ms: i64 = 1_795_132_800_000;
    (0..n_samples)
        .map(|index| {
            let segment_index = index % 64;
            let event = match index % 5 {
                0..=2 => PresenceEvent::Login,
                3 => PresenceEvent::Logout,
                _ => PresenceEvent::SessionEnd,
            };
            PresenceSample {
                segment: format!("10.{segment_index}.0.0/16"),
                address: IpAddr::from([
                    10,
                    segment_index as u8,
                    (index / 256 % 256) as u8,
                    (index % 256) as u8,
                ]),
                account: format!("account-{:06}", index % 50_000),
                event,
                at_unix_ms: base_unix_ms + index as i64,
            }
        })
        .collect()
}

fn config(path: &Path) -> SqliteConfig {
    SqliteConfig {
        path: path.to_path_buf(),
        ..SqliteConfig::default()
    }
}

/// Creates a database with the store's exact schema (then closes the store).
async fn create_schema(path: &Path) {
    SqliteStore::open(&config(path))
        .await
        .unwrap()
        .close()
        .await;
}

/// The baseline: one connection with the store writer's pragmas, one prepared statement,
/// transactions of `RAW_ROWS_PER_TRANSACTION` rows.
fn raw_insert(path: &Path, samples: &[PresenceSample]) -> Duration {
    let mut connection = Connection::open(path).unwrap();
    connection
        .pragma_update(None, "journal_mode", "wal")
        .unwrap();
    connection
        .pragma_update(None, "synchronous", "FULL")
        .unwrap();
    connection.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut address = String::new();
    let started = Instant::now();
    for chunk in samples.chunks(RAW_ROWS_PER_TRANSACTION) {
        let transaction = connection.transaction().unwrap();
        {
            let mut statement = transaction
                .prepare_cached(
                    "INSERT INTO presence_sample (segment, at_unix_ms, address, account, event) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .unwrap();
            for sample in chunk {
                address.clear();
                write!(address, "{}", sample.address).unwrap();
                statement
                    .execute(params![
                        sample.segment,
                        sample.at_unix_ms,
                        address.as_str(),
                        sample.account,
                        sample.event.code(),
                    ])
                    .unwrap();
            }
        }
        transaction.commit().unwrap();
    }
    started.elapsed()
}

/// The store path: `N_APPEND_TASKS` tasks appending batches of `SAMPLES_PER_APPEND`.
async fn store_append(path: &Path, samples: Vec<PresenceSample>) -> Duration {
    let store = Arc::new(SqliteStore::open(&config(path)).await.unwrap());
    let mut per_task: Vec<Vec<Vec<PresenceSample>>> =
        (0..N_APPEND_TASKS).map(|_| Vec::new()).collect();
    let mut samples = samples.into_iter();
    let mut task_index = 0;
    loop {
        let batch: Vec<PresenceSample> = samples.by_ref().take(SAMPLES_PER_APPEND).collect();
        if batch.is_empty() {
            break;
        }
        per_task[task_index % N_APPEND_TASKS].push(batch);
        task_index += 1;
    }
    let started = Instant::now();
    let tasks: Vec<_> = per_task
        .into_iter()
        .map(|batches| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for batch in batches {
                    PresenceSampleStore::append(store.as_ref(), batch)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    store.close().await;
    elapsed
}

/// Compare-and-set saves: `n_tasks` entities, each saving `n_saves / n_tasks` times in a row.
async fn cas_saves(path: &Path, n_tasks: u64, n_saves: u64) -> Duration {
    let store = Arc::new(SqliteStore::open(&config(path)).await.unwrap());
    let state = vec![0x5a_u8; 512];
    let started = Instant::now();
    let tasks: Vec<_> = (0..n_tasks)
        .map(|task| {
            let store = Arc::clone(&store);
            let state = state.clone();
            tokio::spawn(async move {
                let key = EntityKey::new("bench", format!("entity-{task}"));
                let mut expected_opt = None;
                for version in 1..=n_saves / n_tasks {
                    let new = StoredEntityState {
                        version: StateVersion::new(1, version),
                        state: state.clone(),
                    };
                    store
                        .compare_and_set(&key, expected_opt, new)
                        .await
                        .unwrap();
                    expected_opt = Some(StateVersion::new(1, version));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    store.close().await;
    elapsed
}

/// Chat message appends: `N_MESSAGE_TASKS` tasks, each a pair of accounts exchanging
/// `MESSAGES_PER_APPEND` messages per call.
async fn message_appends(path: &Path) -> Duration {
    let store = Arc::new(SqliteStore::open(&config(path)).await.unwrap());
    let base_unix_ms: i64 = 1_795_132_800_000;
    let text = "x".repeat(120);
    let per_task = N_MESSAGES / N_MESSAGE_TASKS;
    let started = Instant::now();
    let tasks: Vec<_> = (0..N_MESSAGE_TASKS)
        .map(|task| {
            let store = Arc::clone(&store);
            let text = text.clone();
            tokio::spawn(async move {
                let sender = format!("account-{task}");
                let recipient = format!("account-{}", task + N_MESSAGE_TASKS);
                let messages: Vec<ChatMessage> = (0..per_task)
                    .map(|index| ChatMessage {
                        message_id: uuid::Uuid::now_v7(),
                        sender: sender.clone(),
                        recipient: recipient.clone(),
                        text: text.clone(),
                        sent_at_unix_ms: base_unix_ms + index as i64,
                    })
                    .collect();
                for batch in messages.chunks(MESSAGES_PER_APPEND) {
                    MessageStore::append(store.as_ref(), batch.to_vec())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    store.close().await;
    elapsed
}

fn per_second(n_items: u64, elapsed: Duration) -> f64 {
    n_items as f64 / elapsed.as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let directory = tempfile::tempdir().unwrap();
    let samples = make_samples(N_SAMPLES);

    // Warm-up of both paths on throw-away files (page cache, allocator, code).
    let warm_samples = make_samples(50_000);
    let warm_raw = directory.path().join("warm-raw.db");
    runtime.block_on(create_schema(&warm_raw));
    raw_insert(&warm_raw, &warm_samples);
    runtime.block_on(store_append(
        &directory.path().join("warm-store.db"),
        warm_samples,
    ));

    let raw_path = directory.path().join("raw.db");
    runtime.block_on(create_schema(&raw_path));
    let raw_elapsed = raw_insert(&raw_path, &samples);
    let raw_rate = per_second(N_SAMPLES as u64, raw_elapsed);

    let store_elapsed = runtime.block_on(store_append(&directory.path().join("store.db"), samples));
    let store_rate = per_second(N_SAMPLES as u64, store_elapsed);

    let cas_concurrent_elapsed = runtime.block_on(cas_saves(
        &directory.path().join("cas-8.db"),
        N_SAVE_TASKS,
        N_SAVES,
    ));
    let cas_concurrent_rate = per_second(N_SAVES, cas_concurrent_elapsed);
    let n_single_saves = N_SAVES / 4;
    let cas_single_elapsed = runtime.block_on(cas_saves(
        &directory.path().join("cas-1.db"),
        1,
        n_single_saves,
    ));
    let cas_single_rate = per_second(n_single_saves, cas_single_elapsed);
    let message_elapsed = runtime.block_on(message_appends(&directory.path().join("messages.db")));
    let message_rate = per_second(N_MESSAGES as u64, message_elapsed);

    let ratio = store_rate / raw_rate;
    println!("sample_append benchmark (SQLite, WAL, synchronous=FULL, fresh files)");
    println!(
        "raw rusqlite batched insert : {raw_rate:>12.0} samples/s  ({N_SAMPLES} samples, {RAW_ROWS_PER_TRANSACTION} rows/transaction, {:.3} s)",
        raw_elapsed.as_secs_f64()
    );
    println!(
        "store append (grouped)      : {store_rate:>12.0} samples/s  ({N_APPEND_TASKS} tasks x batches of {SAMPLES_PER_APPEND}, {:.3} s)",
        store_elapsed.as_secs_f64()
    );
    println!("store / raw                 : {:>12.1} %", ratio * 100.0);
    println!(
        "compare-and-set saves       : {cas_concurrent_rate:>12.0} saves/s    ({N_SAVE_TASKS} entities saving concurrently, 512-byte state)"
    );
    println!(
        "compare-and-set saves       : {cas_single_rate:>12.0} saves/s    (1 entity, each save awaited before the next)"
    );
    println!(
        "chat message appends        : {message_rate:>12.0} messages/s ({N_MESSAGE_TASKS} tasks x batches of {MESSAGES_PER_APPEND}, 120-byte texts)"
    );
    let meets_ratio = ratio >= 0.5;
    let meets_rate = store_rate >= 200_000.0;
    println!(
        "targets: store >= 50% of raw: {}; store >= 200000 samples/s: {}",
        if meets_ratio { "met" } else { "NOT met" },
        if meets_rate { "met" } else { "NOT met" }
    );
}
