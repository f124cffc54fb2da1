//! Several processes (and several stores in one process) sharing one SQLite file: concurrent
//! first opens are safe and compare-and-set loses no update.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lanmesh_storage::{EntityKey, EntityStateStore, StateVersion, StoreError, StoredEntityState};

use crate::child_process::{ChildLines, NextLine, child_command, child_role};
use crate::harness::{sqlite_config, temp_database};

const TEST_NAME: &str = "multi_process::processes_sharing_a_file_lose_no_update";
const CHILD_ROLE: &str = "counter-incrementer";
const N_PROCESSES: u64 = 3;
const INCREMENTS_PER_WRITER: u64 = 40;

fn counter_key() -> EntityKey {
    EntityKey::new("test", "shared-counter")
}

/// Adds one to the shared counter with load + compare-and-set, retrying on conflict; returns
/// how many conflicts it met.
async fn increment(store: &dyn EntityStateStore) -> u64 {
    let key = counter_key();
    let mut n_conflicts = 0;
    loop {
        let loaded_opt = store.load(&key).await.unwrap();
        let (expected_opt, count) = match &loaded_opt {
            Some(loaded) => (
                Some(loaded.version),
                u64::from_be_bytes(loaded.state.as_slice().try_into().unwrap()),
            ),
            None => (None, 0),
        };
        let next_version = expected_opt.map_or(1, |version| version.version + 1);
        let new = StoredEntityState {
            version: StateVersion::new(1, next_version),
            state: (count + 1).to_be_bytes().to_vec(),
        };
        match store.compare_and_set(&key, expected_opt, new).await {
            Ok(()) => return n_conflicts,
            Err(StoreError::Conflict { .. }) => n_conflicts += 1,
            Err(other) => panic!("increment failed: {other:?}"),
        }
    }
}

async fn assert_counter(store: &dyn EntityStateStore, expected: u64) {
    let stored = store.load(&counter_key()).await.unwrap().unwrap();
    assert_eq!(stored.version, StateVersion::new(1, expected));
    assert_eq!(stored.state, expected.to_be_bytes().to_vec());
}

#[test]
fn processes_sharing_a_file_lose_no_update() {
    if let Some(database) = child_role(CHILD_ROLE) {
        run_child(&database);
        return;
    }
    // The children open the brand-new file at the same time: creation and migration race too.
    let (_temp_dir, database) = temp_database();
    let mut children: Vec<_> = (0..N_PROCESSES)
        .map(|_| {
            child_command(TEST_NAME, CHILD_ROLE, &database)
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut n_conflicts = 0;
    for child in &mut children {
        let lines = ChildLines::start(child, Duration::from_secs(120));
        let mut done = false;
        loop {
            match lines.next() {
                NextLine::Line(line) => {
                    if let Some(count) = line.strip_prefix("done conflicts ") {
                        n_conflicts += count.parse::<u64>().unwrap();
                        done = true;
                    }
                }
                NextLine::End => break,
                NextLine::TimedOut => panic!("child did not finish in time"),
            }
        }
        let status = child.wait().unwrap();
        assert!(done && status.success(), "child failed: {status:?}");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let stores = lanmesh_storage::open(&sqlite_config(database.clone()))
            .await
            .unwrap();
        assert_counter(
            stores.entity_state.as_ref(),
            N_PROCESSES * INCREMENTS_PER_WRITER,
        )
        .await;
    });
    eprintln!("multi-process: {n_conflicts} conflicts resolved by retry");
}

fn run_child(database: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let stores = lanmesh_storage::open(&sqlite_config(database.to_path_buf()))
            .await
            .unwrap();
        let mut n_conflicts = 0;
        for _ in 0..INCREMENTS_PER_WRITER {
            n_conflicts += increment(stores.entity_state.as_ref()).await;
        }
        println!("done conflicts {n_conflicts}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_lose_no_update() {
    let (_temp_dir, database) = temp_database();
    let config = sqlite_config(database);
    // Two independently opened stores: two writer threads, two connections, as two nodes.
    let first = lanmesh_storage::open(&config).await.unwrap();
    let second = lanmesh_storage::open(&config).await.unwrap();
    let tasks: Vec<_> = [first.entity_state.clone(), second.entity_state.clone()]
        .into_iter()
        .flat_map(|store| [Arc::clone(&store), store])
        .map(|store| {
            tokio::spawn(async move {
                let mut n_conflicts = 0;
                for _ in 0..INCREMENTS_PER_WRITER {
                    n_conflicts += increment(store.as_ref()).await;
                }
                n_conflicts
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_counter(first.entity_state.as_ref(), 4 * INCREMENTS_PER_WRITER).await;
    assert_counter(second.entity_state.as_ref(), 4 * INCREMENTS_PER_WRITER).await;
}
