//! Bad files and hostile environments: corrupt or foreign databases, a newer schema, a
//! read-only directory, a full database or disk. Each must give a typed error with a clear
//! message, never a panic, and must not lose anything acknowledged before.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use lanmesh_storage::sqlite::{SqliteStore, integrity_check};
use lanmesh_storage::{
    EntityKey, EntityStateStore, PresenceEvent, PresenceSample, PresenceSampleStore, SqliteConfig,
    StateVersion, StoreError, StoredEntityState,
};

use crate::child_process::{
    CHILD_DB_VAR, CHILD_ROLE_VAR, ChildLines, NextLine, child_role, exact_test_args,
};
use crate::harness::{sqlite_config, temp_database};

const BASE_UNIX_MS: i64 = 1_795_132_800_000;

fn config_for(path: &Path) -> SqliteConfig {
    sqlite_config(path.to_path_buf()).sqlite
}

/// Deterministic pseudo-random bytes (xorshift64), so a failure can be reproduced.
fn pseudo_random_bytes(n_bytes: usize, mut seed: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n_bytes);
    while bytes.len() < n_bytes {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        bytes.extend_from_slice(&seed.to_le_bytes());
    }
    bytes.truncate(n_bytes);
    bytes
}

fn samples(segment: &str, batch: i64, n_samples: i64) -> Vec<PresenceSample> {
    (0..n_samples)
        .map(|index| PresenceSample {
            segment: segment.to_owned(),
            address: IpAddr::from([10, 0, 0, 1]),
            account: format!("account-{batch:06}-{index:04}-{}", "x".repeat(80)),
            event: PresenceEvent::Login,
            at_unix_ms: BASE_UNIX_MS + batch * 1_000 + index,
        })
        .collect()
}

fn key() -> EntityKey {
    EntityKey::new("user", "survivor")
}

fn saved_state() -> StoredEntityState {
    StoredEntityState {
        version: StateVersion::new(1, 1),
        state: b"acknowledged".to_vec(),
    }
}

/// Writes acknowledged data (one entity state and one sample batch), then closes the store.
async fn write_acknowledged_data(path: &Path) {
    let store = SqliteStore::open(&config_for(path)).await.unwrap();
    store
        .compare_and_set(&key(), None, saved_state())
        .await
        .unwrap();
    PresenceSampleStore::append(&store, samples("10.0.0.0/24", 0, 5))
        .await
        .unwrap();
    store.close().await;
}

/// Reopens `path` and checks the data of [`write_acknowledged_data`] is intact.
async fn assert_acknowledged_data(path: &Path) {
    let store = SqliteStore::open(&config_for(path)).await.unwrap();
    assert_eq!(store.load(&key()).await.unwrap(), Some(saved_state()));
    let read = store
        .samples_in_window("10.0.0.0/24", BASE_UNIX_MS, BASE_UNIX_MS + 1_000)
        .await
        .unwrap();
    assert_eq!(read.len(), 5);
    store.close().await;
    assert_eq!(integrity_check(path).unwrap(), vec!["ok".to_owned()]);
}

#[tokio::test]
async fn random_bytes_file_is_not_a_database_and_stays_untouched() {
    let (_temp_dir, path) = temp_database();
    let garbage = pseudo_random_bytes(8192, 0x5eed_1234_abcd_ef01);
    fs::write(&path, &garbage).unwrap();
    let error = SqliteStore::open(&config_for(&path)).await.err().unwrap();
    assert!(
        matches!(&error, StoreError::NotADatabase { path: error_path } if *error_path == path),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("is not a SQLite database"), "{message}");
    assert_eq!(
        fs::read(&path).unwrap(),
        garbage,
        "the file must not be modified"
    );
}

#[tokio::test]
async fn foreign_sqlite_database_is_refused_untouched() {
    let (_temp_dir, path) = temp_database();
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
    }
    let before = fs::read(&path).unwrap();
    let error = SqliteStore::open(&config_for(&path)).await.err().unwrap();
    assert!(
        matches!(
            error,
            StoreError::ForeignDatabase {
                application_id: 0,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("another application"), "{error}");
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "the file must not be modified"
    );

    // An empty database that another application already claimed is refused too.
    let (_other_dir, claimed) = temp_database();
    {
        let connection = rusqlite::Connection::open(&claimed).unwrap();
        connection
            .pragma_update(None, "application_id", 42)
            .unwrap();
    }
    let error = SqliteStore::open(&config_for(&claimed))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            StoreError::ForeignDatabase {
                application_id: 42,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn newer_schema_version_is_refused() {
    let (_temp_dir, path) = temp_database();
    write_acknowledged_data(&path).await;
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute(
                "INSERT INTO schema_version (version, applied_at_unix_ms) VALUES (999, 0)",
                [],
            )
            .unwrap();
    }
    let error = SqliteStore::open(&config_for(&path)).await.err().unwrap();
    assert!(
        matches!(
            error,
            StoreError::SchemaTooNew {
                found: 999,
                supported: 3,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("upgrade lanmesh"), "{error}");
}

#[tokio::test]
async fn corrupt_pages_are_reported_as_corrupt() {
    let (_temp_dir, path) = temp_database();
    write_acknowledged_data(&path).await;
    // Keep the header page, overwrite every later page with garbage.
    let mut bytes = fs::read(&path).unwrap();
    assert!(
        bytes.len() > 4096,
        "the closed database was checkpointed into the file"
    );
    let garbage = pseudo_random_bytes(bytes.len() - 4096, 7);
    bytes[4096..].copy_from_slice(&garbage);
    fs::write(&path, &bytes).unwrap();

    let error = match SqliteStore::open(&config_for(&path)).await {
        Err(error) => error,
        Ok(store) => store.load(&key()).await.unwrap_err(),
    };
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("is corrupt"), "{error}");
}

#[tokio::test]
async fn unusable_path_is_a_typed_error() {
    let (temp_dir, _path) = temp_database();
    let file = temp_dir.path().join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    let error = SqliteStore::open(&config_for(&file.join("lanmesh.db")))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, StoreError::CreateDirectory { .. }),
        "{error:?}"
    );
    let error = SqliteStore::open(&config_for(temp_dir.path()))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, StoreError::InvalidConfig(_))
            && error.to_string().contains("storage.sqlite.path"),
        "{error:?}"
    );
}

#[tokio::test]
async fn size_cap_reached_is_storage_full_and_acknowledged_data_survives() {
    let (_temp_dir, path) = temp_database();
    let config = SqliteConfig {
        max_size_bytes: Some(64 * 1024),
        ..config_for(&path)
    };
    let store = SqliteStore::open(&config).await.unwrap();
    store
        .compare_and_set(&key(), None, saved_state())
        .await
        .unwrap();
    let segment = "10.0.0.0/24";
    let mut n_acknowledged_batches = 0;
    let error = loop {
        match PresenceSampleStore::append(&store, samples(segment, n_acknowledged_batches, 20))
            .await
        {
            Ok(()) => n_acknowledged_batches += 1,
            Err(error) => break error,
        }
        assert!(
            n_acknowledged_batches < 10_000,
            "the size cap never triggered"
        );
    };
    assert!(matches!(error, StoreError::StorageFull { .. }), "{error:?}");
    assert!(error.to_string().contains("is full"), "{error}");
    assert!(n_acknowledged_batches > 0);

    // Still full for the next write, still readable, nothing acknowledged lost.
    let error = PresenceSampleStore::append(&store, samples(segment, n_acknowledged_batches, 20))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::StorageFull { .. }), "{error:?}");
    let read = store
        .samples_in_window(segment, BASE_UNIX_MS, BASE_UNIX_MS + 100_000_000)
        .await
        .unwrap();
    assert_eq!(read.len() as i64, n_acknowledged_batches * 20);
    assert_eq!(store.load(&key()).await.unwrap(), Some(saved_state()));
    store.close().await;
    assert_eq!(integrity_check(&path).unwrap(), vec!["ok".to_owned()]);

    // Without the cap the same file accepts writes again.
    let store = SqliteStore::open(&config_for(&path)).await.unwrap();
    PresenceSampleStore::append(&store, samples(segment, n_acknowledged_batches, 20))
        .await
        .unwrap();
    store.close().await;
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

const READ_ONLY_TEST: &str = "bad_input::read_only_directory_is_a_typed_error_and_data_survives";
const READ_ONLY_ROLE: &str = "read-only-opener";

/// Opens the existing database and a new one in the (read-only) directory; both must fail
/// with a typed error naming the file.
async fn assert_read_only_open_fails(existing: &Path) {
    for path in [existing.to_path_buf(), existing.with_file_name("new.db")] {
        let error = SqliteStore::open(&config_for(&path))
            .await
            .err()
            .unwrap_or_else(|| {
                panic!(
                    "opening {} in a read-only directory succeeded",
                    path.display()
                )
            });
        assert!(
            matches!(
                error,
                StoreError::CannotOpen { .. } | StoreError::ReadOnly { .. }
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
        eprintln!("read-only directory: {error}");
    }
}

#[test]
fn read_only_directory_is_a_typed_error_and_data_survives() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if let Some(database) = child_role(READ_ONLY_ROLE) {
        runtime.block_on(assert_read_only_open_fails(&database));
        println!("read-only child ok");
        return;
    }
    let (temp_dir, path) = temp_database();
    runtime.block_on(write_acknowledged_data(&path));
    let directory = temp_dir.path().to_path_buf();
    let files: Vec<PathBuf> = fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    for file in &files {
        set_mode(file, 0o444);
    }
    set_mode(&directory, 0o555);

    if running_as_root() {
        // Root ignores permissions: check as an unprivileged user in a child process.
        let mut child = match Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(std::env::current_exe().unwrap())
            .args(exact_test_args(READ_ONLY_TEST))
            .env(CHILD_ROLE_VAR, READ_ONLY_ROLE)
            .env(CHILD_DB_VAR, &path)
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                set_mode(&directory, 0o755);
                eprintln!(
                    "skipped: running as root and setpriv is unavailable ({error}), so a \
                     read-only directory cannot be simulated"
                );
                return;
            }
        };
        let child_ok = child_printed(&mut child, "read-only child ok", Duration::from_secs(60));
        let status = child.wait().unwrap();
        assert!(
            status.success() && child_ok,
            "read-only child failed: {status:?}"
        );
    } else {
        runtime.block_on(assert_read_only_open_fails(&path));
    }

    set_mode(&directory, 0o755);
    for file in &files {
        set_mode(file, 0o644);
    }
    runtime.block_on(assert_acknowledged_data(&path));
}

const FULL_DISK_TEST: &str =
    "bad_input::full_filesystem_is_storage_full_and_acknowledged_data_survives";
const FULL_DISK_ROLE: &str = "full-disk-writer";
/// Exit status of the mount wrapper when the tmpfs cannot be mounted.
const MOUNT_UNAVAILABLE: i32 = 77;

/// Child role: fills the database on a 1 MiB tmpfs until the disk is full.
async fn fill_small_filesystem(path: &Path) {
    let store = SqliteStore::open(&config_for(path)).await.unwrap();
    store
        .compare_and_set(&key(), None, saved_state())
        .await
        .unwrap();
    let segment = "10.0.0.0/24";
    let mut n_acknowledged_batches = 0;
    let error = loop {
        match PresenceSampleStore::append(&store, samples(segment, n_acknowledged_batches, 50))
            .await
        {
            Ok(()) => n_acknowledged_batches += 1,
            Err(error) => break error,
        }
        assert!(n_acknowledged_batches < 100_000, "the disk never filled");
    };
    eprintln!("full disk after {n_acknowledged_batches} batches: {error}");
    assert!(matches!(error, StoreError::StorageFull { .. }), "{error:?}");
    let read = store
        .samples_in_window(segment, BASE_UNIX_MS, BASE_UNIX_MS + 100_000_000)
        .await
        .unwrap();
    assert_eq!(read.len() as i64, n_acknowledged_batches * 50);
    assert_eq!(store.load(&key()).await.unwrap(), Some(saved_state()));
    store.close().await;
    assert_eq!(integrity_check(path).unwrap(), vec!["ok".to_owned()]);
}

#[test]
fn full_filesystem_is_storage_full_and_acknowledged_data_survives() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if let Some(database) = child_role(FULL_DISK_ROLE) {
        runtime.block_on(fill_small_filesystem(&database));
        println!("full-disk child ok");
        return;
    }
    let (temp_dir, _path) = temp_database();
    let mount_point = temp_dir.path().join("small-disk");
    fs::create_dir(&mount_point).unwrap();
    let database = mount_point.join("lanmesh.db");
    // A private mount namespace: the 1 MiB tmpfs disappears with the child.
    let wrapper = format!(
        "mount -t tmpfs -o size=1m lanmesh-test \"$0\" || exit {MOUNT_UNAVAILABLE}; exec \"$@\""
    );
    let spawned = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c", &wrapper])
        .arg(&mount_point)
        .arg(std::env::current_exe().unwrap())
        .args(exact_test_args(FULL_DISK_TEST))
        .env(CHILD_ROLE_VAR, FULL_DISK_ROLE)
        .env(CHILD_DB_VAR, &database)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            eprintln!(
                "skipped: unshare is unavailable ({error}); the size-cap test covers a full database"
            );
            return;
        }
    };
    let child_ok = child_printed(&mut child, "full-disk child ok", Duration::from_secs(120));
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && !child_ok {
        if output.status.code() == Some(MOUNT_UNAVAILABLE)
            || stderr.contains("unshare failed")
            || stderr.contains("Operation not permitted")
        {
            eprintln!(
                "skipped: cannot mount a small tmpfs here (needs CAP_SYS_ADMIN): {}; the \
                 size-cap test covers a full database",
                stderr.trim()
            );
            return;
        }
        panic!("full-disk child failed: {:?}\n{stderr}", output.status);
    }
    eprint!("{stderr}");
    assert!(child_ok, "full-disk child did not confirm");
}

/// Reads the child's output until it exits; whether it printed a line ending with `marker`.
fn child_printed(child: &mut std::process::Child, marker: &str, timeout: Duration) -> bool {
    let lines = ChildLines::start(child, timeout);
    let mut printed = false;
    loop {
        match lines.next() {
            NextLine::Line(line) => printed |= line.ends_with(marker),
            NextLine::End => return printed,
            NextLine::TimedOut => {
                panic!("child did not finish within {timeout:?}, awaiting {marker:?}")
            }
        }
    }
}
