//! Crash safety: a child process writing samples, audit events and entity state is SIGKILLed
//! mid-run; every write it acknowledged must be in the reopened database, which must pass
//! `PRAGMA integrity_check`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lanmesh_storage::{
    AuditEvent, EntityKey, PageRequest, PresenceEvent, PresenceSample, StateVersion, StoreError,
    StoredEntityState, Stores,
};
use uuid::Uuid;

use crate::child_process::{ChildLines, NextLine, child_command, child_role};
use crate::harness::{sqlite_config, temp_database};

const TEST_NAME: &str = "crash_safety::sigkill_keeps_every_acknowledged_write";
const CHILD_ROLE: &str = "crash-writer";
/// Acknowledgements the parent waits for before killing the child.
const ACKS_BEFORE_KILL: usize = 2000;
/// The child stops by itself after this many batches per writer, should the parent be gone.
const MAX_BATCHES_PER_WRITER: u64 = 100_000;
const N_SAMPLE_WRITERS: u64 = 4;
const SAMPLES_PER_BATCH: i64 = 10;
const BASE_UNIX_MS: i64 = 1_795_132_800_000;

fn segment_of(writer: u64) -> String {
    format!("10.{writer}.0.0/16")
}

fn crash_entity() -> EntityKey {
    EntityKey::new("crash", "counter")
}

fn audit_entity() -> EntityKey {
    EntityKey::new("crash", "audited")
}

#[test]
fn sigkill_keeps_every_acknowledged_write() {
    if let Some(database) = child_role(CHILD_ROLE) {
        run_child_writer(&database);
        return;
    }
    let (_temp_dir, database) = temp_database();
    let mut child = child_command(TEST_NAME, CHILD_ROLE, &database)
        .spawn()
        .expect("spawn child writer");
    let lines = ChildLines::start(&mut child, Duration::from_secs(120));

    let mut sample_batches: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut state_versions: Vec<u64> = Vec::new();
    let mut audit_ids: BTreeSet<Uuid> = BTreeSet::new();
    let mut n_acks = 0;
    let mut killed = false;
    loop {
        match lines.next() {
            NextLine::Line(line) => {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["ack", "samples", writer, batch] => {
                        sample_batches
                            .entry(writer.parse().unwrap())
                            .or_default()
                            .insert(batch.parse().unwrap());
                    }
                    ["ack", "state", version] => state_versions.push(version.parse().unwrap()),
                    ["ack", "audit", event_id] => {
                        audit_ids.insert(Uuid::parse_str(event_id).unwrap());
                    }
                    ["child", "error", ..] => panic!("child writer failed: {line}"),
                    _ => continue,
                }
                n_acks += 1;
                if n_acks >= ACKS_BEFORE_KILL && !killed {
                    // std's kill is SIGKILL on Unix: no destructor, no flush, no clean close.
                    child.kill().expect("kill child");
                    killed = true;
                }
            }
            NextLine::End => break,
            NextLine::TimedOut => {
                let _ = child.kill();
                panic!("child made no progress in time ({n_acks} acknowledgements)");
            }
        }
    }
    let status = child.wait().expect("wait for child");
    assert!(killed, "child exited before being killed: {status:?}");
    assert_eq!(
        status.signal(),
        Some(9),
        "child must die from SIGKILL: {status:?}"
    );
    assert!(!state_versions.is_empty() && !audit_ids.is_empty() && !sample_batches.is_empty());

    let integrity = lanmesh_storage::sqlite::integrity_check(&database).unwrap();
    assert_eq!(integrity, vec!["ok".to_owned()]);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let stores = lanmesh_storage::open(&sqlite_config(database.clone()))
            .await
            .expect("reopen after crash");
        verify_samples(&stores, &sample_batches).await;
        verify_state(&stores, &state_versions).await;
        verify_audit(&stores, &audit_ids).await;
    });
    eprintln!(
        "crash safety: verified {} sample batches, {} state saves, {} audit events",
        sample_batches.values().map(BTreeSet::len).sum::<usize>(),
        state_versions.len(),
        audit_ids.len()
    );
}

async fn verify_samples(stores: &Stores, sample_batches: &BTreeMap<u64, BTreeSet<u64>>) {
    for (writer, batches) in sample_batches {
        let last_batch = batches.iter().max().copied().unwrap_or(0);
        let to_unix_ms =
            BASE_UNIX_MS + (i64::try_from(last_batch).unwrap() + 1) * SAMPLES_PER_BATCH;
        let stored: BTreeSet<i64> = stores
            .presence
            .samples_in_window(&segment_of(*writer), BASE_UNIX_MS, to_unix_ms)
            .await
            .unwrap()
            .into_iter()
            .map(|sample| sample.at_unix_ms)
            .collect();
        for batch in batches {
            for index in 0..SAMPLES_PER_BATCH {
                let at_unix_ms = sample_at(*batch, index);
                assert!(
                    stored.contains(&at_unix_ms),
                    "acknowledged sample {index} of batch {batch} of writer {writer} is missing"
                );
            }
        }
    }
}

async fn verify_state(stores: &Stores, state_versions: &[u64]) {
    let last_acknowledged = state_versions.iter().max().copied().unwrap();
    let stored = stores
        .entity_state
        .load(&crash_entity())
        .await
        .unwrap()
        .expect("acknowledged state is present");
    // The save after the last acknowledged one may have committed before the kill.
    assert!(
        stored.version.version == last_acknowledged
            || stored.version.version == last_acknowledged + 1,
        "stored {:?}, last acknowledged {last_acknowledged}",
        stored.version
    );
    assert_eq!(stored.state, stored.version.version.to_be_bytes().to_vec());
}

async fn verify_audit(stores: &Stores, audit_ids: &BTreeSet<Uuid>) {
    let mut stored = BTreeSet::new();
    let mut cursor_opt = None;
    loop {
        let page = stores
            .audit
            .query(
                &audit_entity(),
                BASE_UNIX_MS,
                BASE_UNIX_MS + 86_400_000,
                PageRequest {
                    limit: 1000,
                    cursor_opt,
                },
            )
            .await
            .unwrap();
        stored.extend(page.items.iter().map(|event| event.event_id));
        match page.next_cursor_opt {
            Some(next) => cursor_opt = Some(next),
            None => break,
        }
    }
    let missing: Vec<&Uuid> = audit_ids.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged audit events missing: {missing:?}"
    );
}

fn sample_at(batch: u64, index: i64) -> i64 {
    BASE_UNIX_MS + i64::try_from(batch).unwrap() * SAMPLES_PER_BATCH + index
}

/// Prints one acknowledgement line; exits quietly when the parent is gone.
fn acknowledge(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// The child role: writes with several concurrent tasks until killed.
fn run_child_writer(database: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stores = match lanmesh_storage::open(&sqlite_config(database.to_path_buf())).await {
            Ok(stores) => Arc::new(stores),
            Err(error) => {
                acknowledge(&format!("child error {error}"));
                return;
            }
        };
        let mut tasks = Vec::new();
        for writer in 0..N_SAMPLE_WRITERS {
            let stores = Arc::clone(&stores);
            tasks.push(tokio::spawn(async move {
                for batch in 0..MAX_BATCHES_PER_WRITER {
                    let samples = (0..SAMPLES_PER_BATCH)
                        .map(|index| PresenceSample {
                            segment: segment_of(writer),
                            address: IpAddr::from([10, 0, 0, 1]),
                            account: format!("w{writer}-b{batch}-i{index}"),
                            event: PresenceEvent::Login,
                            at_unix_ms: sample_at(batch, index),
                        })
                        .collect();
                    stores.presence.append(samples).await?;
                    acknowledge(&format!("ack samples {writer} {batch}"));
                }
                Ok::<(), StoreError>(())
            }));
        }
        let state_stores = Arc::clone(&stores);
        tasks.push(tokio::spawn(async move {
            let mut expected_opt = None;
            for version in 1..MAX_BATCHES_PER_WRITER {
                let new = StoredEntityState {
                    version: StateVersion::new(1, version),
                    state: version.to_be_bytes().to_vec(),
                };
                state_stores
                    .entity_state
                    .compare_and_set(&crash_entity(), expected_opt, new)
                    .await?;
                expected_opt = Some(StateVersion::new(1, version));
                acknowledge(&format!("ack state {version}"));
            }
            Ok(())
        }));
        let audit_stores = Arc::clone(&stores);
        tasks.push(tokio::spawn(async move {
            for index in 0..MAX_BATCHES_PER_WRITER {
                let event = AuditEvent {
                    event_id: Uuid::now_v7(),
                    actor: "crash-test".to_owned(),
                    entity: audit_entity(),
                    action: "crash.write".to_owned(),
                    detail: index.to_be_bytes().to_vec(),
                    at_unix_ms: BASE_UNIX_MS + i64::try_from(index).unwrap() % 86_400_000,
                    msg_id_opt: None,
                };
                let event_id = event.event_id;
                audit_stores.audit.append(vec![event]).await?;
                acknowledge(&format!("ack audit {event_id}"));
            }
            Ok(())
        }));
        for task in tasks {
            if let Ok(Err(error)) = task.await {
                acknowledge(&format!("child error {error}"));
            }
        }
    });
}
