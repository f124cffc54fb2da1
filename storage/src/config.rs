//! Storage configuration: the `storage` section of the node's config file, and its validation.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::ConfigError;

/// The `storage` section of the node configuration. Without a `scylla` subsection the node uses
/// the embedded SQLite database; with one it uses ScyllaDB.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `storage.sqlite`: the embedded database (used when `scylla` is absent).
    pub sqlite: SqliteConfig,
    /// `storage.scylla`: selects ScyllaDB when present.
    pub scylla: Option<ScyllaConfig>,
}

/// Which backend a valid configuration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The embedded SQLite file.
    Sqlite,
    /// A ScyllaDB cluster.
    Scylla,
}

/// `storage.sqlite`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// `storage.sqlite.path`: the database file; its directory is created if missing. Several
    /// nodes on one machine may share one file.
    pub path: PathBuf,
    /// `storage.sqlite.busy_timeout_ms`: how long a write waits for another process holding the
    /// database lock before failing.
    pub busy_timeout_ms: u32,
    /// `storage.sqlite.max_size_bytes`: optional cap on the database size; writes that would
    /// grow it further fail with a "full" error instead of filling the disk.
    pub max_size_bytes: Option<u64>,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data/lanmesh.db"),
            busy_timeout_ms: 5000,
            max_size_bytes: None,
        }
    }
}

/// `storage.scylla`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// `storage.scylla.nodes`: contact points, `host:port` (port 9042 by default).
    pub nodes: Vec<String>,
    /// `storage.scylla.keyspace`: keyspace holding lanmesh's tables.
    pub keyspace: String,
    /// `storage.scylla.replication_factor`: replicas per data center when the schema is applied
    /// (`NetworkTopologyStrategy`).
    pub replication_factor: u32,
    /// `storage.scylla.apply_schema`: create the keyspace and tables at start if missing.
    pub apply_schema: bool,
    /// `storage.scylla.sample_ttl_days`: how long presence samples are kept.
    pub sample_ttl_days: u32,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            keyspace: "lanmesh".to_owned(),
            replication_factor: 3,
            apply_schema: false,
            sample_ttl_days: 35,
        }
    }
}

/// Longest keyspace name ScyllaDB accepts.
const MAX_KEYSPACE_LEN: usize = 48;
/// Longest sample retention accepted (CQL caps TTLs at 20 years).
const MAX_SAMPLE_TTL_DAYS: u32 = 7300;
/// Smallest accepted database size cap.
const MIN_MAX_SIZE_BYTES: u64 = 1 << 16;

impl StorageConfig {
    /// Checks every value and names the first unusable key; call before [`crate::open`]
    /// (which calls it too).
    pub fn validate(&self) -> Result<BackendKind, ConfigError> {
        self.sqlite.validate()?;
        match &self.scylla {
            Some(scylla) => {
                scylla.validate()?;
                Ok(BackendKind::Scylla)
            }
            None => Ok(BackendKind::Sqlite),
        }
    }
}

impl SqliteConfig {
    /// Checks the `storage.sqlite` values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::InvalidValue {
                key: "storage.sqlite.path",
                value: "\"\"".to_owned(),
                expected: "a file path such as ./data/lanmesh.db",
            });
        }
        if self.path.is_dir() {
            return Err(ConfigError::InvalidValue {
                key: "storage.sqlite.path",
                value: format!("{:?}", self.path),
                expected: "a file path, not a directory (e.g. ./data/lanmesh.db)",
            });
        }
        if self.busy_timeout_ms == 0 {
            return Err(ConfigError::InvalidValue {
                key: "storage.sqlite.busy_timeout_ms",
                value: "0".to_owned(),
                expected: "a positive number of milliseconds (default 5000); 0 makes writers \
                           sharing the file fail at once",
            });
        }
        if let Some(max_size_bytes) = self.max_size_bytes
            && max_size_bytes < MIN_MAX_SIZE_BYTES
        {
            return Err(ConfigError::InvalidValue {
                key: "storage.sqlite.max_size_bytes",
                value: max_size_bytes.to_string(),
                expected: "at least 65536, or no value for no cap",
            });
        }
        Ok(())
    }
}

impl ScyllaConfig {
    /// Checks the `storage.scylla` values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes.is_empty() {
            return Err(ConfigError::InvalidValue {
                key: "storage.scylla.nodes",
                value: "[]".to_owned(),
                expected: "at least one host:port (e.g. [\"10.0.0.5:9042\"]), or no \
                           storage.scylla section to use SQLite",
            });
        }
        for node in &self.nodes {
            if node.trim().is_empty() || node.contains(char::is_whitespace) || node.contains('/') {
                return Err(ConfigError::InvalidValue {
                    key: "storage.scylla.nodes",
                    value: format!("{node:?}"),
                    expected: "host:port entries without spaces or scheme, e.g. 10.0.0.5:9042",
                });
            }
        }
        if !is_valid_keyspace_name(&self.keyspace) {
            return Err(ConfigError::InvalidValue {
                key: "storage.scylla.keyspace",
                value: format!("{:?}", self.keyspace),
                expected: "1 to 48 letters, digits or underscores, starting with a letter",
            });
        }
        if self.replication_factor == 0 {
            return Err(ConfigError::InvalidValue {
                key: "storage.scylla.replication_factor",
                value: "0".to_owned(),
                expected: "at least 1 (3 for production)",
            });
        }
        if self.sample_ttl_days == 0 || self.sample_ttl_days > MAX_SAMPLE_TTL_DAYS {
            return Err(ConfigError::InvalidValue {
                key: "storage.scylla.sample_ttl_days",
                value: self.sample_ttl_days.to_string(),
                expected: "between 1 and 7300 days",
            });
        }
        Ok(())
    }
}

/// Whether `name` is a keyspace name we accept (unquoted CQL identifier, ScyllaDB length cap).
pub(crate) fn is_valid_keyspace_name(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_with_letter = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic());
    starts_with_letter
        && name.len() <= MAX_KEYSPACE_LEN
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scylla(edit: impl FnOnce(&mut ScyllaConfig)) -> StorageConfig {
        let mut scylla = ScyllaConfig {
            nodes: vec!["127.0.0.1:9042".to_owned()],
            ..ScyllaConfig::default()
        };
        edit(&mut scylla);
        StorageConfig {
            scylla: Some(scylla),
            ..StorageConfig::default()
        }
    }

    fn check_rejected(config: &StorageConfig, expected_key: &str) {
        match config.validate() {
            Err(ConfigError::InvalidValue { key, .. }) => assert_eq!(key, expected_key),
            Ok(kind) => panic!("expected {expected_key} to be rejected, got {kind:?}"),
        }
    }

    #[test]
    fn defaults_select_sqlite_under_data() {
        let config = StorageConfig::default();
        assert_eq!(config.validate(), Ok(BackendKind::Sqlite));
        assert_eq!(config.sqlite.path, PathBuf::from("./data/lanmesh.db"));
        assert_eq!(config.sqlite.busy_timeout_ms, 5000);
    }

    #[test]
    fn scylla_section_with_nodes_selects_scylla() {
        assert_eq!(scylla(|_| {}).validate(), Ok(BackendKind::Scylla));
    }

    #[test]
    fn unusable_values_name_their_key() {
        check_rejected(&scylla(|s| s.nodes.clear()), "storage.scylla.nodes");
        check_rejected(
            &scylla(|s| s.nodes = vec!["scylla://x:9042".to_owned()]),
            "storage.scylla.nodes",
        );
        check_rejected(
            &scylla(|s| s.nodes = vec![" ".to_owned()]),
            "storage.scylla.nodes",
        );
        check_rejected(
            &scylla(|s| s.keyspace = "1abc".to_owned()),
            "storage.scylla.keyspace",
        );
        check_rejected(
            &scylla(|s| s.keyspace = "a".repeat(49)),
            "storage.scylla.keyspace",
        );
        check_rejected(
            &scylla(|s| s.keyspace = "drop;table".to_owned()),
            "storage.scylla.keyspace",
        );
        check_rejected(
            &scylla(|s| s.replication_factor = 0),
            "storage.scylla.replication_factor",
        );
        check_rejected(
            &scylla(|s| s.sample_ttl_days = 0),
            "storage.scylla.sample_ttl_days",
        );
        let mut config = StorageConfig::default();
        config.sqlite.busy_timeout_ms = 0;
        check_rejected(&config, "storage.sqlite.busy_timeout_ms");
        let mut config = StorageConfig::default();
        config.sqlite.path = PathBuf::new();
        check_rejected(&config, "storage.sqlite.path");
        let mut config = StorageConfig::default();
        config.sqlite.max_size_bytes = Some(1024);
        check_rejected(&config, "storage.sqlite.max_size_bytes");
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        let empty: StorageConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, StorageConfig::default());

        let config: StorageConfig = serde_json::from_str(
            r#"{"sqlite": {"path": "/var/lib/lanmesh/db.sqlite"},
                "scylla": {"nodes": ["10.0.0.5:9042"], "apply_schema": true}}"#,
        )
        .unwrap();
        assert_eq!(
            config.sqlite.path,
            PathBuf::from("/var/lib/lanmesh/db.sqlite")
        );
        assert_eq!(config.sqlite.busy_timeout_ms, 5000);
        let scylla = config.scylla.clone().unwrap();
        assert_eq!(scylla.nodes, vec!["10.0.0.5:9042".to_owned()]);
        assert_eq!(scylla.keyspace, "lanmesh");
        assert_eq!(scylla.replication_factor, 3);
        assert!(scylla.apply_schema);
        assert_eq!(config.validate(), Ok(BackendKind::Scylla));

        let error = serde_json::from_str::<StorageConfig>(r#"{"sqlite": {"pth": "x"}}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("pth"), "{error}");
        let error = serde_json::from_str::<StorageConfig>(r#"{"scylla": {"node": []}}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("node"), "{error}");
    }

    #[test]
    fn error_message_names_key_and_advice() {
        let error = scylla(|s| s.nodes.clear()).validate().unwrap_err();
        let message = error.to_string();
        assert!(message.contains("storage.scylla.nodes"), "{message}");
        assert!(message.contains("host:port"), "{message}");
    }
}
