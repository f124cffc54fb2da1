//! Opening fresh stores for a test: a new SQLite file per test, or a new ScyllaDB keyspace.

use std::path::PathBuf;
use std::sync::Arc;

use lanmesh_storage::scylladb::ScyllaStore;
use lanmesh_storage::{BackendKind, ScyllaConfig, SqliteConfig, StorageConfig, Stores};
use tempfile::TempDir;

/// Environment variable naming ScyllaDB contact points (`host:port[,host:port...]`).
pub const SCYLLA_URI_VAR: &str = "LANMESH_TEST_SCYLLA_URI";
/// Environment variable that turns a missing ScyllaDB into a test failure (for CI).
pub const REQUIRE_SCYLLA_VAR: &str = "LANMESH_TEST_REQUIRE_SCYLLA";

/// Stores under test plus whatever must live as long as they do.
pub struct Harness {
    pub stores: Stores,
    cleanup: Cleanup,
}

/// What to remove after a test that passed.
enum Cleanup {
    /// The temporary directory holding the SQLite file (removed on drop).
    TempDir(#[allow(dead_code, reason = "held for its drop")] TempDir),
    /// The test's keyspace.
    ScyllaKeyspace {
        store: Arc<ScyllaStore>,
        keyspace: String,
    },
}

impl Harness {
    /// Removes what the test created (a failed test keeps it for inspection).
    pub async fn cleanup(self) {
        match self.cleanup {
            Cleanup::TempDir(_) => {}
            Cleanup::ScyllaKeyspace { store, keyspace } => {
                store
                    .session()
                    .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
                    .await
                    .expect("drop test keyspace");
            }
        }
    }
}

/// A temporary directory and the database path inside it.
pub fn temp_database() -> (TempDir, PathBuf) {
    let temp_dir = tempfile::tempdir().expect("create temp dir");
    let path = temp_dir.path().join("lanmesh.db");
    (temp_dir, path)
}

/// SQLite configuration for `path` with the defaults otherwise.
pub fn sqlite_config(path: PathBuf) -> StorageConfig {
    StorageConfig {
        sqlite: SqliteConfig {
            path,
            ..SqliteConfig::default()
        },
        scylla: None,
    }
}

/// Fresh SQLite stores on a new file in a new temporary directory.
pub async fn open_sqlite(_test_name: &str) -> Option<Harness> {
    let (temp_dir, path) = temp_database();
    let stores = lanmesh_storage::open(&sqlite_config(path))
        .await
        .expect("open sqlite stores");
    Some(Harness {
        stores,
        cleanup: Cleanup::TempDir(temp_dir),
    })
}

/// Fresh ScyllaDB stores in a new keyspace, or `None` after printing why the test is skipped.
pub async fn open_scylla(test_name: &str) -> Option<Harness> {
    let uri = match std::env::var(SCYLLA_URI_VAR) {
        Ok(uri) if !uri.trim().is_empty() => uri,
        _ => {
            let reason = format!(
                "skipped: {SCYLLA_URI_VAR} not set (e.g. 127.0.0.1:9042), so the scylladb \
                 conformance case {test_name} cannot run"
            );
            if std::env::var(REQUIRE_SCYLLA_VAR).is_ok_and(|value| value == "1") {
                panic!("{reason}, and {REQUIRE_SCYLLA_VAR}=1 requires it");
            }
            eprintln!("{reason}");
            return None;
        }
    };
    let nodes = uri
        .split(',')
        .map(|node| node.trim().trim_start_matches("scylla://").to_owned())
        .filter(|node| !node.is_empty())
        .collect();
    let keyspace = format!("lmt_{}", uuid::Uuid::new_v4().simple());
    let config = ScyllaConfig {
        nodes,
        keyspace: keyspace.clone(),
        replication_factor: 1,
        apply_schema: true,
        ..ScyllaConfig::default()
    };
    let store = Arc::new(
        ScyllaStore::open(&config)
            .await
            .expect("open scylladb stores"),
    );
    Some(Harness {
        stores: Stores::from_backend(BackendKind::Scylla, Arc::clone(&store)),
        cleanup: Cleanup::ScyllaKeyspace { store, keyspace },
    })
}
